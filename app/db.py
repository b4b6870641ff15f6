"""The index: one read-only, locked-down DuckDB connection and one cursor per thread.

DuckDB connections are not thread-safe, so each threadpool worker gets its own cursor
(`con.cursor()`), all sharing one database instance and its cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import duckdb
from fastapi import Depends, Request

from app.errors import IndexSchemaError

SCHEMA_VERSION = 5  # sae_core.contract.SCHEMA_VERSION (the app does not import sae_core)
INDEX_FORMAT_SINCE = 5  # sae_core.contract.FORMAT_SINCE["index"]: the oldest index this app reads
REQUIRED_TABLES = (
    "schema_version", "datasets", "samples", "saes", "features", "feature_top",
    "feature_quantiles", "feature_hist", "feature_labels", "feature_neighbors", "clusters",
    "sample_map", "sample_top", "training_curve", "feature_page",
)
CACHE_SIZE = 128
"""Entries in the per-process LRU of derived views (the index is read-only, so they never go stale).
A patch-SAE feature view holds ~70 heatmaps as floats (up to ~1 MB), hence a small bound."""
T = TypeVar("T")


class Index:
    """Read-only access to an explorer index with a startup schema check."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IndexSchemaError(f"index file not found: {self.path}")
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise IndexSchemaError(f"cannot open index {self.path}: not a readable DuckDB file") from exc
        self._lock_down()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self.version, self.created_at = self._check_schema()

    def _lock_down(self) -> None:
        """No file or network access from SQL, and no way to turn it back on.

        A second connection to the same file in one process shares the (already locked)
        database instance, so each setting is only SET when it differs.
        """
        for name, value in (("enable_external_access", False), ("lock_configuration", True)):
            current = self.con.execute("SELECT current_setting(?)", [name]).fetchone()[0]
            if current != value:
                self.con.execute(f"SET {name} = {str(value).lower()}")

    def _check_schema(self) -> tuple[int, str]:
        tables = {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
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
            with self._lock:
                self._cursors.append(cur)
        return cur

    def all(self, sql: str, params: list[Any] | tuple = ()) -> list[dict[str, Any]]:
        """Rows as dicts; SQL only ever with bound parameters."""
        cur = self.cursor().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def one(self, sql: str, params: list[Any] | tuple = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list[Any] | tuple = ()) -> Any:
        row = self.cursor().execute(sql, params).fetchone()
        return None if row is None else row[0]

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for the life of this Index (LRU, CACHE_SIZE entries).

        Only for values derived from the index alone; exceptions are not cached.
        """
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def close(self) -> None:
        """Close every thread's cursor, then the connection (idempotent)."""
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for cur in cursors:
            cur.close()
        self.con.close()


async def get_db(request: Request) -> Index:  # async: no threadpool hop for an attribute read
    return request.app.state.index


DbDep = Annotated[Index, Depends(get_db)]
