#!/usr/bin/env python3
"""Migrate the user_files collection: ``python migrate.py up`` (see ``--help`` and the README)."""

from userfiles_db.cli import main

if __name__ == "__main__":
    main()
