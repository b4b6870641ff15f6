"""Hidden-truth checks of what the index says a feature means: names with scores, label entropy
in bits, cluster names, co-activation neighbours. Features are planted in synthetic activations
whose captions are known, so the right answer is known before the index is built."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from precompute.index import IndexConfig, build_index
from precompute.naming import MIN_SHARE, WEAK_NAME_SCORE, ContrastNamer, FeatureName, cluster_name, entropy_bits, words_of
from sae_core.checkpoint import save
from sae_core.config import SAEConfig
from sae_core.model import SparseAutoencoder
from tests.precompute_helpers import make_dataset, make_store

N, D_IN, D_SAE = 300, 16, 12
CLOCK, PAIR_A, PAIR_B, NOISE = 0, 1, 2, 3
FILLER = [f"word{i}" for i in range(40)]
LABELS = ["alpha", "beta", "gamma", "delta", "omega"]


def _planted(root):
    """Captions with a 'clock' word on 10% of samples, activations with features planted on them."""
    rng = np.random.default_rng(7)
    clock = rng.permutation(N)[: N // 10]
    pair = rng.permutation(N)[: N // 6]
    captions = [" ".join(rng.choice(FILLER, 3, replace=False)) for _ in range(N)]
    for s in clock:
        captions[s] += " clock"
    ds = make_dataset(root, N, with_thumbs=False)
    table = pq.read_table(ds / "samples.parquet")
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions))
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array([LABELS[i % 5] for i in range(N)]))
    pq.write_table(table, ds / "samples.parquet")
    x = rng.normal(0, 0.1, size=(N, D_IN)).astype(np.float32)
    x[clock, CLOCK] += rng.uniform(2.5, 3.5, len(clock))
    x[pair, PAIR_A] += 3.0
    x[pair, PAIR_B] += 3.0
    noisy = rng.random(N) < 0.4
    x[noisy, NOISE] += rng.uniform(1.5, 3.5, noisy.sum())
    store = make_store(root, x, dataset_dpath=ds, name="planted")
    sae = SparseAutoencoder(SAEConfig(arch="relu", d_in=D_IN, d_sae=D_SAE))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D_IN)[:, :D_SAE])
        sae.W_dec.copy_(torch.eye(D_IN)[:D_SAE])
        sae.b_enc.fill_(-1.0)
        sae.b_enc[NOISE + 1 :] = -0.15  # the rest fire on the noise of their own coordinate, about 7% of samples
        sae.b_dec.zero_()
    return save(sae, root / "saes" / "planted"), store, set(clock.tolist()), set(pair.tolist())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("meaning")
    sae_dpath, store, clock, pair = _planted(root)
    result = build_index(IndexConfig(saes=(str(sae_dpath),), store=str(store), out=str(root / "m.duckdb"), top_n=64, per_bin=2, quantile_bins=3))
    return duckdb.connect(str(result.fpath), read_only=True), clock, pair


def _feature(con, fid):
    return con.execute("SELECT name, name_score, name_coverage, label_entropy FROM features WHERE feature_id = ?", [fid]).fetchone()


def test_planted_caption_feature_gets_the_word_with_a_high_score(planted):
    con, clock, _ = planted
    name, score, coverage, _ = _feature(con, CLOCK)
    assert name.split(", ")[0] == "clock"
    assert score == pytest.approx(1.0)  # every top sample carries the word
    assert coverage == pytest.approx(1.0)  # and every clock sample of the dataset is among them
    assert con.execute("SELECT n_fired FROM features WHERE feature_id = ?", [CLOCK]).fetchone()[0] == len(clock)


def test_noise_feature_gets_no_name_and_a_low_score(planted):
    con, *_ = planted
    name, score, _, entropy = _feature(con, NOISE)
    assert name == "" and score < WEAK_NAME_SCORE
    assert entropy == pytest.approx(math.log2(5), abs=0.1)  # five labels in turn: about log2(5) bits


def test_label_entropy_is_in_bits_and_never_negative_zero(planted):
    con, *_ = planted
    for (e,) in con.execute("SELECT label_entropy FROM features WHERE label_entropy IS NOT NULL").fetchall():
        assert e >= 0 and math.copysign(1, e) == 1
    assert math.copysign(1, entropy_bits([5])) == 1 and entropy_bits([5]) == 0
    assert entropy_bits([1, 1]) == pytest.approx(1.0) and entropy_bits([]) is None


def test_feature_page_documents_carry_the_score(planted):
    import json

    con, *_ = planted
    page = json.loads(con.execute("SELECT page FROM feature_page WHERE feature_id = ?", [CLOCK]).fetchone()[0])
    assert page["feature"]["name"].startswith("clock") and page["feature"]["name_score"] == pytest.approx(1.0)


def test_names_weigh_activations_and_contrast_with_the_dataset():
    docs = [["cat"], ["cat"], ["cat"], ["dog"], ["dog"], ["dog"], ["dog"], ["face", "dog"]] + [["face"]] * 40
    namer = ContrastNamer(docs)
    # Four dog samples fire weakly, two cat samples strongly: by activation the feature is about cats.
    got = namer.name([0, 1, 3, 4, 5, 6], [10, 10, 1, 1, 1, 1])
    assert got.words[0] == "cat" and got.score == pytest.approx(20 / 24)
    assert got.coverage == pytest.approx(2 / 3)  # two of the dataset's three cat samples
    # "face" is on every top sample but as common in the whole dataset: not over-represented.
    assert "face" not in namer.name([8, 9, 10, 11, 12]).words
    assert namer.name([8, 9, 10, 11, 12]).weak


def test_a_style_shared_over_many_subcategories_names_the_feature():
    """Hidden truth: a feature fires on one art style's drawings of 8 different things; only the
    label's upper level is common to them, and it must become the name (was: unnamed)."""
    styles, subs = ["noto", "twitter", "openmoji", "fluent3d"], [f"sub{i}" for i in range(8)]
    samples = [(st, sub, f"thing {sub}") for st in styles for sub in subs for _ in range(3)]
    docs = [words_of(cap, f"{st} / cat / {sub}") for st, sub, cap in samples]
    assert docs[0][-3:] == ["noto", "noto / cat", "noto / cat / sub0"]
    style_feature = [i for i, (st, sub, _) in enumerate(samples) if st == "openmoji" and sub in subs[:8]][::3]
    got = ContrastNamer(docs).name(style_feature)
    assert got.words[0] == "openmoji" and got.score == pytest.approx(1.0) and not got.weak
    assert got.words == ("openmoji",)  # not "openmoji, openmoji / cat": one level of a chain per name
    # A content feature spanning the styles is named by its content, never by one style.
    content = [i for i, (_, sub, _) in enumerate(samples) if sub == "sub3"]
    assert "sub3" in ContrastNamer(docs).name(content).words[0]
    assert not any(w in styles for w in ContrastNamer(docs).name(content).words)


