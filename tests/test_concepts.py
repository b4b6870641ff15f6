"""Concept projection equals a hand computation with the classifier's weights: through the linear
head for pooled SAEs, by ablation through the rest of the model for patch SAEs, end to end in
the index."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch

from precompute import heads
from precompute.concepts import N_CONCEPTS, ablation_logit_effects, decoder_logit_effects, top_concepts
from precompute.heads import ClassifierTail
from precompute.index import IndexConfig, build_index
from sae_core.checkpoint import load
from sae_core.steering import Edit, apply_edits
from sae_core.store import ActivationStore
from tests.precompute_helpers import make_dataset, make_sae, make_store

N, D_IN, D_SAE, N_CLASSES = 40, 10, 16, 9
CLASSES = [f"class {i}" for i in range(N_CLASSES)]


def _weights(seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N_CLASSES, D_IN, generator=g), torch.randn(N_CLASSES, generator=g)


def _linear_tail():
    W, b = _weights()
    return ClassifierTail(CLASSES, lambda acts: acts.mean(1) @ W.T + b, (W, b))


def _nonlinear_tail():
    """A 'rest of the model' that is not linear: ReLU, then pooling, then a linear classifier."""
    W, b = _weights()
    return ClassifierTail(CLASSES, lambda acts: torch.relu(acts).mean(1) @ W.T + b, None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("concepts")
    ds = make_dataset(root, N, with_thumbs=False)
    rng = np.random.default_rng(2)
    pooled = make_store(root, rng.normal(size=(N, D_IN)).astype(np.float32), dataset_dpath=ds, name="pooled")
    patches = make_store(root, rng.normal(size=(N * 4, D_IN)).astype(np.float32), tokens_per_sample=4, grid=(2, 2),
                         dataset_dpath=ds, name="patches")
    return root, make_sae(root, D_IN, D_SAE, name="a"), pooled, make_sae(root, D_IN, D_SAE, arch="topk", k=3, seed=1, name="b"), patches


def test_decoder_projection_equals_the_hand_computation(files):
    _, sae_a, *_ = files
    sae = load(sae_a)
    with torch.no_grad():
        sae.input_scale.fill_(2.0)  # the decoder works in scaled units: the projection must undo it
    W, _ = _weights()
    max_act = np.linspace(0.5, 3, D_SAE)
    got = decoder_logit_effects(sae, W, max_act).numpy()
    want = (sae.W_dec.detach().numpy() / 2.0) @ W.numpy().T * max_act[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rows = top_concepts(torch.as_tensor(want), CLASSES, max_act > 0, "decoder")
    f3 = [(k, c, s) for f, k, c, s in zip(rows.feature_id, rows.kind, rows.concept, rows.score) if f == 3]
    order = np.argsort(-want[3], kind="stable")
    assert [c for k, c, _ in f3 if k == "promotes"] == [CLASSES[i] for i in order[:N_CONCEPTS]]
    assert [c for k, c, _ in f3 if k == "suppresses"] == [CLASSES[i] for i in order[::-1][:N_CONCEPTS]]
    assert [s for k, _, s in f3 if k == "promotes"] == pytest.approx(sorted(want[3], reverse=True)[:N_CONCEPTS], rel=1e-5)


def test_ablation_equals_removing_the_feature_by_hand(files):
    *_, sae_b, patches = files
    sae, store, tail = load(sae_b), ActivationStore(patches), _nonlinear_tail()
    x = store.rows(np.arange(store.n_tokens)).view(N, 4, D_IN)
    with torch.no_grad():
        z = sae.encode(x.reshape(-1, D_IN)).view(N, 4, D_SAE)
    top_ids = np.full((3, D_SAE), -1)
    for f in range(D_SAE):
        fired = np.nonzero(z[:, :, f].amax(1).numpy() > 0)[0][:3]
        top_ids[: len(fired), f] = fired
    got = ablation_logit_effects(sae, tail, store, top_ids, n_samples=3)
    W, b = _weights()
    for f in range(D_SAE):
        ids = [int(s) for s in top_ids[:, f] if s >= 0]
        if not ids:
            assert (got[f] == 0).all()
            continue
        # removing feature f subtracts its decoded contribution z_f W_dec[f] / scale from each token
        x_ablated = x[ids] - z[ids][:, :, f, None] * sae.W_dec[f].detach() / sae.input_scale
        np.testing.assert_allclose(x_ablated.numpy(), apply_edits(sae, x[ids], [Edit(f, "set", 0.0)]).numpy(), atol=1e-5)
        logits = lambda a: torch.relu(a).mean(1) @ W.T + b  # noqa: E731
        np.testing.assert_allclose(got[f].numpy(), (logits(x[ids]) - logits(x_ablated)).mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_index_stores_concepts_for_classifier_stores(files, tmp_path, monkeypatch):
    root, sae_a, pooled, sae_b, patches = files

    def builder(model, layer, token_selection, device, module):
        return _linear_tail() if token_selection == "pooled" else _nonlinear_tail()

    monkeypatch.setattr(heads, "_BUILDERS", [builder])
    res_a = build_index(IndexConfig(saes=(str(sae_a),), store=str(pooled), out=str(tmp_path / "a.duckdb"), top_n=8, per_bin=2, quantile_bins=3))
    con = duckdb.connect(str(res_a.fpath), read_only=True)
    max_act = np.array([r[0] for r in con.execute("SELECT max_act FROM features ORDER BY feature_id").fetchall()])
    W, _ = _weights()
    sae = load(sae_a)
    want = (sae.W_dec.detach().numpy() / sae.input_scale.item()) @ W.numpy().T * max_act[:, None]
    f = int(np.argmax(max_act))
    rows = con.execute("SELECT concept, score, method FROM feature_concepts WHERE feature_id = ? AND kind = 'promotes' ORDER BY rank",
                       [f]).fetchall()
    order = np.argsort(-want[f], kind="stable")[:N_CONCEPTS]
    assert [r[0] for r in rows] == [CLASSES[i] for i in order] and {r[2] for r in rows} == {"decoder"}
    assert [r[1] for r in rows] == pytest.approx(want[f, order], rel=1e-4)
    dead = [i for i, m in enumerate(max_act) if m <= 0]
    if dead:
        assert con.execute("SELECT count(*) FROM feature_concepts WHERE feature_id = ?", [dead[0]]).fetchone()[0] == 0
    page = json.loads(con.execute("SELECT page FROM feature_page WHERE feature_id = ?", [f]).fetchone()[0])
    assert [c["concept"] for c in page["concepts"] if c["kind"] == "promotes"] == [r[0] for r in rows]
    res_b = build_index(IndexConfig(saes=(str(sae_b),), store=str(patches), out=str(tmp_path / "b.duckdb"), top_n=8, per_bin=2, quantile_bins=3))
    con = duckdb.connect(str(res_b.fpath), read_only=True)
    assert {r[0] for r in con.execute("SELECT DISTINCT method FROM feature_concepts").fetchall()} == {"ablation"}


def test_models_without_classes_get_no_concepts(files, tmp_path):
    root, sae_a, pooled, *_ = files
    res = build_index(IndexConfig(saes=(str(sae_a),), store=str(pooled), out=str(tmp_path / "n.duckdb"), top_n=8, per_bin=2, quantile_bins=3))
    con = duckdb.connect(str(res.fpath), read_only=True)
    assert con.execute("SELECT count(*) FROM feature_concepts").fetchone()[0] == 0
