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

import unicodedata

WORD_RE = r"[\p{L}\p{M}\p{N}_]+(?:'[\p{L}\p{M}\p{N}_]+)*"
_WORD_RE_SQL = WORD_RE.replace("'", "''")

STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to was were with".split())
"""Dropped from queries of several words: they match nearly every caption, and 'all of the words'
should mean the words that carry meaning. Phrases keep them."""


def _ends(w: str, *suffixes: str) -> str:
    return "(" + " OR ".join(f"suffix({w}, '{x}')" for x in suffixes) + ")"


def _stem(w: str) -> str:
    """Plain suffix tests, no regexes: a regex inside a lambda costs ~10 ms a query to set up."""
    return (f"CASE WHEN length({w}) <= 3 THEN {w} "
            f"WHEN length({w}) > 4 AND suffix({w}, 'ies') THEN left({w}, length({w}) - 3) || 'y' "
            f"WHEN {_ends(w, 'sses', 'shes', 'ches', 'xes', 'zes')} THEN left({w}, length({w}) - 2) "
            f"WHEN {_ends(w, 'ss', 'us', 'is')} THEN {w} "
            f"WHEN suffix({w}, 's') THEN left({w}, length({w}) - 1) ELSE {w} END")


def words_sql(text: str) -> str:
    """SQL: the list of words (stemmed, in order) of the VARCHAR expression `text`; NULL -> []."""
    raw = f"regexp_extract_all(replace(lower(coalesce({text}, '')), '’', ''''), '{_WORD_RE_SQL}')"
    unpossessed = "CASE WHEN suffix(w0, '''s') THEN left(w0, length(w0) - 2) ELSE w0 END"
    return f"list_transform(list_transform({raw}, lambda w0: {unpossessed}), lambda w: {_stem('w')})"


def terms_sql(words: str) -> str:
    """SQL: the distinct words and bigrams of a word list; `words` should name a column (it is
    repeated inside a lambda, so an expression would be evaluated once per word)."""
    bigrams = f"list_transform(range(1, len({words})), lambda i: {words}[i] || ' ' || {words}[i + 1])"
    return f"list_distinct(list_concat({words}, {bigrams}))"


def prefix_upper(prefix: str) -> str:
    """The smallest string above every string starting with prefix (for a range scan)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _is_word_char(c: str) -> bool:
    return c == "_" or unicodedata.category(c)[0] in "LMN"


def _lower(c: str) -> str:
    """DuckDB's lower(): the simple (one code point) mapping, so 'İ' -> 'i', not 'i̇'."""
    low = c.lower()
    return low if len(low) == 1 else ("i" if c == "İ" else c)


def _stem_py(w: str) -> str:
    if len(w) <= 3:
        return w
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is")):
        return w
    return w[:-1] if w.endswith("s") else w


def words(text: str | None) -> list[str]:
    """`words_sql` in Python, for queries (DuckDB compiles the Unicode regex anew for every
    query, ~10 ms); tests hold the two equal on a mixed-script corpus."""
    chars = [_lower(c) for c in (text or "").replace("’", "'")]
    out: list[str] = []
    cur: list[str] = []
    for i, c in enumerate(chars):
        if _is_word_char(c):
            cur.append(c)
        elif c == "'" and cur and i + 1 < len(chars) and _is_word_char(chars[i + 1]):
            cur.append(c)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return [_stem_py(w[:-2] if w.endswith("'s") else w) for w in out]
