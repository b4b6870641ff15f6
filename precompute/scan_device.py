"""The index scan's GPU side: chunks uploaded from pinned memory while the previous chunk is being
processed, and per-chunk merges with fixed shapes, so the host does not wait on the device mid-chunk.

The H200 profile of docs/benchmarks.md (#18) put the scan's time in host-to-device copies from
pageable memory (77 ms per 131,072 tokens) and in `nonzero` and boolean indexing, which synchronised
the stream 240 times, more than in the encoder's matmul. On a CPU neither costs anything, and
`precompute.scan` keeps its filtered merges there (fewer entries to sort); the functions here give
the same results bit for bit (tests/test_scan.py checks them against those on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from precompute.encoding import SampleCode


def read_ahead(chunks: Iterable[tuple[int, torch.Tensor]], pin: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """The (first_row, acts) items of `chunks`, each read on a thread while the one before is in use,
    and copied into pinned memory when `pin` (CUDA), so that `.to(device, non_blocking=True)` is an
    asynchronous DMA instead of a staged copy the host waits for."""
    source = iter(chunks)

    def load():
        item = next(source, None)
        if item is None:
            return None
        return item[0], item[1].pin_memory() if pin else item[1]

    with ThreadPoolExecutor(1, thread_name_prefix="saescope-scan-read") as pool:
        pending = pool.submit(load)
        while (item := pending.result()) is not None:
            pending = pool.submit(load)
            yield item


def feature_counts(feats: torch.Tensor, d_sae: int) -> torch.Tensor:
    """bincount(feats, minlength=d_sae) without a host sync: CUDA's bincount reads the maximum back
    to size its output."""
    return torch.zeros(d_sae, dtype=torch.long, device=feats.device).index_add_(0, feats, torch.ones_like(feats))


def _first_per_group(groups: torch.Tensor, keys: torch.Tensor, n_groups: int, per_group: int) -> torch.Tensor:
    """Positions [n_groups, per_group] of each group's `per_group` entries with the largest keys
    (ties: the earlier entry). Every group must hold at least `per_group` entries: the callers pad."""
    order = torch.argsort(keys, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    counts = feature_counts(groups, n_groups)
    starts = counts.cumsum(0) - counts
    return order[starts[:, None] + torch.arange(per_group, device=groups.device)[None, :]]


def merge_top_fixed(best_v: torch.Tensor, best_i: torch.Tensor, code: SampleCode, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`precompute.scan.merge_top` without a host sync: the chunk's entries and all N x d_sae kept
    slots (empty ones rank last) are ranked together and each feature's first N taken by position,
    where merge_top filters the candidates (boolean indexing) first."""
    from precompute.scan import _score_id_key

    top_n, d_sae = best_v.shape
    kept_f = torch.arange(d_sae, device=best_v.device).repeat(top_n)  # slot s of feature f is entry s * d_sae + f
    all_f = torch.cat([kept_f, code.feats])
    all_v = torch.cat([best_v.reshape(-1), code.values.float()])
    all_i = torch.cat([best_i.reshape(-1), ids[code.rows]])
    pos = _first_per_group(all_f, _score_id_key(all_v, all_i), d_sae, top_n).t()  # [N, d_sae]
    new_v = all_v[pos]
    return new_v, torch.where(torch.isinf(new_v), -1, all_i[pos])


def sample_top_fixed(code: SampleCode, n_rows: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`precompute.scan.sample_top` without a host sync: each row gets m (score 0, feature 0)
    padding entries, which rank below every firing one, and its first m are taken by position."""
    from precompute.scan import _score_id_key

    device = code.values.device
    pad_rows = torch.arange(n_rows, device=device).repeat_interleave(m)
    rows = torch.cat([code.rows, pad_rows])
    values = torch.cat([code.values.float(), torch.zeros(n_rows * m, device=device)])
    feats = torch.cat([code.feats, torch.zeros(n_rows * m, dtype=code.feats.dtype, device=device)])
    pos = _first_per_group(rows, _score_id_key(values, feats), n_rows, m)  # [n_rows, m]
    return values[pos], feats[pos].int()
