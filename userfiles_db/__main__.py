"""``python -m userfiles_db sweep ...``: the maintenance commands."""

from userfiles_db.cli import tools_main

tools_main()
