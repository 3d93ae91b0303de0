"""The real bot's calls on ``user_files``, as its code makes them (Coder-Vippro/ChatGPT-Discord-Bot).

``OldBot`` replays the bot as it is today: the queries, writes, fields read and string formatting
of ``src/database/db_handler.py``, ``src/utils/code_interpreter.py``, ``src/commands/file_commands.py``,
``src/commands/commands.py`` and ``src/module/message_handler.py`` (read in ../shared/bot-reference;
nothing is imported from there). ``NewBot`` is the same bot after the edits of
``docs/bot-integration.patch``: the same callers, whose bodies now call ``UserFilesMixin``.

Each method names the function it replays. What the user would see (``/files`` rows, the upload
message, the ``/reset`` message) is computed with the bot's own formatting code.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from userfiles_db.compat import UserFilesMixin


class OldBot:
    """The bot as it is today (no userfiles_db)."""

    version = "old"

    def __init__(self, db: Any, root: Path, *, expiration_hours: int = 48, max_files: int = 20) -> None:
        self.db = db  # DatabaseHandler.db: the Motor database chatgpt_discord_bot
        self.root = root  # USER_FILES_DIR
        self.expiration_hours = expiration_hours  # FILE_EXPIRATION_HOURS
        self.max_files = max_files  # MAX_FILES_PER_USER

    # -- db_handler.py -----------------------------------------------------------------------------

    async def startup(self) -> None:
        """DatabaseHandler.create_indexes (its user_files part), run at every start."""
        await self.db.user_files.create_index([("user_id", 1), ("expires_at", -1)])
        await self.db.user_files.create_index("file_id", unique=True)
        await self.db.user_files.create_index("expires_at")

    async def handler_get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """DatabaseHandler.get_user_files (errors swallowed, as the bot does)."""
        try:
            current_time = datetime.now().isoformat()
            files: list[dict[str, Any]] = await self.db.user_files.find(
                {"user_id": user_id, "$or": [{"expires_at": {"$gt": current_time}}, {"expires_at": None}]}
            ).to_list(length=1000)
            return files
        except Exception:
            return []

    # -- code_interpreter.py: FileManager ----------------------------------------------------------

    async def store_record(self, metadata: dict[str, Any], origin: str) -> None:
        """The writer line inside FileManager.save_file."""
        await self.db.user_files.update_one({"file_id": metadata["file_id"]}, {"$set": metadata}, upsert=True)

    async def save_file(
        self,
        user_id: int,
        file_data: bytes,
        filename: str,
        file_type: str | None = None,
        origin: str = "upload",
    ) -> dict[str, Any]:
        """FileManager.save_file: the file on disk first, then its record (uploads and generated
        files alike)."""
        try:
            file_id = f"{user_id}_{int(time.time())}_{uuid.uuid4().hex[:8]}"
            _, ext = os.path.splitext(filename)
            if not ext:
                ext = ".txt"
            user_dir = self.root / str(user_id)
            user_dir.mkdir(parents=True, exist_ok=True)
            file_path = user_dir / f"{file_id}{ext}"
            with open(file_path, "wb") as f:
                f.write(file_data)
            if self.expiration_hours == -1:
                expires_at = None
            else:
                expires_at = (datetime.now() + timedelta(hours=self.expiration_hours)).isoformat()
            metadata = {
                "file_id": file_id,
                "user_id": user_id,
                "filename": filename,
                "file_path": str(file_path),
                "file_size": len(file_data),
                "file_type": file_type or "csv",
                "uploaded_at": datetime.now().isoformat(),
                "expires_at": expires_at,
            }
            await self.store_record(metadata, origin)
            return {"success": True, "file_id": file_id, "file_path": str(file_path), "metadata": metadata}
        except Exception as e:
            return {"success": False, "error": str(e)}

    async def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """FileManager.get_file: the code interpreter's look-up by id."""
        try:
            query: dict[str, Any] = {"file_id": file_id}
            if user_id:
                query["user_id"] = user_id
            file_meta: dict[str, Any] | None = await self.db.user_files.find_one(query)
            if file_meta:
                expires_at = file_meta.get("expires_at")
                if expires_at and self.expiration_hours != -1:
                    expires_dt = datetime.fromisoformat(expires_at)
                    if datetime.now() > expires_dt:
                        return None
            return file_meta
        except Exception:
            return None

    # -- code_interpreter.py: module functions -----------------------------------------------------

    async def list_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """list_user_files (the second definition, the one /files gets)."""
        try:
            files: list[dict[str, Any]] = await self.db.user_files.find({"user_id": user_id}).to_list(
                length=None
            )
            for file in files:
                file.pop("_id", None)
            return files
        except Exception:
            return []

    async def get_file_metadata(self, file_id: str, user_id: int) -> dict[str, Any] | None:
        try:
            file_meta: dict[str, Any] | None = await self.db.user_files.find_one(
                {"file_id": file_id, "user_id": user_id}
            )
            if file_meta:
                file_meta.pop("_id", None)
                return file_meta
            return None
        except Exception:
            return None

    async def delete_file(self, file_id: str, user_id: int) -> dict[str, Any]:
        """delete_file: the /files delete button, and the old limit's eviction."""
        try:
            file_meta = await self.get_file_metadata(file_id, user_id)
            if not file_meta:
                return {"success": False, "error": "File not found or you don't have permission to delete it"}
            file_path = Path(file_meta["file_path"])
            if file_path.exists():
                file_path.unlink()
            result = await self.db.user_files.delete_one({"file_id": file_id, "user_id": user_id})
            if result.deleted_count > 0:
                return {"success": True, "message": f"Deleted file: {file_meta.get('filename', file_id)}"}
            return {"success": False, "error": "File not found in database"}
        except Exception as e:
            return {"success": False, "error": str(e)}

    async def delete_all_user_files(self, user_id: int) -> dict[str, Any]:
        """delete_all_user_files: /reset."""
        try:
            files = await self.list_user_files(user_id)
            if not files:
                return {"success": True, "deleted_count": 0, "message": "No files to delete"}
            deleted_count = 0
            for file_meta in files:
                file_path = Path(file_meta["file_path"])
                if file_path.exists():
                    file_path.unlink()
                deleted_count += 1
            await self.db.user_files.delete_many({"user_id": user_id})
            return {"success": True, "deleted_count": deleted_count, "failed_count": 0}
        except Exception as e:
            return {"success": False, "error": str(e), "deleted_count": 0}

    async def load_file(self, file_id: str, user_id: int) -> dict[str, Any]:
        """load_file: reads the record's fields and the file."""
        try:
            file_meta = await self.get_file(file_id, user_id)
            if not file_meta:
                return {"success": False, "error": "File not found or expired"}
            data = Path(file_meta["file_path"]).read_bytes()
            return {
                "success": True,
                "filename": file_meta["filename"],
                "file_size": file_meta["file_size"],
                "data": data,
                "uploaded_at": file_meta["uploaded_at"],
                "expires_at": file_meta["expires_at"],
            }
        except Exception as e:
            return {"success": False, "error": str(e)}

    # -- message_handler.py ------------------------------------------------------------------------

    async def enforce_limit(self, user_id: int) -> None:
        """The limit check at the top of _download_and_save_data_file."""
        user_files = await self.handler_get_user_files(user_id)
        if len(user_files) >= self.max_files:
            oldest_file = min(user_files, key=lambda f: f.get("uploaded_at", datetime.min))
            await self.delete_file(oldest_file["file_id"], user_id)

    async def upload(self, user_id: int, data: bytes, filename: str) -> dict[str, Any]:
        """_download_and_save_data_file, then the count shown in the upload message."""
        try:
            await self.enforce_limit(user_id)
            result = await self.save_file(user_id, data, filename, "csv")
            if not result["success"]:
                raise Exception(result.get("error", "Upload failed"))
            count = await self.upload_message_count(user_id)
            return {"success": True, "file_id": result["file_id"], "count": count}
        except Exception as e:
            return {"success": False, "error": f"Error uploading data file: {e}"}

    async def upload_message_count(self, user_id: int) -> int:
        """The "Your Files: N/MAX" line of _handle_data_file."""
        return len(await self.handler_get_user_files(user_id))

    async def generated_file(self, user_id: int, data: bytes, filename: str) -> dict[str, Any]:
        """A chart saved by the code interpreter (CodeExecutor.execute_code)."""
        return await self.save_file(user_id, data, filename, "image", origin="generated")

    async def code_interpreter_paths(self, user_id: int) -> dict[str, str]:
        """_execute_python_code's file list, then CodeExecutor's get_file per id."""
        try:
            db_files = await self.handler_get_user_files(user_id)
            user_files = [f["file_id"] for f in db_files if "file_id" in f]
        except Exception:
            user_files = []
        paths = {}
        for file_id in user_files:
            file_meta = await self.get_file(file_id, user_id)
            if file_meta:
                paths[file_id] = file_meta["file_path"]
        return paths

    # -- commands ----------------------------------------------------------------------------------

    async def files_command(self, user_id: int) -> list[tuple[str, str, str, str]] | str:
        """/files (file_commands.py): (name, size, uploaded, expires) per row, or the message."""
        try:
            files = await self.list_user_files(user_id)
            if not files:
                return "You don't have any files uploaded yet."
            files.sort(key=lambda x: x.get("uploaded_at", ""), reverse=True)
            rows = []
            for file in files[:10]:
                filename = file.get("filename", "Unknown")
                file_size = file.get("file_size", 0)
                uploaded_at = file.get("uploaded_at", "")
                expires_at = file.get("expires_at", "")
                if file_size < 1024:
                    size_str = f"{file_size} B"
                elif file_size < 1024 * 1024:
                    size_str = f"{file_size / 1024:.1f} KB"
                else:
                    size_str = f"{file_size / (1024 * 1024):.1f} MB"
                try:
                    uploaded_dt = datetime.fromisoformat(uploaded_at)
                    uploaded_str = uploaded_dt.strftime("%Y-%m-%d %H:%M")
                    if self.expiration_hours == -1:
                        expires_str = "Never"
                    else:
                        expires_dt = datetime.fromisoformat(expires_at)
                        time_left = expires_dt - datetime.now()
                        hours_left = int(time_left.total_seconds() / 3600)
                        if hours_left < 0:
                            expires_str = "Expired"
                        elif hours_left < 1:
                            expires_str = f"{int(time_left.total_seconds() / 60)}m left"
                        else:
                            expires_str = f"{hours_left}h left"
                except Exception:
                    uploaded_str = "Unknown"
                    expires_str = "Unknown"
                rows.append((filename, size_str, uploaded_str, expires_str))
            return rows
        except Exception as e:
            return f"Error listing files: {e}"

    async def reset_command(self, user_id: int) -> str:
        """/reset (commands.py): the file part of its message."""
        result = await self.delete_all_user_files(user_id)
        if result.get("success") and result.get("deleted_count", 0) > 0:
            return f"Deleted {result['deleted_count']} file(s)."
        if result.get("success"):
            return "No files to delete."
        return f"Warning: Could not delete some files. {result.get('error', '')}"


