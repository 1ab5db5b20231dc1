"""The embedded store: one SQLite file shared by every worker of one server.

Why SQLite: it needs no service, several processes can use one file safely, and the
file outlives a worker that crashes (the data of a job whose worker died is still there
for another worker to mark "replica lost"). WAL mode lets readers run while one process
writes; ``busy_timeout`` makes a writer wait for another instead of failing.

Every SQLite call runs on this store's own one-thread gevent threadpool: a query that
waits for the file lock (another worker writing) blocks that thread, never the gevent
hub, and one thread serialises this worker's calls on its one connection. Expiry times
are wall-clock seconds (every worker of a server shares the clock).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from gevent.threadpool import ThreadPool

from nb2svc.runtime.store.base import Store, StoreUnavailable

T = TypeVar("T")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)",
    "CREATE TABLE IF NOT EXISTS idx (key TEXT NOT NULL, member TEXT NOT NULL, expires REAL NOT NULL, "
    "PRIMARY KEY (key, member))",
)
#: Expired rows are swept once every this many writes (reads already ignore them).
SWEEP_EVERY = 200


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


class SqliteStore(Store):
    """:class:`Store` over a SQLite file (see the module docstring)."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.description = f"embedded (SQLite {path})"
        self._busy_timeout = busy_timeout
        self._pool = ThreadPool(1)
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._call(self._open)

    def _open(self) -> None:
        """Open the file, in WAL mode, with the schema; retried while another process does the same.

        Workers that open a new file at once race to switch it to WAL, and SQLite answers
        "database is locked" at once to the loser instead of waiting (a lock upgrade its busy
        handler cannot wait for): seen as a worker failing to boot, once in about 25 starts of
        two workers. Every step is idempotent, so the open is retried until ``busy_timeout``.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            db = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
                for statement in SCHEMA:
                    db.execute(statement)
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # the store's own thread (a ThreadPool's), not a greenlet
                continue
            self._db = db
            return

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self._pool.apply(fn, args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the embedded store ({self.path}) failed: {exc}") from None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the store is closed")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            now = time.time()
            db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (now,))
            db.execute("DELETE FROM idx WHERE expires <= ?", (now,))

    def _live(self, db: sqlite3.Connection, key: str) -> bytes | None:
        row = db.execute(
            "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)", (key, time.time())
        ).fetchone()
        return None if row is None else bytes(row[0])

    # --- the contract ------------------------------------------------------------

    def ping(self) -> None:
        self._call(lambda: self._conn.execute("SELECT 1").fetchone())

    def get(self, key: str) -> bytes | None:
        return self._call(lambda: self._live(self._conn, key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._call(lambda: [self._live(self._conn, key) for key in keys])

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        def run() -> None:
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, _expiry(ttl)))

        self._call(run)

    def create(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        def run() -> bool:
            with self._write() as db:
                if self._live(db, key) is not None:
                    return False
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, _expiry(ttl)))
                return True

        return self._call(run)

    def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        def run() -> bool:
            with self._write() as db:
                if self._live(db, key) != expected:
                    return False
                db.execute("UPDATE kv SET value = ?, expires = ? WHERE key = ?", (value, _expiry(ttl), key))
                return True

        return self._call(run)

    def delete(self, key: str) -> bool:
        def run() -> bool:
            with self._write() as db:
                present = self._live(db, key) is not None
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
                return present

        return self._call(run)

    def compare_and_delete(self, key: str, expected: bytes) -> bool:
        def run() -> bool:
            with self._write() as db:
                if self._live(db, key) != expected:
                    return False
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
                return True

        return self._call(run)

    def index_add(self, key: str, member: str, ttl: float) -> None:
        def run() -> None:
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO idx VALUES (?, ?, ?)", (key, member, time.time() + ttl))

        self._call(run)

    def index_remove(self, key: str, member: str) -> None:
        def run() -> None:
            with self._write() as db:
                db.execute("DELETE FROM idx WHERE key = ? AND member = ?", (key, member))

        self._call(run)

    def index_count(self, key: str) -> int:
        def run() -> int:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM idx WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchone()
            return int(row[0])

        return self._call(run)

    def index_members(self, key: str) -> list[str]:
        def run() -> list[str]:
            rows = self._conn.execute(
                "SELECT member FROM idx WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchall()
            return [str(row[0]) for row in rows]

        return self._call(run)

    def close(self) -> None:
        def run() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            self._call(run)
        finally:
            self._pool.kill()


__all__ = ["SqliteStore"]
