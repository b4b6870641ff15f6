"""Neuron alignment equals a numpy computation; the neuron vectors are what the layer adds per
neuron; the ultra-low-density cluster is found where planted; the index stores both."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch
from torch import nn

import precompute.index as index_mod
from precompute.alignment import BASELINE_QUANTILE, RANDOM_VECTORS, align, neuron_vectors, ultra_low_density_cluster
from precompute.index import IndexConfig, build_index
from tests.precompute_helpers import make_dataset, make_sae, make_store


class ProjectBlock(nn.Module):
    """The tail of an EfficientNet block: 1x1 projection conv, then batch norm."""

    def __init__(self, d_hidden=12, d_out=6):
        super().__init__()
        self._project_conv = nn.Conv2d(d_hidden, d_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(d_out)
        with torch.no_grad():
            self._bn2.running_var.uniform_(0.5, 2.0)
            self._bn2.weight.uniform_(0.5, 1.5)
        self.eval()


def test_efficientnet_neurons_are_what_each_channel_adds_to_the_output():
    block = ProjectBlock()
    nv = neuron_vectors(block)
    out = lambda x: block._bn2(block._project_conv(x[:, :, None, None]))[:, :, 0, 0]  # noqa: E731
    with torch.no_grad():
        added = out(torch.eye(12)) - out(torch.zeros(1, 12))
    np.testing.assert_allclose(nv.numpy(), added.numpy(), rtol=1e-5, atol=1e-6)


def test_transformer_neurons_are_fc2_columns():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                             image_size=32, patch_size=16))
    layer = model.get_submodule("encoder.layers.1")
    nv = neuron_vectors(layer)
    assert nv.shape == (24, 16)
    np.testing.assert_array_equal(nv.numpy(), layer.mlp.fc2.weight.detach().numpy().T)
    assert neuron_vectors(nn.Linear(3, 3)) is None


def test_alignment_equals_numpy():
    rng = np.random.default_rng(0)
    neurons = rng.normal(size=(30, 8)).astype(np.float32)
    w_enc = rng.normal(size=(8, 20)).astype(np.float32)
    w_enc[:, 3] = neurons[17] * 2.5  # a feature that is one neuron
    a = align(torch.from_numpy(w_enc), torch.from_numpy(neurons), seed=4)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    cos = unit(w_enc.T) @ unit(neurons).T
    rand = unit(torch.randn(RANDOM_VECTORS, 8, generator=torch.Generator().manual_seed(4)).numpy())
    rcos = rand @ unit(neurons).T
    thr = np.quantile(rcos, BASELINE_QUANTILE)
    assert a.threshold == pytest.approx(thr, abs=1e-5)
    np.testing.assert_allclose(a.max_cos, cos.max(1), atol=1e-5)
    np.testing.assert_array_equal(a.best_neuron, cos.argmax(1))
    np.testing.assert_array_equal(a.n_above, (cos > a.threshold).sum(1))
    np.testing.assert_allclose(a.random_max_cos, rcos.max(1), atol=1e-5)
    np.testing.assert_allclose(a.cosines / 127, cos, atol=0.5 / 127 + 1e-6)
    assert a.best_neuron[3] == 17 and a.max_cos[3] == pytest.approx(1.0, abs=1e-5)


def test_ultra_low_density_cluster_is_found_where_planted():
    rng = np.random.default_rng(1)
    density = np.concatenate([10 ** rng.uniform(-2, -0.5, 40), 10 ** rng.uniform(-4.6, -4.4, 6), [0.0, 0.0]])
    w_enc = torch.from_numpy(rng.normal(size=(8, 48)).astype(np.float32))
    w_enc[:, 40:46] = torch.from_numpy(rng.normal(size=8).astype(np.float32))[:, None]  # one direction
    c = ultra_low_density_cluster(density, w_enc)
    assert c.feature_ids.tolist() == list(range(40, 46)) and c.gap_decades > 1.5
    assert c.mean_pairwise_cos == pytest.approx(1.0, abs=1e-5)
    assert ultra_low_density_cluster(10 ** np.linspace(-3, -1, 40), w_enc[:, :40]) is None  # no gap, no cluster


def test_index_stores_alignment_for_layers_with_neurons(tmp_path, monkeypatch):
    block = ProjectBlock(d_hidden=12, d_out=6)
    monkeypatch.setattr(index_mod, "hooked_layer", lambda model, layer: block)
    ds = make_dataset(tmp_path, 40, with_thumbs=False)
    store = make_store(tmp_path, np.random.default_rng(2).normal(size=(40, 6)).astype(np.float32), dataset_dpath=ds)
    sae = make_sae(tmp_path, 6, 10, name="al")
    res = build_index(IndexConfig(saes=(str(sae),), store=str(store), out=str(tmp_path / "a.duckdb"), top_n=8, per_bin=2,
                                  quantile_bins=3))
    con = duckdb.connect(str(res.fpath), read_only=True)
    rows = con.execute("SELECT max_cos, best_neuron, n_above, cosines FROM feature_alignment ORDER BY feature_id").fetchall()
    from sae_core.checkpoint import load

    want = align(load(sae).W_enc, neuron_vectors(block))
    assert [r[1] for r in rows] == want.best_neuron.tolist()
    assert [r[0] for r in rows] == pytest.approx(want.max_cos.tolist(), abs=1e-6)
    assert np.frombuffer(rows[0][3], np.int8).tolist() == want.cosines[0].tolist()
    n, thr, rnd = con.execute("SELECT n_neurons, threshold, random_max_cos FROM sae_alignment").fetchone()
    assert n == 12 and thr == pytest.approx(want.threshold) and len(rnd) == RANDOM_VECTORS
