"""An on-disk cache of judgements, so nothing is judged twice.

A rerun, a resumed run, a redone stage, or the second arm meeting a response the first arm
already had judged (greedy outputs often repeat) all ask the same question again; with an 8B
reward model or a paid API that is real time and money. Each answer is stored under the sha256
of the judge's identity (model, prompt version, settings) and the texts it saw: instruction
and response, or instruction and both responses in their order for a pairwise comparison.

sqlite3 (standard library) rather than a JSONL file: lookups by key without reading the whole
file, and safe when two processes (two arms run side by side) write at once: the database is
in write-ahead-log mode, so one process reading never blocks the other's writes. Only answers are
stored, never failures, so a call that failed is tried again next time.

>>> cache = JudgeCache(":memory:")
>>> key = cache_key("judge-v1", "What is 2+2?", "4")
>>> cache.put({key: {"text": "Score: 9"}})
>>> found = cache.get([key, cache_key("judge-v1", "What is 2+2?", "5")])
>>> list(found.values())
[{'text': 'Score: 9'}]
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tpo import faults, storage_errors
from tpo.judge import JudgeError

_BATCH = 500  # sqlite's default limit on host parameters is 999


def _said(exc: BaseException) -> str:
    """A full disk or a read-only directory as the one line that says what to do."""
    return storage_errors.describe(exc) or str(exc)


def cache_key(identity: str, *texts: str) -> str:
    """sha256 of the judge identity and the texts, in order."""
    return hashlib.sha256(json.dumps([identity, *texts]).encode()).hexdigest()


class JudgeCache:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False)
            if self.path != ":memory:":
                # write-ahead log: a reader never blocks a writer, so two processes (two arms
                # side by side) can share one cache; the setting stays with the file
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise JudgeError(f"cannot open the judge cache {self.path}: {_said(exc)}") from None

    def get(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored answers of those keys that have one."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _BATCH):
                part = unique[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                try:
                    rows = self._db.execute(
                        f"SELECT key, value FROM judgements WHERE key IN ({marks})", part
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise JudgeError(f"judge cache {self.path}: {_said(exc)}") from None
                found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put(self, answers: Mapping[str, Any]) -> None:
        if not answers:
            return
        rows = [(key, json.dumps(value)) for key, value in answers.items()]
        faults.reached(f"cache:{self.path}")
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO judgements VALUES (?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                raise JudgeError(f"judge cache {self.path}: {_said(exc)}") from None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])
