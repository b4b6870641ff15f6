"""Automatic names: the words most distinctive of a feature's top samples (TF-IDF vs the dataset)."""

from __future__ import annotations

import math
import re
from collections import Counter

STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or the to with without this that these those "
    "there their his her he she they them we you your our my me i not no so but if then than very just into "
    "over under up down out off one two".split()
)
_WORD = re.compile(r"[a-z][a-z0-9'-]{1,}")


def words_of(caption: str | None, label: str | None) -> list[str]:
    """Lower-case caption words (stop words dropped) plus the label as one token."""
    words = [w for w in _WORD.findall((caption or "").lower()) if w not in STOP_WORDS]
    if label:
        words.append(label.lower())
    return list(dict.fromkeys(words))


class TfIdfNamer:
    def __init__(self, docs: list[list[str]]):
        self.docs = docs
        self.n_docs = max(len(docs), 1)
        df = Counter(w for doc in docs for w in set(doc))
        self.idf = {w: math.log(self.n_docs / c) for w, c in df.items()}

    def name(self, doc_indices: list[int], n_words: int = 3) -> str:
        """Top words by (count among the given docs) x idf; ties broken alphabetically."""
        tf = Counter(w for i in doc_indices for w in self.docs[i])
        if not tf:
            return ""
        scored = sorted(tf.items(), key=lambda kv: (-kv[1] * self.idf.get(kv[0], 0.0), kv[0]))
        min_count = 2 if len(doc_indices) >= 4 else 1
        chosen = [w for w, c in scored if c >= min_count][:n_words] or [scored[0][0]]
        return ", ".join(chosen)
