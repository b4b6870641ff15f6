"""The explorer index's tables, exactly as docs/data-contract.md lists them.

`TABLES` is the single source of truth in code; tests compare it with the contract document
and with what the app reads.
"""

from __future__ import annotations

import pyarrow as pa

TABLES: dict[str, list[tuple[str, str]]] = {
    "schema_version": [("version", "INTEGER"), ("saescope_version", "VARCHAR"), ("created_at", "TIMESTAMP")],
    "index_meta": [("key", "VARCHAR"), ("value", "VARCHAR")],
    "datasets": [("dataset_id", "VARCHAR"), ("modality", "VARCHAR"), ("source", "VARCHAR"), ("n_samples", "BIGINT"),
                 ("thumbs_dpath", "VARCHAR"), ("has_labels", "BOOLEAN")],
    "samples": [("dataset_id", "VARCHAR"), ("sample_id", "BIGINT"), ("source", "VARCHAR"), ("caption", "VARCHAR"),
                ("label", "VARCHAR"), ("width", "INTEGER"), ("height", "INTEGER")],
    "saes": [("sae_id", "VARCHAR"), ("title", "VARCHAR"), ("dataset_id", "VARCHAR"), ("model", "VARCHAR"), ("layer", "VARCHAR"),
             ("token_selection", "VARCHAR"), ("arch", "VARCHAR"), ("d_in", "INTEGER"), ("d_sae", "INTEGER"), ("k", "INTEGER"),
             ("grid_h", "INTEGER"), ("grid_w", "INTEGER"), ("n_samples", "BIGINT"), ("n_tokens", "BIGINT"), ("l0", "DOUBLE"),
             ("explained_variance", "DOUBLE"), ("fvu", "DOUBLE"), ("dead_fraction", "DOUBLE"), ("checkpoint", "VARCHAR"),
             ("store", "VARCHAR"), ("config_json", "VARCHAR")],
    "features": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("name", "VARCHAR"), ("density", "DOUBLE"), ("n_fired", "BIGINT"),
                 ("mean_act", "DOUBLE"), ("max_act", "DOUBLE"), ("label_entropy", "DOUBLE"), ("top_label", "VARCHAR"),
                 ("cluster_id", "INTEGER"), ("x", "REAL"), ("y", "REAL")],
    "feature_top": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("rank", "INTEGER"), ("sample_id", "BIGINT"),
                    ("activation", "REAL"), ("heatmap", "BLOB"), ("heatmap_scale", "REAL")],
    "feature_quantiles": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("bin", "INTEGER"), ("rank", "INTEGER"),
                          ("sample_id", "BIGINT"), ("activation", "REAL"), ("heatmap", "BLOB"), ("heatmap_scale", "REAL")],
    "feature_hist": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("edges", "DOUBLE[]"), ("counts", "BIGINT[]")],
    "feature_labels": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("label", "VARCHAR"), ("count", "INTEGER"), ("fraction", "DOUBLE")],
    "feature_neighbors": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("rank", "INTEGER"), ("neighbor_id", "INTEGER"), ("cosine", "REAL")],
    "clusters": [("sae_id", "VARCHAR"), ("map", "VARCHAR"), ("cluster_id", "INTEGER"), ("name", "VARCHAR"), ("size", "INTEGER"),
                 ("x", "REAL"), ("y", "REAL")],
    "sample_map": [("sae_id", "VARCHAR"), ("sample_id", "BIGINT"), ("x", "REAL"), ("y", "REAL"), ("cluster_id", "INTEGER")],
    "sample_top": [("sae_id", "VARCHAR"), ("sample_id", "BIGINT"), ("rank", "INTEGER"), ("feature_id", "INTEGER"), ("activation", "REAL")],
    "training_curve": [("sae_id", "VARCHAR"), ("step", "BIGINT"), ("n_tokens", "BIGINT"), ("loss", "DOUBLE"), ("fvu", "DOUBLE"),
                       ("l0", "DOUBLE"), ("dead_fraction", "DOUBLE")],
}

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "samples": ("dataset_id", "sample_id"),
    "features": ("sae_id", "feature_id"),
    "feature_top": ("sae_id", "feature_id", "rank"),
    "feature_quantiles": ("sae_id", "feature_id", "bin", "rank"),
    "feature_hist": ("sae_id", "feature_id"),
    "feature_labels": ("sae_id", "feature_id", "count DESC", "label"),
    "feature_neighbors": ("sae_id", "feature_id", "rank"),
    "clusters": ("sae_id", "map", "cluster_id"),
    "sample_map": ("sae_id", "sample_id"),
    "sample_top": ("sae_id", "sample_id", "rank"),
    "training_curve": ("sae_id", "step"),
}
"""Rows go in this order so a feature's (or sample's) rows sit together in one block."""


def create_tables(con) -> None:
    for name, cols in TABLES.items():
        con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols)})")


def insert_table(con, name: str, columns: dict) -> None:
    """Insert a dict of equal-length columns, sorted by the table's key, through Arrow."""
    names = [c for c, _ in TABLES[name]]
    if set(columns) != set(names):
        raise ValueError(f"{name}: columns {sorted(columns)} do not match the schema {names}")
    table = pa.table({c: _arrow_column(columns[c]) for c in names})
    if table.num_rows == 0:
        return
    order = ", ".join(SORT_KEYS.get(name, ()))
    con.register("_incoming", table)
    try:
        con.execute(f"INSERT INTO {name} SELECT {', '.join(names)} FROM _incoming" + (f" ORDER BY {order}" if order else ""))
    finally:
        con.unregister("_incoming")


def _arrow_column(values):
    import numpy as np

    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))
