"""How search cuts text into terms: one DuckDB expression for the index build and for queries.

The index build (precompute.index_schema.finalize) turns names, concepts and top-sample captions
and labels into terms with `terms_sql`, and the app turns the query into terms with the same SQL,
so both sides always agree on case, apostrophes, possessives and plurals, for every script.

A word is a run of letters, marks, digits and `_` (an apostrophe inside keeps "don't" whole),
lower-cased, with a possessive 's dropped and an English plural reduced to its singular
("cars" -> "car", "puppies" -> "puppy", "boxes" -> "box"; "glass", "bus" and words of up to 3
letters stay). Bigrams ("red car") of consecutive words make quoted phrases one lookup.
Pure strings: importable without the web stack or DuckDB.
"""

from __future__ import annotations

WORD_RE = r"[\p{L}\p{M}\p{N}_]+(?:'[\p{L}\p{M}\p{N}_]+)*"
_WORD_RE_SQL = WORD_RE.replace("'", "''")

STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to was were with".split())
"""Dropped from queries of several words: they match nearly every caption, and 'all of the words'
should mean the words that carry meaning. Phrases keep them."""


def _stem(w: str) -> str:
    return (f"CASE WHEN length({w}) <= 3 THEN {w} "
            f"WHEN length({w}) > 4 AND suffix({w}, 'ies') THEN left({w}, length({w}) - 3) || 'y' "
            f"WHEN regexp_matches({w}, '(ss|sh|ch|x|z)es$') THEN left({w}, length({w}) - 2) "
            f"WHEN regexp_matches({w}, '(ss|us|is)$') THEN {w} "
            f"WHEN suffix({w}, 's') THEN left({w}, length({w}) - 1) ELSE {w} END")


def words_sql(text: str) -> str:
    """SQL: the list of words (stemmed, in order) of the VARCHAR expression `text`; NULL -> []."""
    raw = f"regexp_extract_all(replace(lower(coalesce({text}, '')), '’', ''''), '{_WORD_RE_SQL}')"
    return f"list_transform(list_transform({raw}, lambda w0: regexp_replace(w0, '''s$', '')), lambda w: {_stem('w')})"


def terms_sql(words: str) -> str:
    """SQL: the distinct words and bigrams of a word list expression (from `words_sql`)."""
    bigrams = f"list_transform(range(1, len({words})), lambda i: {words}[i] || ' ' || {words}[i + 1])"
    return f"list_distinct(list_concat({words}, {bigrams}))"


def prefix_upper(prefix: str) -> str:
    """The smallest string above every string starting with prefix (for a range scan)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
