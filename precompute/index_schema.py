"""The explorer index's tables, exactly as docs/data-contract.md lists them.

`TABLES` is the single source of truth in code; tests compare it with the contract document
and with what the app reads.
"""

from __future__ import annotations

import pyarrow as pa

from precompute.search_index import COLUMNS as SEARCH_COLUMNS
from precompute.search_index import build_search_terms

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
                 ("cluster_id", "INTEGER"), ("x", "REAL"), ("y", "REAL"), ("name_score", "DOUBLE"),
                 ("name_coverage", "DOUBLE")],
    "feature_top": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("rank", "INTEGER"), ("sample_id", "BIGINT"),
                    ("activation", "REAL"), ("heatmap", "BLOB"), ("heatmap_scale", "REAL")],
    "feature_quantiles": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("bin", "INTEGER"), ("rank", "INTEGER"),
                          ("sample_id", "BIGINT"), ("activation", "REAL"), ("heatmap", "BLOB"), ("heatmap_scale", "REAL")],
    "feature_hist": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("edges", "DOUBLE[]"), ("counts", "BIGINT[]")],
    "feature_labels": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("label", "VARCHAR"), ("count", "INTEGER"), ("fraction", "DOUBLE")],
    "feature_neighbors": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("rank", "INTEGER"), ("neighbor_id", "INTEGER"), ("cosine", "REAL")],
    "feature_coactivation": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("rank", "INTEGER"), ("neighbor_id", "INTEGER"),
                             ("jaccard", "REAL"), ("n_both", "BIGINT")],
    "feature_concepts": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("kind", "VARCHAR"), ("rank", "INTEGER"),
                         ("concept", "VARCHAR"), ("score", "REAL"), ("method", "VARCHAR")],
    "feature_alignment": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("max_cos", "REAL"), ("best_neuron", "INTEGER"),
                          ("n_above", "INTEGER"), ("cosines", "BLOB")],
    "sae_alignment": [("sae_id", "VARCHAR"), ("n_neurons", "INTEGER"), ("threshold", "REAL"), ("random_max_cos", "REAL[]")],
    "low_density_cluster": [("sae_id", "VARCHAR"), ("feature_ids", "INTEGER[]"), ("gap_decades", "REAL"),
                            ("mean_pairwise_cos", "REAL")],
    "clusters": [("sae_id", "VARCHAR"), ("map", "VARCHAR"), ("cluster_id", "INTEGER"), ("name", "VARCHAR"), ("size", "INTEGER"),
                 ("x", "REAL"), ("y", "REAL"), ("name_score", "REAL")],
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
    "feature_coactivation": ("sae_id", "feature_id", "rank"),
    "feature_concepts": ("sae_id", "feature_id", "kind", "rank"),
    "feature_alignment": ("sae_id", "feature_id"),
    "clusters": ("sae_id", "map", "cluster_id"),
    "sample_map": ("sae_id", "sample_id"),
    "sample_top": ("sae_id", "sample_id", "rank"),
    "training_curve": ("sae_id", "step"),
    "feature_page": ("sae_id", "feature_id"),  # derived, written by finalize()
    "search_terms": ("sae_id", "term", "feature_id"),  # derived, written by finalize()
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


# Derived tables: computed by SQL from the base tables once they are all written (`finalize`).
# The explorer's feature page reads one `feature_page` row instead of joining seven tables and
# looking captions up in the (large) samples table on every request.
DERIVED: dict[str, list[tuple[str, str]]] = {
    "feature_page": [("sae_id", "VARCHAR"), ("feature_id", "INTEGER"), ("page", "VARCHAR")],
    "search_terms": SEARCH_COLUMNS,
}

