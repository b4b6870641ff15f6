"""The explorer's search index: `search_terms`, built once at index time from the base tables.

One row per (SAE, term, feature) saying how the term belongs to the feature: in its name
(weighted by `features.name_score`), in a concept it promotes or whose logit it carries
(`feature_concepts`, when the index has it), and in the captions and labels of its first
SEARCH_TOP top samples (which ranks, and their activations as a share of the top one, times the
share of all the top samples' activation they make up: a feature whose top samples mostly lack
the term gains little from the few that hold it, however broad it is). Terms are
words and bigrams cut by app.search_text, the same SQL the app applies to queries, so a query is
a few range lookups on rows sorted by (sae_id, term) instead of a regex scan of every caption.
"""

from __future__ import annotations

from app.search_text import terms_sql, words_sql

SEARCH_TOP = 64
"""Top samples per feature that search reads (ranks 0..63: a rank set fits one UBIGINT)."""

COLUMNS = [("sae_id", "VARCHAR"), ("term", "VARCHAR"), ("feature_id", "INTEGER"), ("name_weight", "DOUBLE"),
           ("concept_weight", "DOUBLE"), ("ranks", "UBIGINT"), ("sample_weight", "DOUBLE")]


def _columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema()",
        [table]).fetchall()}


def _concepts_sql(con) -> str:
    """Concept terms weighted by the concept's score over the feature's best (kinds that say
    what the feature means: promotes, ablation, closest words in CLIP/SigLIP space); no rows when
    the index has no concepts."""
    if not {"concept", "score", "kind"} <= _columns(con, "feature_concepts"):
        return "SELECT NULL::VARCHAR AS sae_id, NULL::VARCHAR AS term, NULL::INTEGER AS feature_id, 0.0 AS concept_weight WHERE false"
    return f"""
    SELECT sae_id, term, feature_id, max(w) AS concept_weight FROM (
      SELECT sae_id, feature_id, unnest({terms_sql("words")}) AS term, w FROM (
        SELECT sae_id, feature_id, {words_sql('concept')} AS words,
               greatest(score, 0) / nullif(max(score) OVER (PARTITION BY sae_id, feature_id), 0) AS w
        FROM feature_concepts WHERE kind IN ('promotes', 'ablation', 'closest')))
    WHERE w > 0 GROUP BY ALL"""


def search_terms_sql(con) -> str:
    name_weight = "coalesce(name_score, 1.0)" if "name_score" in _columns(con, "features") else "1.0"
    return f"""
INSERT INTO search_terms
WITH
tops AS (
  SELECT *, sum(coalesce(w, 0)) OVER (PARTITION BY sae_id, feature_id) AS w_all FROM (
    SELECT t.sae_id, a.dataset_id, t.feature_id, t.rank, t.sample_id,
           greatest(t.activation, 0) / nullif(max(t.activation) OVER (PARTITION BY t.sae_id, t.feature_id), 0) AS w
    FROM feature_top t JOIN saes a ON a.sae_id = t.sae_id WHERE t.rank < {SEARCH_TOP})),
sample_words AS (
  SELECT s.dataset_id, s.sample_id, {words_sql("concat_ws(' ', s.caption, s.label)")} AS words
  FROM samples s SEMI JOIN (SELECT DISTINCT dataset_id, sample_id FROM tops) u
    ON u.dataset_id = s.dataset_id AND u.sample_id = s.sample_id),
texts AS (SELECT dataset_id, sample_id, {terms_sql("words")} AS terms FROM sample_words),
hits AS (
  SELECT tops.sae_id, tops.feature_id, tops.rank, tops.w, tops.w_all, unnest(texts.terms) AS term
  FROM tops JOIN texts ON texts.dataset_id = tops.dataset_id AND texts.sample_id = tops.sample_id),
samp AS (
  SELECT sae_id, term, feature_id, bit_or(1::UBIGINT << rank::UBIGINT) AS ranks,
         coalesce(sum(coalesce(w, 0)) * sum(coalesce(w, 0)) / nullif(any_value(w_all), 0), 0) AS sample_weight
  FROM hits GROUP BY ALL),
names AS (
  SELECT DISTINCT sae_id, feature_id, unnest({terms_sql("words")}) AS term, name_weight FROM (
    SELECT sae_id, feature_id, {words_sql('name')} AS words, {name_weight} AS name_weight
    FROM features WHERE coalesce(name, '') <> '')),
concepts AS ({_concepts_sql(con)})
SELECT sae_id, term, feature_id, coalesce(max(name_weight), 0), coalesce(max(concept_weight), 0),
       coalesce(bit_or(ranks), 0), coalesce(sum(sample_weight), 0)
FROM (SELECT sae_id, term, feature_id, NULL::DOUBLE AS name_weight, NULL::DOUBLE AS concept_weight, ranks, sample_weight FROM samp
      UNION ALL SELECT sae_id, term, feature_id, name_weight, NULL, NULL, NULL FROM names
      UNION ALL SELECT sae_id, term, feature_id, NULL, concept_weight, NULL, NULL FROM concepts)
WHERE term <> ''
GROUP BY sae_id, term, feature_id
ORDER BY sae_id, term, feature_id
"""


def build_search_terms(con) -> None:
    """Fill the (already created, empty) search_terms table."""
    con.execute(search_terms_sql(con))
