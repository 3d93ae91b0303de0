"""The declared state of the ``user_files`` collection, as data.

Each ``<collection>.v<N>.yaml`` file is one published schema version. A published version is never
edited: migrations pin "schema version N", so a change to the schema adds ``v<N+1>`` instead.
This directory holds no code that talks to a server; ``userfiles_db.schema`` loads these files and
the migration steps apply them. Installed, the directory is the package ``userfiles_db.schemas``.
"""
