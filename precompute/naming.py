"""Automatic names with a score: the caption/label words over-represented among a feature's top
samples, weighted by activation, each name stating how well it holds.

A word w describes a feature's NAME_TOP top samples S (activations a_s) with the activation-weighted
share p(w) = sum_{s in S, w in s} a_s / sum_s a_s. It names the feature when it is also
over-represented there: p(w) >= MIN_SHARE and p(w) >= MIN_LIFT x its dataset rate q(w) (the
fraction of all samples carrying w). Words are ranked by p log2(p / q), so a word must be both
common among the top samples and rare elsewhere. The name's score is p of its leading word;
names scoring below WEAK_NAME_SCORE are weak (shown as such). Coverage says how much of the
dataset's samples carrying the leading word the feature's top list holds (out of at most N).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or the to with without this that these those "
    "there their his her he she they them we you your our my me i not no so but if then than very just into "
    "over under up down out off one two".split()
)
_WORD = re.compile(r"[a-z][a-z0-9'-]{1,}")

NAME_TOP = 16
"""Names describe a feature's 16 most activating samples (the first row a user sees): below them a
mass of middling activations would otherwise outvote what makes the feature fire most."""
MIN_SHARE = 0.3
"""A name word describes at least this activation-weighted share of the top samples."""
MIN_LIFT = 2.0
"""...and is at least this many times as common among them as in the whole dataset."""
WEAK_NAME_SCORE = 0.5
"""Names whose leading word describes less than half the top samples (by activation) are weak."""
MIN_COUNT = 2
"""A name word is carried by at least this many top samples (when the feature has 4 or more)."""


LABEL_LEVELS = " / "
"""Separator of a hierarchical label (`style / category / subcategory`)."""


def words_of(caption: str | None, label: str | None) -> list[str]:
    """Lower-case caption words (stop words dropped) plus the label as tokens: the whole label and,
    for a hierarchical `a / b / c`, each of its prefixes `a` and `a / b`, so a feature whose top
    samples share only the upper level (one art style over many sub-categories) is named by it."""
    words = [w for w in _WORD.findall((caption or "").lower()) if w not in STOP_WORDS]
    if label:
        parts = label.lower().split(LABEL_LEVELS)
        words += [LABEL_LEVELS.join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class FeatureName:
    words: tuple[str, ...]
    score: float
    """Activation-weighted share of the top samples carrying the leading word (0 when unnamed)."""
    coverage: float
    """Top samples carrying the leading word / min(dataset samples carrying it, top samples)."""

    @property
    def text(self) -> str:
        return ", ".join(self.words)

    @property
    def weak(self) -> bool:
        return self.score < WEAK_NAME_SCORE


UNNAMED = FeatureName((), 0.0, 0.0)


def _same_chain(a: str, b: str) -> bool:
    """Whether two label tokens are one a level of the other (`a` and `a / b`): a name keeps only
    the more telling of them instead of repeating the hierarchy."""
    return a.startswith(b + LABEL_LEVELS) or b.startswith(a + LABEL_LEVELS)


class ContrastNamer:
    """Names sets of samples against one dataset's documents (word lists indexed by sample id)."""

    def __init__(self, docs: list[list[str]]):
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, doc in enumerate(docs):
            for w in doc:
                rows.append(i)
                cols.append(vocab.setdefault(w, len(vocab)))
        self.words = np.array(list(vocab), dtype=object)
        self.n_docs = max(len(docs), 1)
        self.doc_term = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(docs), len(vocab)))
        self.df = np.asarray(self.doc_term.sum(0)).ravel()

    def name_all(self, ids: np.ndarray, weights: np.ndarray, n_words: int = 3) -> list[FeatureName]:
        """One name per row of `ids` [groups, n] (sample ids, -1 for none) weighted by `weights` [groups, n] (>= 0)."""
        ids = np.asarray(ids)
        n_groups = ids.shape[0]
        valid = (ids >= 0) & (np.asarray(weights) > 0)
        g, j = np.nonzero(valid)
        w = np.asarray(weights, np.float64)[g, j]
        totals = np.bincount(g, weights=w, minlength=n_groups)
        n_members = np.bincount(g, minlength=n_groups)
        member = sp.csr_matrix((w / totals[g], (g, ids[g, j])), shape=(n_groups, self.doc_term.shape[0]))
        counted = sp.csr_matrix((np.ones(len(g)), (g, ids[g, j])), shape=member.shape)
        share = (member @ self.doc_term).tocoo()
        count = np.asarray((counted @ self.doc_term)[share.row, share.col]).ravel()
        return self._pick(share.row, share.col, share.data, count, n_members, n_groups, n_words)

    def _pick(self, grp, word, p, count, n_members, n_groups, n_words) -> list[FeatureName]:
        q = self.df[word] / self.n_docs
        min_count = np.where(n_members[grp] >= 4, MIN_COUNT, 1)
        ok = (p >= MIN_SHARE) & (p >= MIN_LIFT * q) & (count >= min_count)
        grp, word, p, count, q = grp[ok], word[ok], p[ok], count[ok], q[ok]
        contrast = p * np.log2(p / q)
        order = np.lexsort((self.words[word].astype(str), -contrast, grp))  # ties: alphabetical
        names = [UNNAMED] * n_groups
        chosen: dict[int, list[int]] = defaultdict(list)
        for i in order:
            picked = chosen[grp[i]]
            if len(picked) < n_words and not any(_same_chain(self.words[word[i]], self.words[word[j]]) for j in picked):
                picked.append(i)
        for gi, picks in chosen.items():
            lead = picks[0]
            cover = count[lead] / max(min(self.df[word[lead]], n_members[gi]), 1)
            names[gi] = FeatureName(tuple(str(self.words[word[i]]) for i in picks), float(p[lead]), float(cover))
        return names

    def name(self, ids: list[int], weights: list[float] | None = None, n_words: int = 3) -> FeatureName:
        """One group's name (equal weights unless given)."""
        if not ids:
            return UNNAMED
        w = np.ones(len(ids)) if weights is None else np.asarray(weights, np.float64)
        return self.name_all(np.asarray([ids]), w[None, :], n_words)[0]


def cluster_name(member_names: list[FeatureName], n_words: int = 2) -> tuple[str, float]:
    """A feature cluster's name from its members' names, each word weighted by the member's score;
    the returned score is the leading word's weight over the number of members (0..1)."""
    weight: dict[str, float] = defaultdict(float)
    for nm in member_names:
        for w in nm.words:
            weight[w] += nm.score
    if not weight or not member_names:
        return "", 0.0
    best = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]
    return ", ".join(w for w, _ in best), best[0][1] / len(member_names)


def entropy_bits(counts: list[int]) -> float | None:
    """Shannon entropy in bits of a label distribution; exactly 0.0 (never -0.0) for one label."""
    total = sum(counts)
    if not total:
        return None
    p = np.asarray(counts, np.float64) / total
    return float(max(0.0, -(p * np.log2(p)).sum()) + 0.0)
