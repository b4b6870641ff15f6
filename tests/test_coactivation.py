"""Co-activation pair counts (`precompute.coactivation`): the sparse counter that serves SAEs of
any size equals the dense one and a brute-force count, finds a planted co-firing pair among
16,384 latents, keeps at most its pair limit (with a true bound when it must drop pairs), and
sums torchrun ranks to exactly the single-process counts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from precompute.coactivation import COACT_DENSE_MAX, CoactivationCounts, PairCounts, SparsePairCounts, pair_counter, top_coactivation
from precompute.encoding import SampleCode
from precompute.scan import scan_features
from sae_core.config import SAEConfig
from sae_core.model import SparseAutoencoder
from tests.precompute_helpers import make_sae, make_store


def _feed(counter, fires: np.ndarray, chunk: int = 64):
    """Feed a boolean [samples, d] firing matrix chunk by chunk, as the scan does."""
    for lo in range(0, len(fires), chunk):
        rows, feats = np.nonzero(fires[lo : lo + chunk])
        code = SampleCode(torch.as_tensor(rows), torch.as_tensor(feats), torch.ones(len(rows)))
        counter.update(code, len(fires[lo : lo + chunk]))
        yield counter


def _random_fires(seed: int, n: int, d: int, p: float, planted: list[tuple[int, int]] = ()) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fires = rng.random((n, d)) < p
    for a, b in planted:  # b fires wherever a does, and on a few samples more
        fires[:, b] = fires[:, a] | (rng.random(n) < p / 2)
    return fires


def test_sparse_and_dense_counters_give_identical_tables():
    fires = _random_fires(1, 700, 300, 0.03, planted=[(0, 7), (5, 250)])
    truth = fires.T.astype(np.int64) @ fires.astype(np.int64)
    dense = CoactivationCounts(300, "cpu")
    sparse = SparsePairCounts(300, "cpu")
    sparse.PENDING_MIN = 200  # many merges of pending pairs into the table
    sparse.PAIR_BUDGET = 100  # and chunks split into several groups of rows
    for _ in zip(_feed(dense, fires), _feed(sparse, fires)):
        pass
    d_pairs, s_pairs = dense.pairs(), sparse.pairs()
    assert s_pairs == d_pairs == PairCounts.from_dense(truth)
    assert s_pairs.undercount == 0 and len(s_pairs.keys) == np.count_nonzero(np.triu(truth, 1))
    got_d, got_s = top_coactivation(d_pairs, 5), top_coactivation(s_pairs, 5)
    for a, b in zip(got_d, got_s):
        np.testing.assert_array_equal(a, b)
    assert [a.tolist() for a in got_d] == [a.tolist() for a in top_coactivation(truth, 5)]  # the dense-matrix form too
    f, r, g, jac, n_both = got_s
    union = truth.diagonal()[f] + truth.diagonal()[g] - truth[f, g]
    np.testing.assert_allclose(jac, truth[f, g] / union, rtol=1e-6)
    assert (n_both >= 2).all() and (n_both == truth[f, g]).all()
    assert g[(f == 0) & (r == 0)].tolist() == [7] and g[(f == 250) & (r == 0)].tolist() == [5]


def test_pair_counter_is_dense_up_to_the_limit_and_sparse_above():
    assert isinstance(pair_counter(COACT_DENSE_MAX, "cpu"), CoactivationCounts)
    assert isinstance(pair_counter(COACT_DENSE_MAX + 1, "cpu"), SparsePairCounts)


def _planted_topk_scan(tmp_path, d_sae: int):
    """A TopK SAE (k=4) over 16-d inputs: features A and B read input coordinates 0 and 1 and fire
    only where those are raised (A on 60 + 25 samples, B on the same 60 + 15 others); all other
    latents are random directions. Returns the scan and the true (n_A, n_B, n_both)."""
    n, d_in = 400, 16
    a, b = 123, d_sae - 5
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, size=(n, d_in)).astype(np.float32)
    x[:, :2] = rng.normal(0, 0.1, size=(n, 2))
    order = rng.permutation(n)
    both, only_a, only_b = order[:60], order[60:85], order[85:100]
    x[np.concatenate([both, only_a]), 0] += 4.0
    x[np.concatenate([both, only_b]), 1] += 4.0
    sae = SparseAutoencoder(SAEConfig(arch="topk", k=4, d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        w = torch.randn(d_in, d_sae, generator=torch.Generator().manual_seed(0)) / d_in**0.5
        w[:2] = 0.0  # random latents ignore the planted coordinates
        w[:, a], w[:, b] = 0.0, 0.0
        w[0, a], w[1, b] = 10.0, 10.0
        sae.W_enc.copy_(w)
        sae.b_enc.zero_()
        sae.b_enc[[a, b]] = -5.0  # ~-5 +- 1 off the planted samples: never among a row's 4 largest
        sae.b_dec.zero_()
    from sae_core.store import ActivationStore

    store = ActivationStore(make_store(tmp_path, x, shard_samples=128))
    return scan_features(sae, store, 8, 4, chunk_samples=96), (a, b), (85, 75, 60)


def test_planted_pair_among_16384_latents_are_rank_one_neighbours(tmp_path):
    scan, (a, b), (n_a, n_b, n_both) = _planted_topk_scan(tmp_path, 16_384)
    pairs = scan.co_counts
    assert pairs.d_sae == 16_384 and pairs.undercount == 0
    assert (pairs.fired[a], pairs.fired[b]) == (n_a, n_b)
    assert len(pairs.keys) <= 400 * 6  # at most k(k-1)/2 = 6 distinct pairs per sample, not d_sae^2
    f, r, g, jac, both = top_coactivation(pairs, 10)
    for x, y in ((a, b), (b, a)):
        first = (f == x) & (r == 0)
        assert g[first].tolist() == [y] and both[first].tolist() == [n_both]
        assert jac[first][0] == pytest.approx(n_both / (n_a + n_b - n_both))  # 60 / 100


def test_sparse_counts_stay_within_the_pair_limit_with_a_true_bound():
    d = 10_000
    rng = np.random.default_rng(5)
    fires = np.zeros((3000, d), dtype=bool)
    for row in fires:  # 8 random features per sample: ~28 new pairs each, mostly seen once
        row[rng.choice(d, 8, replace=False)] = True
    strong = [(10, 20), (30, 40), (50, 9_990)]
    for a, b in strong:  # pairs firing together on ~15% of samples
        on = rng.random(len(fires)) < 0.15
        fires[on, a] = fires[on, b] = True
    sparse = SparsePairCounts(d, "cpu")
    sparse.MAX_PAIRS, sparse.PENDING_MIN = 4_000, 500
    for counter in _feed(sparse, fires, chunk=50):
        assert len(counter.keys) <= 4_000 and counter.n_pending < max(500, len(counter.keys) // 4)
    pairs = sparse.pairs()
    one = scipy.sparse.csr_matrix(fires.astype(np.int64))
    truth = scipy.sparse.triu(one.T @ one, 1).tocoo()  # brute force, sparse: ~90,000 distinct pairs
    true_of = dict(zip((truth.row * d + truth.col).tolist(), truth.data.tolist()))
    assert len(true_of) > 20 * 4_000 and pairs.undercount > 0 and len(pairs.keys) <= 4_000
    true_counts = np.array([true_of[k] for k in pairs.keys.tolist()])
    assert (pairs.counts <= true_counts).all() and (pairs.counts >= true_counts - pairs.undercount).all()
    above = [k for k, c in true_of.items() if c > pairs.undercount]
    assert len(above) >= len(strong) and np.isin(above, pairs.keys).all()  # every pair above the bound is kept
    np.testing.assert_array_equal(pairs.fired, fires.sum(0))  # firing counts are never dropped
    f, r, g, *_ = top_coactivation(pairs, 3)
    for a, b in strong:
        assert g[(f == a) & (r == 0)].tolist() == [b]


def test_merging_ranks_sums_counts_and_their_bounds():
    fires = _random_fires(2, 300, 50, 0.1)
    halves = []
    for part in (fires[:140], fires[140:]):
        c = SparsePairCounts(50, "cpu")
        for _ in _feed(c, part):
            pass
        halves.append(c.pairs())
    whole = SparsePairCounts(50, "cpu")
    for _ in _feed(whole, fires):
        pass
    assert PairCounts.merge(halves) == whole.pairs()
    halves[1].undercount = 2
    limited = PairCounts.merge(halves, max_pairs=100)
    assert len(limited.keys) <= 100 and limited.undercount > 2
    assert set(limited.keys) <= set(whole.pairs().keys)


def test_two_rank_sparse_scan_equals_single_process(tmp_path):
    """torchrun with 2 gloo ranks and the sparse counter forced (COACT_DENSE_MAX = 0): the merged
    pair counts equal one process's, and equal the dense counter's."""
    from sae_core.checkpoint import load
    from sae_core.store import ActivationStore
    from tests.test_distributed import _run

    rng = np.random.default_rng(9)
    store_dpath = make_store(tmp_path, rng.normal(size=(240, 8)).astype(np.float32), shard_samples=50)
    sae_dpath = make_sae(tmp_path, 8, 30, arch="topk", k=5, store_dpath=store_dpath)
    out = tmp_path / "pairs.pkl"
    code = ("import pickle; import precompute.coactivation as C; from sae_core import distributed; "
            "from precompute.scan import scan_features; from sae_core.checkpoint import load; "
            "from sae_core.store import ActivationStore\nC.COACT_DENSE_MAX = 0\n"
            "with distributed.session() as d:\n"
            f"    r = scan_features(load({str(sae_dpath)!r}), ActivationStore({str(store_dpath)!r}), 5, 4, 32)\n"
            f"    d.is_main and pickle.dump(r.co_counts, open({str(out)!r}, 'wb'))\n")
    _run(code, 2)
    got = pickle.loads(out.read_bytes())
    want = scan_features(load(sae_dpath), ActivationStore(store_dpath), 5, 4, 32).co_counts  # 30 features: dense
    assert got == want and got.undercount == 0 and len(got.keys) > 0
