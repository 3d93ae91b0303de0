"""The user_files migrations. Each ``NNNN_slug.py`` is one step; ids are file stems.

Applied migrations are immutable (their checksums are recorded): change the schema with a new
migration. Installed, this directory is the package ``userfiles_db.bundled_migrations``.
"""
