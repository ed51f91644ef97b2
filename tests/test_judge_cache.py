"""The judge cache on disk: shared by two processes at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tpo.judge.cache import JudgeCache, cache_key


def test_a_reader_does_not_block_a_writer(tmp_path: Path) -> None:
    """Two arms run side by side share one cache file. With sqlite's default rollback journal,
    a process in the middle of a read makes the other's write fail with "database is locked";
    in write-ahead-log mode the write goes through and the reader sees it afterwards."""
    path = tmp_path / "judge_cache.sqlite"
    cache = JudgeCache(path)
    first = cache_key("judge", "q", "r1")
    cache.put({first: {"text": "Score: 3"}})
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM judgements").fetchone() == (1,)
    writer = sqlite3.connect(path, timeout=0.2)  # another process: fails fast when locked
    second = cache_key("judge", "q", "r2")
    writer.execute("INSERT INTO judgements VALUES (?, ?)", (second, '{"text": "Score: 8"}'))
    writer.commit()
    reader.execute("COMMIT")
    assert cache.get([first, second]) == {
        first: {"text": "Score: 3"},
        second: {"text": "Score: 8"},
    }
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reader.close()
    writer.close()
