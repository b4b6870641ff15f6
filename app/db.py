"""The index: one read-only, locked-down DuckDB connection and one cursor per thread.

DuckDB connections are not thread-safe, so each threadpool worker gets its own cursor
(`con.cursor()`), all sharing one database instance and its cache.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypeVar

import duckdb
from fastapi import Depends, Request

from app.errors import IndexSchemaError, IndexUnavailableError

SCHEMA_VERSION = 6  # sae_core.contract.SCHEMA_VERSION (the app does not import sae_core)
INDEX_FORMAT_SINCE = 6  # sae_core.contract.FORMAT_SINCE["index"]: the oldest index this app reads
REQUIRED_TABLES = (
    "schema_version", "datasets", "samples", "saes", "features", "feature_top",
    "feature_quantiles", "feature_hist", "feature_labels", "feature_neighbors", "clusters",
    "sample_map", "sample_top", "training_curve", "feature_page", "search_terms",
    "feature_coactivation", "feature_concepts", "feature_alignment", "sae_alignment", "low_density_cluster",
)
CACHE_SIZE = 128
"""Entries in the per-process LRU of derived views (the index is read-only, so they never go stale).
A patch-SAE feature view holds ~70 heatmaps as floats (up to ~1 MB), hence a small bound."""
T = TypeVar("T")
CATALOG = "idx"  # the index's name inside the private in-memory database
HEADER_BYTES = 3 * 4096  # DuckDB's file header and two database headers precede the blocks


class FileStamp(NamedTuple):
    """What changes when a file is replaced (inode) or rewritten in place (size, mtime)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


def file_stamp(path: Path) -> FileStamp | None:
    """One stat call (~2 us): cheap enough for every request."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


class Index:
    """Read-only access to an explorer index with a startup schema check.

    The file is ATTACHed to a private in-memory database rather than opened by path: DuckDB
    shares one instance per path within a process, so a second `connect(path)` after the file
    was replaced would still see the old one, and a reload could never switch.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.stamp = file_stamp(self.path)
        if self.stamp is None or not self.path.is_file():
            raise IndexSchemaError(f"index file not found: {self.path}")
        try:
            self.con = duckdb.connect(":memory:")
            self.con.execute(f"ATTACH '{_sql_quote(str(self.path))}' AS {CATALOG} (READ_ONLY)")
            self.con.execute(f"USE {CATALOG}")
        except duckdb.Error as exc:
            raise IndexSchemaError(f"cannot open index {self.path}: not a readable DuckDB file") from exc
        self._lock_down()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending: dict[Hashable, tuple[int, Future]] = {}  # key -> (making thread, its result)
        self.damaged: str | None = None
        try:
            self._check_complete()
            self.version, self.created_at = self._check_schema()
            self.inputs_hash = self._meta("inputs_hash")
        except BaseException:
            self.con.close()
            raise

    def _lock_down(self) -> None:
        """No file or network access from SQL (no ATTACH, no read_csv), and no way to turn it back on."""
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _check_complete(self) -> None:
        """A half-copied file opens and even counts its rows (metadata only); its size gives it away."""
        row = self.con.execute("SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = ?",
                               [CATALOG]).fetchone()
        if row is not None and self.stamp.size < HEADER_BYTES + int(row[0]) * int(row[1]):
            raise IndexSchemaError(
                f"{self.path} is incomplete ({self.stamp.size:,} bytes of {HEADER_BYTES + int(row[0]) * int(row[1]):,}): "
                "a copy still under way or a truncated file; copy it again, then rename it into place")

    def _meta(self, key: str) -> str | None:
        if "index_meta" not in self._tables():
            return None
        return self.scalar("SELECT value FROM index_meta WHERE key = ?", [key])

    def _tables(self) -> set[str]:
        return {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?", [CATALOG]).fetchall()}

    def _check_schema(self) -> tuple[int, str]:
        tables = self._tables()
        if "schema_version" not in tables:
            raise IndexSchemaError(f"{self.path} is not a saescope index: no schema_version table")
        row = self.con.execute("SELECT version, CAST(created_at AS VARCHAR) FROM schema_version").fetchone()
        if row is None or not isinstance(row[0], int) or not INDEX_FORMAT_SINCE <= row[0] <= SCHEMA_VERSION:
            found = None if row is None else row[0]
            readable = f"version {SCHEMA_VERSION}" if INDEX_FORMAT_SINCE == SCHEMA_VERSION else f"versions {INDEX_FORMAT_SINCE}..{SCHEMA_VERSION}"
            raise IndexSchemaError(
                f"{self.path} has index schema_version {found}; this app reads {readable}. "
                "Rebuild the index with `saescope index` from the same saescope version.")
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise IndexSchemaError(f"{self.path} lacks tables: {', '.join(missing)}")
        return row[0], str(row[1])

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self.con.cursor()
            cur.execute(f"USE {CATALOG}")  # a cursor starts in the in-memory catalog
            with self._lock:
                self._cursors.append(cur)
        return cur

    def execute(self, sql: str, params: list[Any] | tuple = ()) -> duckdb.DuckDBPyConnection:
        """This thread's cursor after running sql; a file that cannot be read is a 503, not a 500."""
        try:
            return self.cursor().execute(sql, params)
        except (duckdb.IOException, duckdb.InternalException) as exc:
            self.damaged = f"{self.path} could not be read ({type(exc).__name__})"
            raise IndexUnavailableError(
                "The index file cannot be read right now (being replaced, or damaged); try again shortly.") from exc

    def all(self, sql: str, params: list[Any] | tuple = ()) -> list[dict[str, Any]]:
        """Rows as dicts; SQL only ever with bound parameters."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def one(self, sql: str, params: list[Any] | tuple = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list[Any] | tuple = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for the life of this Index (LRU, CACHE_SIZE entries).

        Only for values derived from the index alone; exceptions are not cached. Concurrent
        callers of a key being made wait for that result instead of making it again: under load
        the same search arrives from several clients at once, and each copy took a page thread.
        """
        me = threading.get_ident()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = (me, Future())
        if pending[0] != me:  # (the thread making it, asking again, would wait on itself: it makes it anew)
            return pending[1].result()
        try:
            value = make()
        except BaseException as exc:
            if (fut := self._release(key, pending)) is not None:
                fut.set_exception(exc)
            raise
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if (fut := self._release(key, pending)) is not None:
            fut.set_result(value)
        return value

    def _release(self, key: Hashable, pending: tuple[int, Future]) -> Future | None:
        """The future to settle for the callers waiting on `pending`, once, by the thread making it."""
        with self._lock:
            if self._pending.get(key) is not pending or pending[0] != threading.get_ident():
                return None
            del self._pending[key]
        return pending[1]

    def close(self) -> None:
        """Close every thread's cursor, then the connection (idempotent)."""
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for cur in cursors:
            cur.close()
        self.con.close()


async def get_db(request: Request) -> Index:  # async: one stat call, no threadpool hop
    return request.app.state.watch.get()


DbDep = Annotated[Index, Depends(get_db)]
