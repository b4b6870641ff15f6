"""Co-activation neighbours: features that fire on the same samples.

The scan adds, chunk by chunk, how many samples each pair of features fires on together (a
sample fires a feature when its score > 0, as for `density`); nothing is re-read afterwards.
Two features' similarity is the Jaccard index of their firing samples,
n_both / (n_f + n_g - n_both).

Two counters, chosen by `pair_counter`, give the same `PairCounts`:
- `CoactivationCounts` (d_sae <= COACT_DENSE_MAX): a dense [d_sae, d_sae] int32 array; each
  chunk's pairs are added with one index_add_ (cost: rows x m^2, m = most features on a row).
- `SparsePairCounts` (any d_sae): the distinct pairs f < g seen so far as sorted int64 keys
  f * d_sae + g with int32 counts. A TopK SAE fires k features per sample, so a sample adds
  k(k-1)/2 pairs and the distinct pairs are bounded by the data, not by d_sae^2. Memory: at most
  MAX_PAIRS pairs (12 bytes each) plus a pending buffer of at most a quarter of them, ~40 bytes x
  MAX_PAIRS at the peak of a merge (1.3 GB at the default). Exact while the distinct pairs fit;
  beyond MAX_PAIRS the rarest pairs are dropped (lossy counting: every pair seen on <= t samples
  goes, t the smallest count that halves the table), so a kept n_both can be low by at most
  `undercount` (the sum of those t) and every pair whose true count exceeds it is kept. The
  index stores that bound (index_meta `coactivation_undercount:<sae_id>`, 0 = exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from precompute.encoding import SampleCode

COACT_DENSE_MAX = 8192
"""Largest SAE counted densely: d_sae^2 int32 counts (256 MB at 8192); larger ones count sparsely."""

PAIR_BUDGET = 1 << 24
"""(feature, feature) pairs generated at once; a chunk's rows are taken in groups below it."""


@dataclass(eq=False)
class PairCounts:
    """Samples on which two features both fire: pairs f < g as sorted unique keys f * d_sae + g."""

    d_sae: int
    keys: np.ndarray
    """[P] int64, sorted, unique."""
    counts: np.ndarray
    """[P] int64 samples on which both fire (> 0)."""
    fired: np.ndarray
    """[d_sae] int64 samples on which each feature fires (the dense matrix's diagonal)."""
    undercount: int = 0
    """0 when exact; else the most any kept count can be below the truth (rare pairs were dropped)."""

    def __eq__(self, other) -> bool:
        return (isinstance(other, PairCounts) and self.d_sae == other.d_sae and self.undercount == other.undercount
                and all(np.array_equal(a, b) for a, b in ((self.keys, other.keys), (self.counts, other.counts),
                                                          (self.fired, other.fired))))

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> PairCounts:
        """From a symmetric [d, d] count matrix whose diagonal is each feature's firing count."""
        c = np.asarray(matrix, dtype=np.int64)
        f, g = np.nonzero(np.triu(c, 1))
        return cls(c.shape[0], f * c.shape[0] + g, c[f, g], np.diag(c).copy())

    @classmethod
    def merge(cls, parts: list[PairCounts], max_pairs: int | None = None) -> PairCounts:
        """Sum several ranks' counts (integer sums: any order gives the same result), then keep at
        most `max_pairs` pairs by the same rule as the scan; bounds add up, as a pair can be
        dropped on every rank."""
        if len(parts) == 1:  # one process: its keys are unique already
            uniq, counts = parts[0].keys, parts[0].counts
        else:
            uniq, inv = np.unique(np.concatenate([p.keys for p in parts]), return_inverse=True)
            weights = np.concatenate([p.counts for p in parts]).astype(np.float64)  # exact: counts < 2^53
            counts = np.bincount(inv.ravel(), weights=weights, minlength=len(uniq)).astype(np.int64)
        fired = np.sum([p.fired for p in parts], axis=0, dtype=np.int64)
        under = sum(p.undercount for p in parts)
        if max_pairs is not None and len(uniq) > max_pairs:
            t = prune_threshold(torch.from_numpy(counts), max_pairs)
            keep = counts > t
            uniq, counts, under = uniq[keep], counts[keep], under + t
        return cls(parts[0].d_sae, uniq, counts, fired, under)