_FEATURE_PAGE_SQL = """
INSERT INTO feature_page
WITH
tops AS (
  SELECT t.sae_id, t.feature_id,
         list({'sample_id': t.sample_id, 'activation': t.activation::DOUBLE, 'caption': s.caption, 'label': s.label}
              ORDER BY t.rank) AS top
  FROM feature_top t JOIN saes a ON a.sae_id = t.sae_id
  LEFT JOIN samples s ON s.dataset_id = a.dataset_id AND s.sample_id = t.sample_id
  GROUP BY t.sae_id, t.feature_id),
quants AS (
  SELECT q.sae_id, q.feature_id,
         list({'bin': q.bin, 'sample_id': q.sample_id, 'activation': q.activation::DOUBLE, 'caption': s.caption,
               'label': s.label} ORDER BY q.bin, q.rank) AS quantiles
  FROM feature_quantiles q JOIN saes a ON a.sae_id = q.sae_id
  LEFT JOIN samples s ON s.dataset_id = a.dataset_id AND s.sample_id = q.sample_id
  GROUP BY q.sae_id, q.feature_id),
labs AS (
  SELECT sae_id, feature_id, list({'label': label, 'count': count, 'fraction': fraction} ORDER BY count DESC, label) AS labels
  FROM feature_labels GROUP BY sae_id, feature_id),
nbrs AS (
  SELECT n.sae_id, n.feature_id,
         list({'feature_id': n.neighbor_id, 'cosine': n.cosine::DOUBLE, 'name': f.name, 'name_score': f.name_score,
               'thumbs': coalesce(tp.top[1:3], [])} ORDER BY n.rank) AS neighbors
  FROM feature_neighbors n
  LEFT JOIN features f ON f.sae_id = n.sae_id AND f.feature_id = n.neighbor_id
  LEFT JOIN tops tp ON tp.sae_id = n.sae_id AND tp.feature_id = n.neighbor_id
  GROUP BY n.sae_id, n.feature_id),
coacts AS (
  SELECT n.sae_id, n.feature_id,
         list({'feature_id': n.neighbor_id, 'jaccard': n.jaccard::DOUBLE, 'n_both': n.n_both, 'name': f.name,
               'name_score': f.name_score, 'thumbs': coalesce(tp.top[1:3], [])} ORDER BY n.rank) AS coactivation
  FROM feature_coactivation n
  LEFT JOIN features f ON f.sae_id = n.sae_id AND f.feature_id = n.neighbor_id
  LEFT JOIN tops tp ON tp.sae_id = n.sae_id AND tp.feature_id = n.neighbor_id
  GROUP BY n.sae_id, n.feature_id),
concepts AS (
  SELECT sae_id, feature_id,
         list({'kind': kind, 'concept': concept, 'score': score::DOUBLE, 'method': method} ORDER BY kind, rank) AS concepts
  FROM feature_concepts GROUP BY sae_id, feature_id)
SELECT f.sae_id, f.feature_id, to_json({
  'feature': {'feature_id': f.feature_id, 'name': f.name, 'name_score': f.name_score, 'name_coverage': f.name_coverage,
              'density': f.density, 'n_fired': f.n_fired,
              'mean_act': f.mean_act, 'max_act': f.max_act, 'label_entropy': f.label_entropy,
              'top_label': f.top_label, 'cluster_id': f.cluster_id},
  'top': coalesce(tops.top, []), 'quantiles': coalesce(quants.quantiles, []),
  'hist': {'edges': coalesce(h.edges, []), 'counts': coalesce(h.counts, [])},
  'labels': coalesce(labs.labels, []), 'neighbors': coalesce(nbrs.neighbors, []),
  'coactivation': coalesce(coacts.coactivation, []), 'concepts': coalesce(concepts.concepts, [])})::VARCHAR
FROM features f
LEFT JOIN tops ON tops.sae_id = f.sae_id AND tops.feature_id = f.feature_id
LEFT JOIN quants ON quants.sae_id = f.sae_id AND quants.feature_id = f.feature_id
LEFT JOIN feature_hist h ON h.sae_id = f.sae_id AND h.feature_id = f.feature_id
LEFT JOIN labs ON labs.sae_id = f.sae_id AND labs.feature_id = f.feature_id
LEFT JOIN nbrs ON nbrs.sae_id = f.sae_id AND nbrs.feature_id = f.feature_id
LEFT JOIN coacts ON coacts.sae_id = f.sae_id AND coacts.feature_id = f.feature_id
LEFT JOIN concepts ON concepts.sae_id = f.sae_id AND concepts.feature_id = f.feature_id
ORDER BY f.sae_id, f.feature_id
"""


def finalize(con) -> None:
    """Build the derived tables from the base tables; call once, after the last insert_table.

    `feature_page` holds one JSON document per feature (stats, top and quantile samples with
    their captions and labels, histogram, label counts, neighbours with their names and first
    three top samples), stored in (sae_id, feature_id) order so a page is one point lookup.
    Heatmaps stay in feature_top / feature_quantiles.
    """
    for name, cols in DERIVED.items():
        con.execute(f"DROP TABLE IF EXISTS {name}")
        con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols)})")
    con.execute(_FEATURE_PAGE_SQL)
    build_search_terms(con)  # search's term index (precompute.search_index)
