"""The sweep against a plain model of its rule, as a hypothesis state machine on the real server.

The rule: a sweep removes exactly the regular files under the root that no live record claims
and that are past the grace period; it reports (and, when asked, deletes) the live records whose
file does not exist; it never touches symlinks, files outside the root, or records outside it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from pymongo.database import Database

from userfiles_db.clock import UTC
from userfiles_db.disk import SweepRefused, sweep

USERS = st.sampled_from(["1", "2", "3"])
NAMES = st.sampled_from([f"f{n}.csv" for n in range(6)])


def later() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=2)


class SweepMachine(RuleBasedStateMachine):
    # (database, scratch directory), set by the test on a subclass. A tuple: hypothesis looks
    # for rules in class attributes, and a Database answers every attribute with a collection.
    context: tuple[Database[Any], Path]

    def __init__(self) -> None:
        super().__init__()
        self.db = db = self.context[0]
        self.coll = db["user_files"]
        self.coll.delete_many({})
        self.base = Path(tempfile.mkdtemp(dir=self.context[1]))
        self.root = self.base / "user_files"
        self.outside = self.base / "outside"
        self.root.mkdir()
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("secret")
        self.files: dict[str, bool] = {}  # relative path -> young
        self.links: set[str] = set()
        self.records: dict[str, tuple[str, bool]] = {}  # file_id -> (file_path, live)
        self.next_id = 0

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def _claimed(self) -> set[str]:
        prefix = str(self.root) + os.sep
        return {p[len(prefix) :] for p, live in self.records.values() if live and p.startswith(prefix)}

    @rule(user=USERS, name=NAMES, young=st.booleans())
    def write_file(self, user: str, name: str, young: bool) -> None:
        relative = f"{user}/{name}"
        if relative in self.links:
            return
        path = self.root / relative
        path.parent.mkdir(exist_ok=True)
        path.write_text("data")
        if young:  # written at the moved clock's "now"
            stamp = dt.datetime.now(UTC).timestamp() + 3 * 3600
            os.utime(path, (stamp, stamp))
        self.files[relative] = young

    @rule(user=USERS, name=NAMES)
    def link_to_outside(self, user: str, name: str) -> None:
        relative = f"{user}/{name}"
        if relative in self.files or relative in self.links:
            return
        (self.root / user).mkdir(exist_ok=True)
        (self.root / relative).symlink_to(self.outside / "secret.txt")
        self.links.add(relative)

    @rule(user=USERS, name=NAMES, live=st.booleans(), where=st.sampled_from(["root", "outside", "dotdot"]))
    def save_record(self, user: str, name: str, live: bool, where: str) -> None:
        if where == "root":
            path = str(self.root / user / name)
        elif where == "outside":
            path = str(self.outside / "secret.txt")
        else:
            path = str(self.root / user / ".." / ".." / "outside" / "secret.txt")
        now = dt.datetime.now(UTC)
        file_id = f"{user}_{1700000000 + self.next_id}_{self.next_id:08x}"
        self.next_id += 1
        self.coll.insert_one({
            "file_id": file_id, "user_id": int(user), "filename": name, "file_type": "csv",
            "file_path": path, "size": 4, "created_at": now,
            "expires_at": now + dt.timedelta(hours=48 if live else -1),
        })  # fmt: skip
        self.records[file_id] = (os.path.normpath(path), live)

    @rule(data=st.data())
    def delete_record(self, data: st.DataObject) -> None:
        if self.records:
            file_id = data.draw(st.sampled_from(sorted(self.records)))
            self.coll.delete_one({"file_id": file_id})
            del self.records[file_id]

    @rule(remove_missing=st.booleans(), dry_run=st.booleans())
    def run_sweep(self, remove_missing: bool, dry_run: bool) -> None:
        claimed = self._claimed()
        expected_removed = {r for r, young in self.files.items() if r not in claimed and not young}
        prefix = str(self.root) + os.sep
        expected_missing = {
            file_id
            for file_id, (path, live) in self.records.items()
            if live and path.startswith(prefix) and path[len(prefix) :] not in self.files
            and path[len(prefix) :] not in self.links
        }  # fmt: skip
        live = [path for path, is_live in self.records.values() if is_live]
        if live and not any(path.startswith(prefix) for path in live):
            with pytest.raises(SweepRefused, match="none of the"):  # looks like a wrong root
                sweep(self.db, self.root, clock=later, max_remove="100%")
            return
        report = sweep(
            self.db, self.root, clock=later, max_remove="100%", dry_run=dry_run,
            remove_missing_records=remove_missing,
        )  # fmt: skip
        assert {os.path.relpath(p, self.root) for p in report.removed_files} == expected_removed
        assert {r["file_id"] for r in report.missing_files} == expected_missing
        assert report.errors == []
        assert sorted(os.path.relpath(p, self.root) for p in report.skipped_symlinks) == sorted(self.links)
        if dry_run:
            return
        for relative in expected_removed:
            del self.files[relative]
        if remove_missing:
            assert report.removed_records == len(expected_missing)
            for file_id in expected_missing:
                del self.records[file_id]

    @invariant()
    def disk_matches_the_model(self) -> None:
        on_disk = {
            str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() or p.is_symlink()
        }
        assert on_disk == set(self.files) | self.links
        assert (self.outside / "secret.txt").read_text() == "secret"
        # Expired records may go at any moment (the TTL monitor): only live ones are counted.
        live = sum(is_live for _, is_live in self.records.values())
        assert self.coll.count_documents({"expires_at": {"$gt": dt.datetime.now(UTC)}}) == live


def test_the_sweep_follows_its_model(real_user_files_db: Database[Any], tmp_path: Path) -> None:
    class Bound(SweepMachine):
        context = (real_user_files_db, tmp_path)

    run_state_machine_as_test(
        Bound,
        settings=settings(max_examples=25, stateful_step_count=20, deadline=None),
    )
