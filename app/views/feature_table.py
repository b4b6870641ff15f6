"""The feature table of one SAE: every feature's numbers, sorted, filtered and paginated in SQL,
exportable as CSV and JSON. A selection (map lasso, search) travels as compact id ranges
("3,7-12"), so a link to any selection is short and loses nothing."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlencode

from app.db import Index
from app.errors import InvalidParamError
from app.models import FeatureTable
from app.views.common import FEATURE_COLS, SaeCtx, feature_summary

SORTABLE = ("feature_id", "name", "name_score", "density", "n_fired", "mean_act", "max_act", "label_entropy",
            "cluster_id", "top_label")
MAX_RANGES = 2000
"""Ranges in one selection: a lasso of scattered ids still fits; more is refused, never cut."""
CSV_COLUMNS = ("feature_id", "name", "name_score", "name_coverage", "density", "n_fired", "mean_act", "max_act",
               "label_entropy", "top_label", "cluster_id")


@dataclass(frozen=True)
class TableQuery:
    """The table's state; every field is a URL parameter, so the state is the link."""

    sort: str = "feature_id"
    order: str = "asc"
    min_density: float | None = None
    max_density: float | None = None
    cluster: int | None = None
    label: str | None = None
    name: str | None = None
    ids: str = ""
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in SORTABLE:
            raise InvalidParamError(f"sort: {self.sort!r} is not one of {', '.join(SORTABLE)}")
        if self.order not in ("asc", "desc"):
            raise InvalidParamError(f"order: {self.order!r} must be asc or desc")

    def params(self, **change: Any) -> str:
        """The query string of this state with `change` applied; defaults are left out."""
        q = replace(self, **change)
        defaults = TableQuery()
        return urlencode({f.name: getattr(q, f.name) for f in fields(q)
                          if getattr(q, f.name) not in (None, "") and getattr(q, f.name) != getattr(defaults, f.name)})


def parse_ranges(ids: str) -> list[tuple[int, int]]:
    """'1,2,5-9' -> [(1, 1), (2, 2), (5, 9)], any number of ids; a bad part is refused by name."""
    out: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in ids.split(","))):
        lo, _, hi = part.partition("-")
        if not (lo.isascii() and lo.isdecimal()) or (hi and not (hi.isascii() and hi.isdecimal())):
            raise InvalidParamError(f"ids: {part!r} is not a feature id or range like 3-7")
        a, b = int(lo), int(hi) if hi else int(lo)
        if b < a or b >= 2**31:
            raise InvalidParamError(f"ids: {part!r} is not a range low-high of feature ids")
        out.append((a, b))
    if len(out) > MAX_RANGES:
        raise InvalidParamError(f"ids: {len(out)} ranges; at most {MAX_RANGES} (merge neighbouring ids into ranges like 3-7)")
    return out


def _where(ctx: SaeCtx, q: TableQuery) -> tuple[str, list[Any]]:
    sql, args = ["f.sae_id = ?"], [ctx.sae_id]
    for cond, value in (("f.density >= ?", q.min_density), ("f.density <= ?", q.max_density),
                        ("f.cluster_id = ?", q.cluster), ("f.top_label = ?", q.label)):
        if value is not None and value != "":
            sql.append(cond)
            args.append(value)
    if q.name:
        sql.append("contains(lower(coalesce(f.name, '')), lower(?))")
        args.append(q.name)
    ranges = parse_ranges(q.ids)
    if ranges:
        sql.append("EXISTS (SELECT 1 FROM (SELECT unnest(?::INTEGER[]) AS lo, unnest(?::INTEGER[]) AS hi) r "
                   "WHERE f.feature_id BETWEEN r.lo AND r.hi)")
        args += [[a for a, _ in ranges], [b for _, b in ranges]]
    return " AND ".join(sql), args


def _rows(db: Index, ctx: SaeCtx, q: TableQuery, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    where, args = _where(ctx, q)
    # NULLs last either way; feature_id breaks ties so pages never overlap
    order = f"f.{q.sort} {q.order.upper()} NULLS LAST, f.feature_id"
    page = " LIMIT ? OFFSET ?" if limit is not None else ""
    cols = ", ".join(f"f.{c.strip()}" for c in FEATURE_COLS.split(","))
    rows = db.all(f"SELECT {cols} FROM features f WHERE {where} ORDER BY {order}{page}",
                  args + ([limit, q.offset] if limit is not None else []))
    count = int(db.scalar(f"SELECT count(*) FROM features f WHERE {where}", args))
    return rows, count


def feature_table(db: Index, ctx: SaeCtx, q: TableQuery) -> FeatureTable:
    rows, count = _rows(db, ctx, q, q.limit)
    base = f"/sae/{ctx.sae_id}/features"
    link = lambda path, **ch: f"{path}?{q.params(**ch)}".rstrip("?")  # noqa: E731
    return FeatureTable(
        sae=ctx.summary, data=[feature_summary(ctx.sae_id, r) for r in rows], count=count,
        limit=q.limit, offset=q.offset, query=q.params(limit=TableQuery.limit, offset=0),
        state={f.name: getattr(q, f.name) for f in fields(q)},
        prev_url=link(base, offset=max(0, q.offset - q.limit)) if q.offset > 0 else None,
        next_url=link(base, offset=q.offset + q.limit) if q.offset + q.limit < count else None,
        csv_url=link(base + ".csv", limit=TableQuery.limit, offset=0),
        json_url=link(base + ".json"),
        sort_urls={c: link(base, sort=c, order="desc" if q.sort == c and q.order == "asc" else "asc", offset=0)
                   for c in SORTABLE})


def feature_table_csv(db: Index, ctx: SaeCtx, q: TableQuery) -> str:
    """Every row of the filtered, sorted table (no pagination)."""
    where, args = _where(ctx, q)
    rows = db.all(f"SELECT {', '.join(CSV_COLUMNS)} FROM features f WHERE {where} "
                  f"ORDER BY f.{q.sort} {q.order.upper()} NULLS LAST, f.feature_id", args)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_cell(r[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def _cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (labels come from datasets) is quoted with a leading '."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
