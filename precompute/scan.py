"""Stream a store through an SAE and keep, per feature, what the explorer shows.

Pass 1 (`scan_features`): exact top-N samples per feature (ties broken by smaller sample_id),
firing counts, sums and maxima, each sample's most active features and the SAE's quality
metrics. Pass 2 (`scan_quantiles`): per-feature histograms on log-spaced bins and a deterministic
sample of firing samples from each activation bin. Both read each chunk in the coordinate form
of `precompute.encoding`, so their cost follows the firing entries, not samples x d_sae.
Memory is bounded by O(N x d_sae + chunk), never by the store size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from precompute.coactivation import PairCounts, SparsePairCounts, pair_counter
from precompute.encoding import ChunkEncoder, SampleCode
from precompute.scan_device import feature_counts, merge_top_fixed, read_ahead, sample_top_fixed
from sae_core import distributed
from sae_core.metrics import MetricsAccumulator
from sae_core.model import SparseAutoencoder, check_finite
from sae_core.progress import progress
from sae_core.store import ActivationStore

N_HIST_BINS = 24
HIST_DECADES = 4.0
"""Histograms cover [max / 10^4, max] in log-spaced bins."""


@dataclass
class ScanResult:
    top_values: np.ndarray
    """[N, d_sae] float32 descending scores (-inf where fewer than N samples fired)."""
    top_ids: np.ndarray
    """[N, d_sae] int64 sample ids (-1 where empty)."""
    n_fired: np.ndarray
    sum_scores: np.ndarray
    max_scores: np.ndarray
    sample_top_ids: np.ndarray
    """[n_samples, m] each sample's most active features (by score)."""
    sample_top_values: np.ndarray
    sample_ids: np.ndarray
    """[n_samples] in store order."""
    metrics: dict
    co_counts: PairCounts | None = None
    """Samples on which two features both fire (`precompute.coactivation`), every rank's merged."""


DENSE_BUDGET = 1 << 27
"""Elements of one dense [rows, d_sae] array a scan chunk may hold (512 MB in float32)."""
GPU_DENSE_BUDGET = 1 << 29
"""On a GPU (2 GB in float32): per-chunk overheads (host syncs, launches) need big chunks there."""


