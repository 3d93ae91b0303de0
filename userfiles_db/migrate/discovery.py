"""Finding, loading and checksumming migration scripts ``NNNN_slug.py``."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from userfiles_db.migrate.errors import ConfigError

FILE_NAME = re.compile(r"^(?P<number>[0-9]{4})_(?P<slug>[a-z0-9][a-z0-9_]*)\.py$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_]*$")
FLAGS = ("REVERSIBLE", "TRANSACTIONAL", "RESUMABLE")


@dataclass(frozen=True)
class Migration:
    """One migration script. Its id is the file stem, e.g. ``0001_create_user_files``."""

    id: str
    path: Path
    checksum: str
    module: ModuleType

    @property
    def title(self) -> str:
        """The first line of the docstring."""
        return (self.module.__doc__ or "").strip().splitlines()[0]

    @property
    def reversible(self) -> bool:
        return bool(getattr(self.module, "REVERSIBLE", True))

    @property
    def transactional(self) -> bool:
        return bool(getattr(self.module, "TRANSACTIONAL", False))

    def up(self, db: Any) -> None:
        self.module.up(db)

    def down(self, db: Any) -> None:
        self.module.down(db)


def checksum(text: str) -> str:
    """sha256 of the text with line endings and trailing white space normalised, so that a
    checkout with CRLF endings or an editor trimming spaces does not count as an edit."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _load(path: Path, text: str) -> ModuleType:
    """Run ``text`` (the file's content, as checksummed) as the module of ``path``: never a
    cached ``__pycache__`` copy, which Python reuses when an edit keeps the size and the mtime
    second, and never a second read of a file that changed since its checksum was taken."""
    name = f"userfiles_db_migration_{path.stem}_{checksum(str(path.resolve()))[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[name] = module  # dataclasses and the like look their module up while it runs
        exec(compile(text, str(path), "exec", dont_inherit=True), module.__dict__)
    except (Exception, SystemExit) as exc:  # a script calling sys.exit() on import included
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    sys.modules.pop(name, None)  # loaded fresh every time: never a stale copy of an edited file
    return module


def discover(directory: str | Path) -> list[Migration]:
    """The migrations in ``directory``, ordered by id.

    Raises ``ConfigError`` for a missing directory, a misnamed ``.py`` file, a duplicate number,
    or a script without a docstring, ``up(db)`` or ``down(db)``.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"migrations directory {str(folder)!r} does not exist")
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        match = FILE_NAME.match(path.name)
        if not match:
            raise ConfigError(f"{path}: migration files are named NNNN_slug.py (lower case)")
        if match["number"] in numbers:
            raise ConfigError(f"{path}: number {match['number']} is also used by {numbers[match['number']]}")
        numbers[match["number"]] = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
        module = _load(path, text)
        if not (module.__doc__ or "").strip():
            raise ConfigError(f"{path}: a migration starts with a docstring saying what it does")
        for function in ("up", "down"):
            if not callable(getattr(module, function, None)):
                raise ConfigError(f"{path}: defines no {function}(db) function")
        for flag in FLAGS:  # RESUMABLE = "False" would be truthy: resumed, re-run by itself
            value = getattr(module, flag, None)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{path}: {flag} must be True or False, got {value!r}")
        migrations.append(Migration(path.stem, path, checksum(text), module))
    return migrations


TEMPLATE = '''"""{title}

Migration {id}, created {created}.
"""

from __future__ import annotations

from typing import Any

from userfiles_db.migrate import context, current_session, steps  # noqa: F401

# Set to False if down() cannot undo up(); `down` then refuses unless forced.
REVERSIBLE = True
# Set to True to run the data writes and the changelog record in one transaction on replica sets
# (pass session=current_session() to every write). Schema steps always run outside it.
TRANSACTIONAL = False
# Set to True once up() is safe to run again after an interruption (idempotent, like the steps):
# the next `up` then resumes it by itself instead of exiting 6 for a person to look.
RESUMABLE = False


def up(db: Any) -> None:
    raise NotImplementedError("write the migration")


def down(db: Any) -> None:
    raise NotImplementedError("write the undo, or set REVERSIBLE = False")
'''


def new_migration(
    directory: str | Path, slug: str, created: str, render: Callable[[str], str] | None = None
) -> Path:
    """Create ``NNNN_slug.py`` numbered after the highest existing one: the template, or what
    ``render`` returns for its id (``new --autogenerate``)."""
    if not SLUG.match(slug):
        raise ConfigError(f"slug {slug!r}: use lower-case letters, digits and underscores")
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(m["number"]) for p in folder.glob("*.py") if (m := FILE_NAME.match(p.name))]
        number = max(numbers, default=0) + 1
        if number > 9999:  # 10000_x.py would not match NNNN_slug.py: every later command would fail
            raise ConfigError(f"no migration number is left after 9999 in {str(folder)!r}")
        stem = f"{number:04d}_{slug}"
        path = folder / f"{stem}.py"
        title = slug.replace("_", " ").capitalize() + "."
        text = render(stem) if render else TEMPLATE.format(title=title, id=stem, created=created)
        with path.open("x", encoding="utf-8") as file:  # never overwrite an existing migration
            file.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot create a migration in {str(folder)!r}: {exc.strerror or exc}") from None
    return path