class BotHandler(UserFilesMixin):
    """The bot's DatabaseHandler after the patch: it mixes in UserFilesMixin."""

    def __init__(self, db: Any, root: Path) -> None:
        self.db = db
        self.user_files_root = root
        self.init_user_files()


class NewBot(OldBot):
    """The same bot after docs/bot-integration.patch: the callers above, their bodies replaced."""

    version = "new"

    def __init__(self, db: Any, root: Path, **settings: Any) -> None:
        super().__init__(db, root, **settings)
        self.handler: BotHandler | None = None

    async def startup(self) -> None:
        # The three user_files create_index calls are gone; the handler checks its settings.
        self.handler = BotHandler(self.db, self.root)

    @property
    def h(self) -> BotHandler:
        assert self.handler is not None, "startup() first"
        return self.handler

    async def handler_get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self.h.get_user_files(user_id)

    async def store_record(self, metadata: dict[str, Any], origin: str) -> None:
        await self.h.add_user_file(metadata, origin=origin)

    async def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        return await self.h.get_user_file(file_id, user_id)

    async def list_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self.h.list_user_files(user_id)

    async def get_file_metadata(self, file_id: str, user_id: int) -> dict[str, Any] | None:
        return await self.h.get_user_file(file_id, user_id)

    async def delete_file(self, file_id: str, user_id: int) -> dict[str, Any]:
        return await self.h.remove_user_file(file_id, user_id)

    async def delete_all_user_files(self, user_id: int) -> dict[str, Any]:
        return await self.h.reset_user_files(user_id)

    async def enforce_limit(self, user_id: int) -> None:
        return None  # removed by the patch: every save holds the limit

    async def upload_message_count(self, user_id: int) -> int:
        return await self.h.count_user_files(user_id)