def test_weak_names_are_marked_and_unnamed_below_the_share_floor():
    docs = [[f"w{i}"] for i in range(50)]
    got = ContrastNamer(docs).name(list(range(10)))
    assert got.words == () and got.score == 0.0 and got.weak  # each word describes 10% < MIN_SHARE
    assert MIN_SHARE > 0.1


def test_cluster_names_weigh_member_names_by_score():
    members = [FeatureName(("clock",), 0.9, 1.0), FeatureName(("clock", "time"), 0.8, 1.0),
               FeatureName(("key",), 0.2, 0.5), FeatureName(("key",), 0.2, 0.5), FeatureName(("key",), 0.2, 0.5)]
    name, score = cluster_name(members)
    assert name == "clock, time" and score == pytest.approx(1.7 / 5)


def test_planted_co_firing_pair_are_each_others_top_coactivation_neighbours(planted):
    con, _, pair = planted
    for f, g in ((PAIR_A, PAIR_B), (PAIR_B, PAIR_A)):
        top = con.execute("SELECT neighbor_id, jaccard, n_both FROM feature_coactivation WHERE feature_id = ? ORDER BY rank", [f]).fetchall()
        assert top[0] == (g, pytest.approx(1.0), len(pair))
        assert all(j < 0.5 for _, j, _ in top[1:])  # nothing else fires on the same samples


def test_coactivation_equals_brute_force_jaccard(tmp_path):
    from precompute.coactivation import CoactivationCounts, top_coactivation
    from precompute.encoding import SampleCode

    rng = np.random.default_rng(1)
    fires = rng.random((50, 6)) < 0.3
    fires[:, 5] = fires[:, 0]  # 0 and 5 co-fire exactly
    both = fires.T.astype(int) @ fires.astype(int)
    for budget in (1 << 24, 7, 1):  # rows in one group, in several, and rows whose pairs alone exceed the budget
        acc = CoactivationCounts(6, "cpu")
        acc.PAIR_BUDGET = budget
        for lo in range(0, 50, 16):  # chunked like the scan
            rows, feats = np.nonzero(fires[lo : lo + 16])
            acc.update(SampleCode(torch.as_tensor(rows), torch.as_tensor(feats), torch.ones(len(rows))), len(fires[lo : lo + 16]))
        np.testing.assert_array_equal(acc.matrix().numpy(), both)
    f, r, g, jac, n_both = top_coactivation(acc.matrix().numpy(), 3)
    for fi, gi, j, nb in zip(f, g, jac, n_both):
        union = (fires[:, fi] | fires[:, gi]).sum()
        assert j == pytest.approx(both[fi, gi] / union) and nb == both[fi, gi]
    assert (g[(f == 0) & (r == 0)] == 5).all() and (g[(f == 5) & (r == 0)] == 0).all()


def test_coactivation_counts_match_the_scan_and_reach_the_feature_page(planted):
    import json

    con, *_ = planted
    page = json.loads(con.execute("SELECT page FROM feature_page WHERE feature_id = ?", [PAIR_A]).fetchone()[0])
    assert page["coactivation"][0]["feature_id"] == PAIR_B and page["coactivation"][0]["jaccard"] == pytest.approx(1.0)
    n_pair = con.execute("SELECT n_fired FROM features WHERE feature_id = ?", [PAIR_A]).fetchone()[0]
    assert page["coactivation"][0]["n_both"] == n_pair
