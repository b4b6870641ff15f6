"""Read a saescope index from Python (a notebook): `saescope.open_index(path)`.

    import saescope
    idx = saescope.open_index("data/index/demo.duckdb")
    idx.saes.df()                                   # pandas (or .pl() for polars, .arrow())
    idx.features.filter("sae_id = 'emoji-head-...'").order("density DESC").limit(10).df()
    idx.feature("emoji-head-...", 12)               # the explorer's feature page as a dict
    idx.sql("SELECT label, count(*) FROM samples GROUP BY 1").df()

Every table of docs/data-contract.md (Explorer index) is an attribute returning a DuckDB
relation over a read-only connection: nothing is loaded until asked for, and the file cannot
be changed from here. Light on purpose: no torch, no web stack.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["Index", "open_index"]


class Index:
    """A read-only view of one index file; `idx.<table>` is a DuckDB relation."""

    def __init__(self, path: str | Path) -> None:
        import duckdb

        from sae_core.contract import check_version
        from sae_core.errors import FormatError

        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(f"{self.path}: no such index; build one with `saescope index` or `saescope demo`")
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
            self.tables = sorted(r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall())
            rows = self.con.execute("SELECT version FROM schema_version").fetchall() if "schema_version" in self.tables else []
        except duckdb.Error as e:
            raise FormatError(f"{self.path}: not a readable saescope index ({str(e).splitlines()[0]})") from None
        check_version(rows[0][0] if rows else None, "index", self.path, "rebuild it with `saescope index`")

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in self.__dict__.get("tables", ()):
            raise AttributeError(f"{name!r} is not a table of {self.__dict__.get('path')}; tables: {', '.join(self.__dict__.get('tables', ()))}")
        return self.con.table(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.tables))

    def sql(self, query: str, params: list | None = None):
        """Any read-only SQL over the index's tables, as a relation (`?` placeholders take `params`)."""
        return self.con.sql(query, params=params)

    def feature(self, sae_id: str, feature_id: int) -> dict | None:
        """The explorer's page of one feature (`feature_page.page`), or None when absent."""
        rows = self.con.execute("SELECT page FROM feature_page WHERE sae_id = ? AND feature_id = ?", [sae_id, int(feature_id)]).fetchall()
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, tables={self.tables})"


def open_index(path: str | Path) -> Index:
    """Open an index file written by `saescope index` / `saescope demo`, read-only."""
    return Index(path)
