# ruff: noqa: E501 - the edits quote the bot's lines verbatim
"""Regenerates docs/bot-integration.patch: the integration guide's edits to the bot's own files.

Run from the repository root with the bot's files beside it (../shared/bot-reference, or a checkout
of Coder-Vippro/ChatGPT-Discord-Bot at commit ee9d114 given as the first argument):

    python docs/make_bot_patch.py [BOT_DIR] > docs/bot-integration.patch

Each edit below names the text it replaces, which must occur exactly once.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

EDITS: dict[str, list[tuple[str, str]]] = {
    "src/database/db_handler.py": [
        (
            "import os\n\n# Configure DNS",
            "import os\n\nfrom userfiles_db.compat import UserFilesMixin\n\n# Configure DNS",
        ),
        ("class DatabaseHandler:\n", "class DatabaseHandler(UserFilesMixin):\n"),
        (
            "        self.reminders_collection = self.db.reminders\n",
            "        self.reminders_collection = self.db.reminders\n"
            "        # user_files: userfiles_db's store. Bad FILE_EXPIRATION_HOURS / MAX_FILES_PER_USER\n"
            "        # stop the bot here, at start-up, instead of failing every upload.\n"
            "        self.init_user_files()\n",
        ),
        (
            "        # User files indexes for code interpreter (48-hour expiration)\n"
            '        await self.db.user_files.create_index([("user_id", 1), ("expires_at", -1)])\n'
            '        await self.db.user_files.create_index("file_id", unique=True)\n'
            '        await self.db.user_files.create_index("expires_at")  # For cleanup queries\n',
            "        # user_files indexes (expires_at_1 is a TTL index) are created by `userfiles-migrate up`.\n",
        ),
        (
            "DELETE-FROM:    # User files management methods for code interpreter\n",
            "    async def close(self):",
        ),
    ],
    "src/utils/code_interpreter.py": [
        (
            "    async def save_file(self, user_id: int, file_data: bytes, filename: str, \n"
            "                       file_type: str = None) -> Dict[str, Any]:\n",
            "    async def save_file(self, user_id: int, file_data: bytes, filename: str, \n"
            '                       file_type: str = None, origin: str = "upload") -> Dict[str, Any]:\n',
        ),
        (
            "            if self.db:\n"
            "                # Use update_one with upsert to avoid duplicate key errors\n"
            "                await self.db.db.user_files.update_one(\n"
            '                    {"file_id": file_id},\n'
            '                    {"$set": metadata},\n'
            "                    upsert=True\n"
            "                )\n",
            "            if self.db:\n"
            "                # Saves the record and keeps the user within MAX_FILES_PER_USER (per origin:\n"
            "                # charts never evict uploads). Raises, after removing the file, if not saved.\n"
            "                await self.db.add_user_file(metadata, origin=origin)\n",
        ),
        (
            '            query = {"user_id": user_id}\n'
            "            if not include_expired and FILE_EXPIRATION_HOURS != -1:\n"
            "                # Only check expiration if files expire\n"
            '                query["expires_at"] = {"$gt": datetime.now().isoformat()}\n'
            "            files = await self.db.db.user_files.find(query).to_list(length=100)\n"
            "            return files\n",
            "            return await self.db.list_user_files(user_id)\n",
        ),
        (
            "        try:\n"
            '            query = {"file_id": file_id}\n'
            "            if user_id:\n"
            '                query["user_id"] = user_id\n'
            "            file_meta = await self.db.db.user_files.find_one(query)\n"
            "            if file_meta:\n"
            "                # Check expiration only if files expire (FILE_EXPIRATION_HOURS != -1)\n"
            "                expires_at = file_meta.get('expires_at')\n"
            "                if expires_at and FILE_EXPIRATION_HOURS != -1:\n"
            "                    expires_dt = datetime.fromisoformat(expires_at)\n"
            "                    if datetime.now() > expires_dt:\n"
            '                        logger.info(f"File {file_id} has expired")\n'
            "                        return None\n"
            "            return file_meta\n"
            "        except Exception as e:\n"
            '            logger.error(f"Error getting file: {e}")\n'
            "            return None\n",
            "        # Live records only, the owner's when user_id is given; raises if the database is down.\n"
            "        return await self.db.get_user_file(file_id, user_id)\n",
        ),
        (
            "        try:\n"
            "            file_meta = await self.get_file(file_id, user_id)\n"
            "            if not file_meta:\n"
            "                return False\n"
            "            file_path = Path(file_meta['file_path'])\n"
            "            if file_path.exists():\n"
            "                file_path.unlink()\n"
            "            if self.db:\n"
            '                await self.db.db.user_files.delete_one({"file_id": file_id})\n'
            '            logger.info(f"Deleted file {file_id}")\n'
            "            return True\n"
            "        except Exception as e:\n"
            '            logger.error(f"Error deleting file: {e}")\n'
            "            return False\n",
            "        if not self.db:\n"
            "            return False\n"
            "        # The record first, then its file (unless another live record uses the path).\n"
            "        result = await self.db.remove_user_file(file_id, user_id)\n"
            '        return result["success"]\n',
        ),
        (
            "            current_time = datetime.now().isoformat()\n"
            "            if self.db:\n"
            "                expired_files = await self.db.db.user_files.find({\n"
            '                    "expires_at": {"$lt": current_time}\n'
            "                }).to_list(length=1000)\n"
            "            else:\n"
            "                expired_files = []\n"
            "            \n"
            "            deleted_count = 0\n"
            "            for file_meta in expired_files:\n"
            "                file_path = Path(file_meta['file_path'])\n"
            "                if file_path.exists():\n"
            "                    try:\n"
            "                        file_path.unlink()\n"
            "                        deleted_count += 1\n"
            "                    except Exception as e:\n"
            '                        logger.warning(f"Failed to delete {file_path}: {e}")\n'
            "                if self.db:\n"
            "                    await self.db.db.user_files.delete_one({\"file_id\": file_meta['file_id']})\n",
            "            # The TTL index deletes expired records on the server; this is the fallback. Their\n"
            "            # files are removed by `python -m userfiles_db sweep` (see the deployment guide).\n"
            "            deleted_count = await self.db.delete_expired_files() if self.db else 0\n",
        ),
        (
            "                        save_result = await self.file_manager.save_file(\n"
            "                            user_id=user_id,\n"
            "                            file_data=file_data,\n"
            "                            filename=file_name,\n"
            "                            file_type=file_type\n"
            "                        )\n",
            "                        save_result = await self.file_manager.save_file(\n"
            "                            user_id=user_id,\n"
            "                            file_data=file_data,\n"
            "                            filename=file_name,\n"
            "                            file_type=file_type,\n"
            '                            origin="generated"\n'
            "                        )\n",
        ),
        (
            "            total_size = sum(f.get('file_size', 0) for f in all_files)\n",
            "            total_size = sum(f.get('size', f.get('file_size', 0)) for f in all_files)\n",
        ),
        (
            "    try:\n"
            "        db = db_handler.db if hasattr(db_handler, 'db') else db_handler.get_database()\n"
            "        \n"
            "        # Query all files for this user\n"
            '        cursor = db.user_files.find({"user_id": user_id})\n'
            "        files = await cursor.to_list(length=None)\n"
            "        \n"
            "        # Remove MongoDB _id for cleaner output\n"
            "        for file in files:\n"
            "            file.pop('_id', None)\n"
            "        \n"
            '        logger.info(f"Listed {len(files)} files for user {user_id}")\n'
            "        return files\n"
            "        \n"
            "    except Exception as e:\n"
            '        logger.error(f"Error listing user files: {e}")\n'
            "        return []\n",
            "    # Live files, newest first, with the fields /files reads; raises if the database is down\n"
            '    # (so /files says so instead of "You don\'t have any files").\n'
            "    return await db_handler.list_user_files(user_id)\n",
        ),
        (
            "    try:\n"
            "        db = db_handler.db if hasattr(db_handler, 'db') else db_handler.get_database()\n"
            "        file_meta = await db.user_files.find_one({\n"
            '            "file_id": file_id,\n'
            '            "user_id": user_id\n'
            "        })\n"
            "        \n"
            "        if file_meta:\n"
            "            # Remove MongoDB _id for cleaner output\n"
            "            file_meta.pop('_id', None)\n"
            "            return file_meta\n"
            "        \n"
            "        return None\n"
            "        \n"
            "    except Exception as e:\n"
            '        logger.error(f"Error getting file metadata: {e}")\n'
            "        return None\n",
            "    return await db_handler.get_user_file(file_id, user_id)\n",
        ),
        (
            "DELETE-FROM:    try:\n        # Get file metadata first\n",
            "async def delete_all_user_files(",
        ),
        (
            "INSERT-BEFORE:async def delete_all_user_files(",
            "    if not db_handler:\n"
            '        return {"success": False, "error": "no database"}\n'
            '    # The record first, then its file; {"success": False, "error": ...} when it is not the\n'
            "    # user's, or when the database is unavailable.\n"
            "    return await db_handler.remove_user_file(file_id, user_id)\n\n\n",
        ),
        (
            "DELETE-FROM:    try:\n        # Get all user files first\n",
            "END",
        ),
        (
            "APPEND:",
            "    if not db_handler:\n"
            '        return {"success": False, "error": "no database", "deleted_count": 0}\n'
            '    # Every record of the user, then their files: {"success", "deleted_count", ...}, or\n'
            '    # {"success": False, "error": ...} when the database is unavailable.\n'
            "    return await db_handler.reset_user_files(user_id)\n",
        ),
    ],
    "src/module/message_handler.py": [
        (
            "            from src.config.config import MAX_FILES_PER_USER\n"
            "            \n"
            "            # Check user's current file count (enforce limit)\n"
            "            user_files = await self.db.get_user_files(user_id)\n"
            "            if len(user_files) >= MAX_FILES_PER_USER:\n"
            "                # Delete oldest file to make room\n"
            "                oldest_file = min(user_files, key=lambda f: f.get('uploaded_at', datetime.min))\n"
            "                from src.utils.code_interpreter import delete_file\n"
            "                await delete_file(oldest_file['file_id'], user_id, self.db)\n"
            "                logging.info(f\"Deleted oldest file {oldest_file['file_id']} for user {user_id} "
            '(limit: {MAX_FILES_PER_USER})")\n'
            "            \n",
            "            # The per-user limit (MAX_FILES_PER_USER) is held by userfiles_db on every save,\n"
            "            # after the upload succeeded, even for concurrent uploads.\n"
            "            \n",
        ),
        (
            "            user_files = await self.db.get_user_files(user_id)\n"
            "            files_count = len(user_files)\n",
            "            files_count = await self.db.count_user_files(user_id)  # uploads; charts are apart\n",
        ),
    ],
}


def _apply(text: str, edits: list[tuple[str, str]], name: str) -> str:
    for old, new in edits:
        if old.startswith("DELETE-FROM:"):
            start = text.index(old[len("DELETE-FROM:") :])
            end = len(text) if new == "END" else text.index(new, start)
            text = text[:start] + text[end:]
            continue
        if old.startswith("INSERT-BEFORE:"):
            anchor = old[len("INSERT-BEFORE:") :]
            if text.count(anchor) != 1:
                raise SystemExit(f"{name}: anchor {anchor!r} found {text.count(anchor)} times")
            text = text.replace(anchor, new + anchor)
            continue
        if old == "APPEND:":
            text = text + new
            continue
        if text.count(old) != 1:
            raise SystemExit(f"{name}: expected once, found {text.count(old)} times:\n{old}")
        text = text.replace(old, new)
    return text


def main() -> None:
    bot = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/bot-reference")
    out = []
    for name, edits in EDITS.items():
        with open(bot / name, encoding="utf-8", newline="") as file:
            before = file.read()
        crlf = "\r\n" in before  # db_handler.py has Windows line endings: keep them
        after = _apply(before.replace("\r\n", "\n"), edits, name)
        if crlf:
            after = after.replace("\n", "\r\n")
        out.extend(
            difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
            )
        )
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