def prune_threshold(counts: torch.Tensor, max_pairs: int) -> int:
    """Smallest t such that at most max_pairs // 2 counts exceed it (halving leaves room to grow)."""
    hist = torch.bincount(counts.long().clamp_max(1 << 20))
    above = counts.numel() - torch.cumsum(hist, 0)  # above[t] = counts > t
    return int(torch.nonzero(above <= max_pairs // 2)[0, 0])


def _padded_rows(code: SampleCode, n_rows: int) -> torch.Tensor:
    """Each row's firing features in ascending order, padded with -1 in front: [rows, m]."""
    per_row = torch.bincount(code.rows, minlength=n_rows)
    m = int(per_row.max())
    dev = code.rows.device
    pos = torch.arange(code.rows.numel(), device=dev) - (torch.cumsum(per_row, 0) - per_row)[code.rows]
    padded = torch.full((n_rows, m), -1, dtype=torch.long, device=dev)
    padded[code.rows, pos] = code.feats
    return padded.sort(dim=1).values  # ascending: a pair (i < j) of positions has f_i < f_j


def _pair_key_groups(padded: torch.Tensor, d: int, budget: int):
    """Keys f * d + g of the pairs f < g of each row, in groups of rows of at most ~`budget` pairs
    (-1 for pairs touching the padding; a >= 0 implies b > a)."""
    m = padded.shape[1]
    if m < 2:
        return
    iu, ju = torch.triu_indices(m, m, offset=1, device=padded.device)
    step = max(1, budget // len(iu))
    for i in range(0, padded.shape[0], step):
        a, b = padded[i : i + step, iu], padded[i : i + step, ju]
        yield torch.where(a >= 0, a * d + b, -1).flatten()


class CoactivationCounts:
    """Dense running counts; `matrix()` is [d_sae, d_sae] (symmetric, diagonal = n_fired). Only
    pairs f < g are added (half the scattered writes), into a flat array with one spare slot that
    absorbs the padding's pairs."""

    PAIR_BUDGET = PAIR_BUDGET

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        self.flat = torch.zeros(d_sae * d_sae + 1, dtype=torch.int32, device=device)

    @torch.no_grad()
    def update(self, code: SampleCode, n_rows: int) -> None:
        if not code.rows.numel():
            return
        d = self.d_sae
        self.flat[torch.arange(d, device=code.rows.device) * (d + 1)] += torch.bincount(code.feats, minlength=d).int()
        for keys in _pair_key_groups(_padded_rows(code, n_rows), d, self.PAIR_BUDGET):
            keys = torch.where(keys >= 0, keys, d * d)
            self.flat.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))

    def matrix(self) -> torch.Tensor:
        upper = self.flat[:-1].view(self.d_sae, self.d_sae)
        return upper + upper.T - torch.diag(upper.diagonal())

    def pairs(self) -> PairCounts:
        """The nonzero off-diagonal slots f < g of the flat array (already sorted), no d^2 copies."""
        d = self.d_sae
        flat = self.flat[:-1]
        keys = torch.nonzero(flat).flatten()
        keys = keys[keys // d != keys % d]
        fired = flat[torch.arange(d, device=flat.device) * (d + 1)]
        return PairCounts(d, keys.cpu().numpy(), flat[keys].long().cpu().numpy(), fired.long().cpu().numpy())


class SparsePairCounts:
    """Running sorted unique pair keys and counts (see the module docstring for the memory bound).
    New pairs wait in `pending` (each group already unique) until they reach a quarter of the
    table, then one linear merge (searchsorted) folds them in."""

    PAIR_BUDGET = PAIR_BUDGET
    MAX_PAIRS = 1 << 25
    """Distinct pairs kept (12 bytes each: 400 MB); past it the rarest are dropped."""
    PENDING_MIN = 1 << 22
    """Pending pairs always allowed before a merge (small tables merge less often)."""

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        self.keys = torch.zeros(0, dtype=torch.long, device=device)
        self.counts = torch.zeros(0, dtype=torch.int32, device=device)
        self.fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.n_pending = 0
        self.undercount = 0

    @torch.no_grad()
    def update(self, code: SampleCode, n_rows: int) -> None:
        if not code.rows.numel():
            return
        self.fired += torch.bincount(code.feats, minlength=self.d_sae)
        for keys in _pair_key_groups(_padded_rows(code, n_rows), self.d_sae, self.PAIR_BUDGET):
            uniq, counts = torch.unique(keys[keys >= 0], return_counts=True)
            self.pending.append((uniq, counts.int()))
            self.n_pending += len(uniq)
            if self.n_pending >= max(self.PENDING_MIN, len(self.keys) // 4):
                self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        keys = torch.cat([k for k, _ in self.pending])
        counts = torch.cat([c for _, c in self.pending])
        self.pending, self.n_pending = [], 0
        keys, inv = torch.unique(keys, return_inverse=True)
        counts = torch.zeros(len(keys), dtype=torch.int32, device=keys.device).index_add_(0, inv, counts)
        del inv
        at = torch.searchsorted(self.keys, keys)
        hit = at < len(self.keys)
        hit[hit.clone()] = self.keys[at[hit]] == keys[hit]
        self.counts.index_add_(0, at[hit], counts[hit])
        new = ~hit
        self.keys, self.counts = _insert_sorted(self.keys, self.counts, at[new], keys[new], counts[new])
        if len(self.keys) > self.MAX_PAIRS:
            t = prune_threshold(self.counts, self.MAX_PAIRS)
            keep = self.counts > t
            self.keys, self.counts, self.undercount = self.keys[keep], self.counts[keep], self.undercount + t

    def pairs(self) -> PairCounts:
        self._merge()
        return PairCounts(self.d_sae, self.keys.cpu().numpy(), self.counts.long().cpu().numpy(),
                          self.fired.cpu().numpy(), self.undercount)


def _insert_sorted(keys: torch.Tensor, counts: torch.Tensor, at: torch.Tensor, new_keys: torch.Tensor,
                   new_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert sorted new keys (absent from `keys`) before positions `at` of sorted `keys`: one linear pass."""
    n = len(keys) + len(new_keys)
    dest_new = at + torch.arange(len(new_keys), device=keys.device)
    is_new = torch.zeros(n, dtype=torch.bool, device=keys.device)
    is_new[dest_new] = True
    out_k = torch.empty(n, dtype=keys.dtype, device=keys.device)
    out_c = torch.empty(n, dtype=counts.dtype, device=keys.device)
    out_k[dest_new], out_c[dest_new] = new_keys, new_counts
    out_k[~is_new], out_c[~is_new] = keys, counts
    return out_k, out_c


def pair_counter(d_sae: int, device: str | torch.device) -> CoactivationCounts | SparsePairCounts:
    """The dense counter up to COACT_DENSE_MAX features (faster there), the sparse one above."""
    return CoactivationCounts(d_sae, device) if d_sae <= COACT_DENSE_MAX else SparsePairCounts(d_sae, device)


def top_coactivation(counts: PairCounts | np.ndarray, k: int, min_both: int = 2) -> tuple[np.ndarray, ...]:
    """Per feature, its k features with the highest Jaccard index of firing samples (ties: smaller id),
    among those firing together on at least `min_both` samples. `counts` is a PairCounts or a dense
    [d, d] matrix. Returns (feature, rank, neighbour, jaccard, n_both) row arrays, by feature then rank."""
    pc = counts if isinstance(counts, PairCounts) else PairCounts.from_dense(counts)
    d = pc.d_sae
    keep = pc.counts >= min_both
    f, g, c = pc.keys[keep] // d, pc.keys[keep] % d, pc.counts[keep]
    union = pc.fired[f] + pc.fired[g] - c
    jac = np.where(union > 0, c / np.maximum(union, 1), 0.0)
    f, g, c, jac = np.concatenate([f, g]), np.concatenate([g, f]), np.concatenate([c, c]), np.concatenate([jac, jac])
    pos = jac > 0
    f, g, c, jac = f[pos], g[pos], c[pos], jac[pos]
    order = np.lexsort((g, -jac, f))  # by feature, Jaccard descending, then the smaller neighbour id
    f, g, c, jac = f[order], g[order], c[order], jac[order]
    starts = np.searchsorted(f, f, side="left")
    rank = np.arange(len(f)) - starts
    top = rank < k
    return (f[top].astype(np.int32), rank[top].astype(np.int32), g[top].astype(np.int32), jac[top].astype(np.float32),
            c[top])