def chunk_size(chunk_samples: int, tokens_per_sample: int, d_sae: int, device: str = "cpu") -> int:
    """Samples per chunk: at most `chunk_samples`, and few enough that the chunk's dense latents
    [samples * tokens, d_sae] stay within DENSE_BUDGET (patch stores have many rows per sample)."""
    budget = GPU_DENSE_BUDGET if torch.device(device).type == "cuda" else DENSE_BUDGET
    return max(1, min(chunk_samples, budget // (tokens_per_sample * d_sae)))


def _sample_chunks(store: ActivationStore, chunk_samples: int, first: int = 0, stop: int | None = None,
                   device: str = "cpu"):
    """(first sample, float32 acts on `device`) per chunk; a GPU gets the stored dtype and converts,
    each chunk read and pinned on a thread while the one before is scanned (`scan_device.read_ahead`)."""
    T = store.tokens_per_sample
    stop = store.n_samples if stop is None else stop
    on_gpu = torch.device(device).type == "cuda"
    chunks = store.iter_chunks(n_rows=chunk_samples * T, start_row=first * T, end_row=stop * T, stored_dtype=on_gpu)
    for first_row, acts in read_ahead(chunks, pin=True) if on_gpu else chunks:
        yield first_row // T, acts.to(device, non_blocking=True).float()


@torch.no_grad()
def scan_features(sae: SparseAutoencoder, store: ActivationStore, top_n: int = 64, sample_top_m: int = 16,
                  chunk_samples: int = 4096, device: str = "cpu", precision: str = "float32") -> ScanResult:
    """Under torchrun (an initialised process group) each rank scans a slice of whole chunks and
    every rank returns the merged result, equal bit for bit to the single-process one.
    `precision` is that of `precompute.encoding.ChunkEncoder` (float32 or bfloat16 candidates)."""
    sae = sae.to(device).eval()
    d = distributed.current()
    d_sae, T = sae.cfg.d_sae, store.tokens_per_sample
    chunk_samples = chunk_size(chunk_samples, T, d_sae, device)
    encoder = ChunkEncoder(sae, T, precision)
    ids_all = store.sample_ids()
    lo, hi = distributed.split_range(store.n_samples, chunk_samples, d)
    best_v = torch.full((top_n, d_sae), -torch.inf, device=device)
    best_i = torch.full((top_n, d_sae), -1, dtype=torch.long, device=device)
    n_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    sum_s = torch.zeros(d_sae, dtype=torch.float64, device=device)
    max_s = torch.zeros(d_sae, device=device)
    m = min(sample_top_m, d_sae)
    # On a GPU: merges without host syncs, and each chunk's sample tops copied asynchronously into
    # pinned host memory (scan_device); on the CPU the filtered merges sort fewer entries.
    on_gpu = torch.device(device).type == "cuda"
    merge, tops = (merge_top_fixed, sample_top_fixed) if on_gpu else (merge_top, sample_top)
    st_ids = torch.zeros((hi - lo, m), dtype=torch.int32, pin_memory=on_gpu)
    st_vals = torch.zeros((hi - lo, m), dtype=torch.float32, pin_memory=on_gpu)
    acc = MetricsAccumulator(d_sae)
    coact = pair_counter(d_sae, device)
    parts: list[tuple] = []  # per-chunk float sums, folded in store order at the end (torchrun only; on the CPU)
    bar = progress(total=hi - lo, desc="scan", unit="img")
    for first, acts in _sample_chunks(store, chunk_samples, lo, hi, device):
        check_finite(acts, f"{store.dpath}")
        code, x_hat, fire = encoder.encode(acts, reconstruct=True)
        n = acts.shape[0] // T
        chunk_acc = MetricsAccumulator(d_sae) if d.enabled else acc
        chunk_acc.update_counts(acts * sae.input_scale, x_hat * sae.input_scale, fire)
        counts = feature_counts(code.feats, d_sae) if on_gpu else torch.bincount(code.feats, minlength=d_sae)
        chunk_sum = feature_sums(code, counts)
        coact.update(code, n)
        if d.enabled:
            chunk_acc.sum_x = chunk_acc.sum_x.cpu()  # fire_counts are on the CPU already
            parts.append((chunk_acc, chunk_sum.cpu()))
        else:
            sum_s += chunk_sum
        ids = torch.as_tensor(ids_all[first : first + n], device=device)
        best_v, best_i = merge(best_v, best_i, code, ids)
        n_fired += counts
        max_s.scatter_reduce_(0, code.feats, code.values, "amax")
        v, i = tops(code, n, m)
        st_vals[first - lo : first - lo + n].copy_(v, non_blocking=on_gpu)
        st_ids[first - lo : first - lo + n].copy_(i, non_blocking=on_gpu)
        bar.update(n)
    bar.close()
    if on_gpu:
        torch.cuda.synchronize(device)  # the asynchronous copies into st_vals / st_ids have landed
    st_ids, st_vals = st_ids.numpy(), st_vals.numpy()
    co = _merged_pairs(coact.pairs())
    if not d.enabled:
        return ScanResult(best_v.cpu().numpy(), best_i.cpu().numpy(), n_fired.cpu().numpy(), sum_s.cpu().numpy(),
                          max_s.cpu().numpy(), st_ids, st_vals, ids_all, acc.result(), co)

    gather = distributed.all_gather_arrays
    best_v, best_i = merge_top_lists([torch.from_numpy(a) for a in gather(best_v)], [torch.from_numpy(a) for a in gather(best_i)])
    n_fired = np.sum(gather(n_fired[None]), axis=0)[0]
    max_s = np.max(gather(max_s[None]), axis=0)[0]
    # Sequential float sums depend on their order: fold the chunks' partial sums in store order,
    # rank after rank, exactly as the single-process loop adds them.
    total = distributed.fold_in_rank_order(torch.zeros(d_sae, dtype=torch.float64), [p[1] for p in parts], torch.add)
    acc = distributed.fold_in_rank_order(MetricsAccumulator(d_sae), [p[0] for p in parts], MetricsAccumulator.add)
    return ScanResult(best_v.numpy(), best_i.numpy(), n_fired, total.numpy(), max_s, np.concatenate(gather(st_ids)),
                      np.concatenate(gather(st_vals)), ids_all, acc.result(), co)


def _merged_pairs(own: PairCounts) -> PairCounts:
    """Every rank's pair counts summed (integers: the same table as one process while no rank had
    to drop rare pairs), kept within the sparse counter's pair limit."""
    gather = distributed.all_gather_arrays
    keys, counts = gather(own.keys), gather(own.counts)
    fired, under = gather(own.fired[None]), gather(np.array([own.undercount]))
    parts = [PairCounts(own.d_sae, k, c, f[0], int(u[0])) for k, c, f, u in zip(keys, counts, fired, under)]
    return PairCounts.merge(parts, SparsePairCounts.MAX_PAIRS)


def feature_sums(code: SampleCode, counts: torch.Tensor) -> torch.Tensor:
    """Per-feature float64 sums of a chunk's scores in a fixed order on each device, so builds
    repeat bit for bit (`index_add_` on CUDA adds in a racy order, which would make files differ).
    `counts` must be the bincount of `code.feats`."""
    order = torch.argsort(code.feats, stable=True)
    return torch.segment_reduce(code.values[order].double(), "sum", lengths=counts, unsafe=True)


def sample_top(code: SampleCode, n_rows: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's m highest-scoring features (score desc, feature asc) as values [n, m] and int32
    ids [n, m]; rows with fewer than m firing features are padded with (0, 0)."""
    values = torch.zeros((n_rows, m), dtype=torch.float32, device=code.values.device)
    ids = torch.zeros((n_rows, m), dtype=torch.int32, device=code.values.device)
    if code.rows.numel():
        rank, order = _rank_in_groups(code.rows, _score_id_key(code.values, code.feats), descending=True)
        keep = rank < m
        sel = order[keep]
        values[code.rows[sel], rank[keep]] = code.values[sel]
        ids[code.rows[sel], rank[keep]] = code.feats[sel].int()
    return values, ids


def merge_top(best_v: torch.Tensor, best_i: torch.Tensor, code: SampleCode, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a chunk's positive scores into the running top-N lists [N, d]; `ids` [n] are the
    chunk's sample ids.

    Order is (score desc, sample_id asc). Only entries that beat the current N-th best of their
    feature are considered; they and the kept entries are ranked with one composite-key sort, so
    the cost follows the number of candidates, not n x d.
    """
    top_n, d_sae = best_v.shape
    r, f, v = code
    sid = ids[r]
    thr_v, thr_i = best_v[-1, f], best_i[-1, f]
    beats = (v > thr_v) | ((v == thr_v) & (sid < thr_i))
    if not bool(beats.any()):
        return best_v, best_i
    f, v, sid = f[beats], v[beats], sid[beats]
    kr, kf = torch.nonzero(best_i >= 0, as_tuple=True)
    all_f = torch.cat([kf, f])
    all_v = torch.cat([best_v[kr, kf], v])
    all_i = torch.cat([best_i[kr, kf], sid])
    rank, order = _rank_in_groups(all_f, _score_id_key(all_v, all_i), descending=True)
    keep = rank < top_n
    new_v = torch.full_like(best_v, -torch.inf)
    new_i = torch.full_like(best_i, -1)
    slot, feat = rank[keep], all_f[order][keep]
    new_v[slot, feat] = all_v[order][keep]
    new_i[slot, feat] = all_i[order][keep]
    return new_v, new_i


_ID_BITS = 31
_MAX_ID = (1 << _ID_BITS) - 1


def _score_id_key(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering (score desc, id asc) when sorted descending; scores must be positive.

    The IEEE bits of a positive float32 increase with its value, so (bits << 31) | (MAX - id)
    packs both orders into one integer.
    """
    bits = values.float().contiguous().view(torch.int32).long()
    return (bits << _ID_BITS) | (_MAX_ID - ids)


def _rank_in_groups(groups: torch.Tensor, keys: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank of each sorted entry within its group, the sorting permutation): sort by key, then stably by group."""
    order = torch.argsort(keys, descending=descending, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    g = groups[order]
    counts = torch.bincount(g)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(len(g), device=g.device) - starts[g], order


def merge_top_lists(values: list[torch.Tensor], ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge several top-N lists [N, d] (e.g. one per rank) by the same (score desc, sample_id asc) rule."""
    return _select_top(torch.cat(values, 0), torch.cat(ids, 0), values[0].shape[0])


def _select_top(cand_v: torch.Tensor, cand_i: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First top_n candidates per column by (score desc, id asc); -inf scores get id -1."""
    by_id = torch.argsort(torch.where(cand_i < 0, torch.iinfo(torch.long).max, cand_i), dim=0, stable=True)
    cand_v, cand_i = cand_v.gather(0, by_id), cand_i.gather(0, by_id)
    order = torch.argsort(cand_v, dim=0, descending=True, stable=True)[:top_n]
    new_v, new_i = cand_v.gather(0, order), cand_i.gather(0, order)
    return new_v, torch.where(torch.isinf(new_v), -1, new_i)


@dataclass
class QuantileResult:
    hist_edges: np.ndarray
    """[d_sae, N_HIST_BINS + 1]"""
    hist_counts: np.ndarray
    """[d_sae, N_HIST_BINS]"""
    q_ids: np.ndarray
    """[d_sae, n_bins, per_bin] sample ids, -1 where a bin has fewer samples."""
    q_values: np.ndarray


@torch.no_grad()
def scan_quantiles(sae: SparseAutoencoder, store: ActivationStore, max_scores: np.ndarray, n_bins: int = 10,
                   per_bin: int = 8, chunk_samples: int = 4096, seed: int = 0, device: str = "cpu",
                   precision: str = "float32") -> QuantileResult:
    """Histogram every feature's positive scores and keep `per_bin` samples per activation bin.

    Bins split [0, max] into `n_bins` equal intervals; within a bin the kept samples are those
    with the smallest pseudo-random key (a hash of seed, feature and sample id): deterministic,
    uniform, and independent of chunking. Equal keys keep the sample earlier in the store. Under
    torchrun each rank scans a slice and the reservoirs merge to the single-process result.
    """
    sae = sae.to(device).eval()
    d = distributed.current()
    d_sae, T = sae.cfg.d_sae, store.tokens_per_sample
    chunk_samples = chunk_size(chunk_samples, T, d_sae, device)
    lo, hi = distributed.split_range(store.n_samples, chunk_samples, d)
    ids_all = store.sample_ids()
    mx = torch.as_tensor(max_scores, device=device).clamp_min(1e-12)
    log_hi = mx.log10()
    edges = (log_hi[:, None] - HIST_DECADES + torch.linspace(0, HIST_DECADES, N_HIST_BINS + 1, device=device)[None, :])
    counts = torch.zeros(d_sae, N_HIST_BINS, dtype=torch.long, device=device)
    keys = torch.full((n_bins, per_bin, d_sae), _EMPTY, dtype=torch.long, device=device)
    kid = torch.full((n_bins, per_bin, d_sae), -1, dtype=torch.long, device=device)
    kval = torch.zeros((n_bins, per_bin, d_sae), device=device)
    encoder = ChunkEncoder(sae, T, precision)
    bar = progress(total=hi - lo, desc="quantiles", unit="img")
    for first, acts in _sample_chunks(store, chunk_samples, lo, hi, device):
        (r, f, v), _, _ = encoder.encode(acts)
        n = acts.shape[0] // T
        ids = torch.as_tensor(ids_all[first : first + n], device=device)
        log_v = v.log10()
        hbin = ((log_v - edges[f, 0]) / (HIST_DECADES / N_HIST_BINS)).floor().long().clamp(0, N_HIST_BINS - 1)
        in_range = log_v >= edges[f, 0]
        counts += torch.bincount(f[in_range] * N_HIST_BINS + hbin[in_range], minlength=d_sae * N_HIST_BINS).view(d_sae, N_HIST_BINS)
        b = (v / mx[f] * n_bins).ceil().long().clamp(1, n_bins) - 1
        key = (_hash31(ids[r] * 1_000_003 + f + seed * 7_777_777) << _ID_BITS) | ids[r]
        beats = key < keys[b, -1, f]
        if beats.any():
            keys, kid, kval = _merge_reservoir(keys, kid, kval, b[beats], f[beats], key[beats], ids[r][beats], v[beats])
        bar.update(n)
    bar.close()
    if d.enabled:  # concatenated in rank (= store) order, so the stable sort breaks ties as one pass does
        gather = distributed.all_gather_arrays
        counts = torch.from_numpy(np.sum(gather(counts[None]), axis=0)[0])
        cand_k, cand_i, cand_v = (torch.from_numpy(np.concatenate(gather(t), axis=1)) for t in (keys, kid, kval))
        order = cand_k.argsort(dim=1, stable=True)[:, :per_bin]
        keys, kid, kval = cand_k.gather(1, order), cand_i.gather(1, order), cand_v.gather(1, order)
        edges = edges.cpu()
    kid = torch.where(keys == _EMPTY, -1, kid)
    kval = torch.where(keys == _EMPTY, 0.0, kval)
    edges_np = (10.0 ** edges.double()).cpu().numpy()
    return QuantileResult(edges_np, counts.cpu().numpy(), kid.permute(2, 0, 1).cpu().numpy(), kval.permute(2, 0, 1).cpu().numpy())


_EMPTY = torch.iinfo(torch.long).max


def _merge_reservoir(keys, kid, kval, b, f, key, ids, values):
    """Keep, per (bin, feature), the `per_bin` entries with the smallest keys among kept and new ones."""
    n_bins, per_bin, d_sae = keys.shape
    kb, ks, kf = torch.nonzero(keys != _EMPTY, as_tuple=True)
    all_b, all_f = torch.cat([kb, b]), torch.cat([kf, f])
    all_k = torch.cat([keys[kb, ks, kf], key])
    all_i = torch.cat([kid[kb, ks, kf], ids])
    all_v = torch.cat([kval[kb, ks, kf], values])
    rank, order = _rank_in_groups(all_f * n_bins + all_b, all_k, descending=False)
    keep = rank < per_bin
    sel = order[keep]
    slot, bb, ff = rank[keep], all_b[sel], all_f[sel]
    keys, kid, kval = torch.full_like(keys, _EMPTY), torch.full_like(kid, -1), torch.zeros_like(kval)
    keys[bb, slot, ff], kid[bb, slot, ff], kval[bb, slot, ff] = all_k[sel], all_i[sel], all_v[sel]
    return keys, kid, kval


def _hash31(x: torch.Tensor) -> torch.Tensor:
    """A cheap integer hash to 31 bits (splitmix-style mixing): pseudo-random, deterministic keys."""
    x = x & 0x7FFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0x7FFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0x7FFFFFFF
    return (x >> 16) ^ x


@torch.no_grad()
def patch_heatmaps(sae: SparseAutoencoder, store: ActivationStore, features: np.ndarray, sample_ids: np.ndarray,
                   device: str = "cpu", chunk_samples: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """uint8 patch maps [P, T] and scales [P] for (feature, sample) pairs; value * scale / 255 = activation.

    Only the samples named are re-encoded, a chunk at a time, so memory stays bounded.
    """
    T = store.tokens_per_sample
    chunk_samples = chunk_size(chunk_samples, T, sae.cfg.d_sae, device)  # dense [samples * T, d_sae] latents per chunk
    pos_of = {int(s): p for p, s in enumerate(store.sample_ids())}
    maps = np.zeros((len(features), T), dtype=np.uint8)
    scales = np.zeros(len(features), dtype=np.float32)
    wanted = np.unique(sample_ids[sample_ids >= 0])
    sae = sae.to(device).eval()
    for i in range(0, len(wanted), chunk_samples):
        chunk = wanted[i : i + chunk_samples]
        rows = np.concatenate([np.arange(pos_of[int(s)] * T, pos_of[int(s)] * T + T) for s in chunk])
        z = sae.encode(store.rows(rows).to(device)).view(len(chunk), T, -1)
        local = {int(s): j for j, s in enumerate(chunk)}
        pairs = np.nonzero(np.isin(sample_ids, chunk))[0]
        if not len(pairs):
            continue
        js = torch.as_tensor([local[int(sample_ids[p])] for p in pairs], device=device)
        fs = torch.as_tensor(features[pairs], device=device)
        m = z[js, :, fs].clamp_min(0).float().cpu()  # [pairs, T]
        scale = m.amax(1)
        maps[pairs] = (m / scale.clamp_min(1e-12)[:, None] * 255).round().to(torch.uint8).numpy()
        scales[pairs] = scale.numpy()
    return maps, scales
