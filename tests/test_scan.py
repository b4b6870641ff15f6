"""The streaming scan finds exactly what a brute-force computation over the whole store finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.scan import patch_heatmaps, scan_features, scan_quantiles
from sae_core.checkpoint import load
from sae_core.errors import ConfigError
from sae_core.store import ActivationStore
from tests.precompute_helpers import make_sae, make_store


def brute_top(scores: np.ndarray, ids: np.ndarray, top_n: int):
    """Per feature: positive scores sorted by (score desc, sample_id asc), first top_n."""
    out_v = np.full((top_n, scores.shape[1]), -np.inf, dtype=np.float32)
    out_i = np.full((top_n, scores.shape[1]), -1, dtype=np.int64)
    for f in range(scores.shape[1]):
        pos = np.nonzero(scores[:, f] > 0)[0]
        order = sorted(pos, key=lambda r: (-scores[r, f], ids[r]))[:top_n]
        out_v[: len(order), f] = scores[order, f]
        out_i[: len(order), f] = ids[order]
    return out_v, out_i


@pytest.fixture(params=[(1, None, "relu"), (4, (2, 2), "relu"), (1, None, "topk"), (4, (2, 2), "topk")],
                ids=["dense-relu", "patches-relu", "dense-topk", "patches-topk"])
def setup(request, tmp_path):
    """ReLU SAEs take the dense encoder path of `precompute.encoding`, TopK SAEs the sparse one."""
    T, grid, arch = request.param
    rng = np.random.default_rng(1)
    n, d_in, d_sae = 230, 12, 40
    acts = rng.normal(size=(n * T, d_in)).astype(np.float32)
    acts[5 * T : 6 * T] = acts[17 * T : 18 * T]  # identical samples give exact ties
    store_dpath = make_store(tmp_path, acts, tokens_per_sample=T, grid=grid, shard_samples=37)
    sae = load(make_sae(tmp_path, d_in, d_sae, arch=arch, k=6, store_dpath=store_dpath))
    store = ActivationStore(store_dpath)
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(acts)).numpy()
    scores = z.reshape(n, T, d_sae).max(1)
    return sae, store, scores, z, T


@pytest.mark.parametrize("chunk", [16, 1000])
def test_top_n_matches_brute_force_with_ties(setup, chunk):
    sae, store, scores, _, _ = setup
    ids = np.arange(scores.shape[0])
    result = scan_features(sae, store, top_n=7, chunk_samples=chunk)
    want_v, want_i = brute_top(scores, ids, 7)
    np.testing.assert_array_equal(result.top_ids, want_i)
    np.testing.assert_allclose(result.top_values, want_v, rtol=1e-6)
    tied = [f for f in range(scores.shape[1]) if 0 < scores[5, f] and 5 in want_i[:, f]]
    for f in tied:  # the earlier duplicate always ranks directly before the later one
        col = list(want_i[:, f])
        if 17 in col:
            assert col.index(5) + 1 == col.index(17)


def test_statistics_and_sample_top(setup):
    sae, store, scores, z, _ = setup
    result = scan_features(sae, store, top_n=5, sample_top_m=3, chunk_samples=50)
    np.testing.assert_array_equal(result.n_fired, (scores > 0).sum(0))
    np.testing.assert_allclose(result.max_scores, scores.max(0).clip(min=0), rtol=1e-6)
    np.testing.assert_allclose(result.sum_scores, scores.clip(min=0).sum(0), rtol=1e-5)
    want = np.sort(scores, axis=1)[:, ::-1][:, :3].clip(min=0)
    np.testing.assert_allclose(result.sample_top_values, want, rtol=1e-6)
    firing = result.sample_top_values > 0
    got_scores = np.take_along_axis(scores, result.sample_top_ids.astype(np.int64), axis=1)
    np.testing.assert_allclose(got_scores[firing], result.sample_top_values[firing], rtol=1e-6)
    assert result.metrics["l0"] == pytest.approx((z > 0).sum(1).mean())
    np.testing.assert_allclose(1 - result.metrics["dead_fraction"], (z > 0).any(0).mean())


def test_quantile_samples_lie_in_their_bins_and_histograms_count_firing_samples(setup):
    sae, store, scores, _, _ = setup
    scan = scan_features(sae, store, top_n=5)
    q = scan_quantiles(sae, store, scan.max_scores, n_bins=4, per_bin=3, chunk_samples=29)
    q2 = scan_quantiles(sae, store, scan.max_scores, n_bins=4, per_bin=3, chunk_samples=1000)
    np.testing.assert_array_equal(q.q_ids, q2.q_ids)  # independent of chunking
    for f in range(scores.shape[1]):
        mx = scores[:, f].max()
        for b in range(4):
            members = set(np.nonzero((scores[:, f] > 0) & (np.clip(np.ceil(scores[:, f] / mx * 4), 1, 4) - 1 == b))[0])
            kept = [int(s) for s in q.q_ids[f, b] if s >= 0]
            assert set(kept) <= members
            assert len(kept) == min(3, len(members))
        in_range = (scores[:, f] > 0) & (np.log10(np.maximum(scores[:, f], 1e-30)) >= np.log10(q.hist_edges[f, 0]) - 1e-6)
        assert abs(int(q.hist_counts[f].sum()) - int(in_range.sum())) <= 1


def test_patch_heatmaps_quantise_the_feature_map(setup):
    sae, store, scores, z, T = setup
    if T == 1:
        pytest.skip("heatmaps are for patch stores")
    feats = np.array([0, 3, 3])
    samples = np.array([10, 10, 200])
    maps, scales = patch_heatmaps(sae, store, feats, samples)
    for (f, s), m, sc in zip(zip(feats, samples), maps, scales):
        ref = z[s * T : s * T + T, f].clip(min=0)
        np.testing.assert_allclose(sc, ref.max(), rtol=1e-5)
        np.testing.assert_allclose(m.astype(np.float32) * sc / 255, ref, atol=sc / 255 + 1e-6)


@pytest.mark.parametrize("tokens", [1, 4])
def test_bfloat16_candidates_rescored_in_float32_match_the_exact_scan(tmp_path, tokens):
    """The fast TopK path (bfloat16 matmul picks k + margin candidates, float32 re-scores them)
    gives float32 values and, with a margin, the same lists as the float32 scan."""
    rng = np.random.default_rng(3)
    n, d_in, d_sae = 300, 64, 256
    acts = rng.normal(size=(n * tokens, d_in)).astype(np.float32)
    store_dpath = make_store(tmp_path, acts, tokens_per_sample=tokens, grid=None if tokens == 1 else (2, 2), shard_samples=64)
    sae = load(make_sae(tmp_path, d_in, d_sae, arch="topk", k=8, store_dpath=store_dpath))
    store = ActivationStore(store_dpath)
    exact = scan_features(sae, store, top_n=10, chunk_samples=70)
    fast = scan_features(sae, store, top_n=10, chunk_samples=70, precision="bfloat16")
    same = (fast.top_ids == exact.top_ids) & (exact.top_ids >= 0)
    assert same.sum() >= 0.99 * (exact.top_ids >= 0).sum()
    np.testing.assert_allclose(fast.top_values[same], exact.top_values[same], rtol=1e-5)
    np.testing.assert_allclose(fast.metrics["fvu"], exact.metrics["fvu"], rtol=1e-3)
    q_exact = scan_quantiles(sae, store, exact.max_scores, n_bins=4, per_bin=3, chunk_samples=70)
    q_fast = scan_quantiles(sae, store, exact.max_scores, n_bins=4, per_bin=3, chunk_samples=70, precision="bfloat16")
    assert (q_fast.hist_counts == q_exact.hist_counts).mean() > 0.99


def test_bfloat16_candidates_survive_a_large_shared_bias(tmp_path):
    """A bias far from zero must not be rounded into the candidates' ranking (it is added in float32)."""
    from precompute.encoding import ChunkEncoder

    rng = np.random.default_rng(4)
    sae = load(make_sae(tmp_path, 64, 1024, arch="topk", k=16))
    with torch.no_grad():
        sae.b_enc.copy_(torch.from_numpy(rng.normal(0, 0.3, 1024).astype(np.float32) + 30))
    x = torch.from_numpy(rng.normal(size=(256, 64)).astype(np.float32))
    with torch.no_grad():
        exact = sae.encode_sparse(x)
        fast, fast_idx = ChunkEncoder(sae, 1, "bfloat16")._topk(x)
    same_rows = [set(a.tolist()) == set(b.tolist()) for a, b in zip(exact.indices, fast_idx)]
    assert np.mean(same_rows) >= 0.99
    np.testing.assert_allclose(np.sort(fast.numpy(), 1), np.sort(exact.values.numpy(), 1), rtol=1e-5)


def test_unknown_precision_is_refused():
    from sae_core.validate import resolve_precision

    assert resolve_precision("auto", "cpu") == "float32" and resolve_precision("auto", "cuda") == "bfloat16"
    with pytest.raises(ConfigError, match="precision='half'"):
        resolve_precision("half", "cpu")
