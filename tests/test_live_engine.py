"""The live worker's engine repeats the offline pipeline: same features and activations as the
index for dataset samples, as `saescope extract` + sae_core for uploads; steering targets equal
hand computations with the model's own classifier; retrieval is exact."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pytest
import torch

from precompute.extract import ExtractConfig, extract
from precompute.live.batcher import Batcher, QueueFull
from precompute.live.engine import LiveEngine, UnknownSaeError
from precompute.live.inputs import InputError, LiveInput, decode_image
from precompute.live.retrieval import Retrieval
from precompute.live.steer import steer
from precompute.sources import EmojiSource
from sae_core.checkpoint import load
from sae_core.errors import ConfigError
from sae_core.steering import Edit
from sae_core.store import ActivationStore


@pytest.fixture(scope="module")
def engine(small_demo):
    _, index = small_demo
    return LiveEngine(index, "cpu")


def _sae_ids(engine):
    pooled = next(s for s, sp in engine.specs.items() if sp.grid is None)
    patch = next(s for s, sp in engine.specs.items() if sp.grid is not None)
    return pooled, patch


def _index_top(index, sae_id, sample_id):
    with duckdb.connect(str(index), read_only=True) as con:
        return con.execute("SELECT feature_id, activation FROM sample_top WHERE sae_id = ? AND sample_id = ? ORDER BY rank",
                           [sae_id, sample_id]).fetchall()


@pytest.mark.parametrize("sample_id", [0, 41, 95])
def test_dataset_sample_live_equals_index(engine, small_demo, sample_id):
    _, index = small_demo
    ids = list(_sae_ids(engine))
    codes = engine.codes(ids, [engine.sample(ids[0], sample_id)])[0]
    for sae_id in ids:
        stored = _index_top(index, sae_id, sample_id)
        live = [(f, v) for f, v, _ in codes[sae_id].feature_scores()][: len(stored)]
        assert [f for f, _ in live] == [f for f, _ in stored], sae_id
        np.testing.assert_allclose([v for _, v in live], [v for _, v in stored], rtol=1e-4, atol=1e-4)


def test_upload_equals_one_image_extraction(engine, tmp_path):
    """An uploaded PNG gives what `saescope extract` of a one-image folder + sae_core gives."""
    image = EmojiSource(limit=200).load(150)
    folder = tmp_path / "one"
    folder.mkdir()
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    (folder / "upload.png").write_bytes(buf.getvalue())
    for sae_id, spec in engine.specs.items():
        store = extract(ExtractConfig(dataset=str(folder), model=spec.model, layer=spec.layer, tokens=spec.token_selection,
                                      image_size=spec.image_size, data_root=str(tmp_path / "data")))
        acts = ActivationStore(store.store_dpath).rows(np.arange(spec.n_tokens))
        want = load(spec.checkpoint).encode(acts).detach()
        live = engine.codes([sae_id], [LiveInput(decode_image(buf.getvalue()), "image")])[0][sae_id]
        dense = torch.zeros_like(want)
        dense[live.token, live.feature] = torch.from_numpy(live.value)
        torch.testing.assert_close(dense, want, rtol=1e-4, atol=1e-4)


def test_steering_classes_equal_hand_computation_pooled(engine):
    pooled, _ = _sae_ids(engine)
    acts = engine.activations([pooled], [engine.sample(pooled, 7)])[0][pooled]
    sae, fc = engine.sae(pooled), engine.extractor(engine.specs[pooled]).model._fc
    fid = int(engine.max_acts(pooled).argmax())
    out = steer(engine, pooled, acts, [Edit(fid, "add", 3.0)], "max")
    with torch.no_grad():  # pooled features -> surgery -> the model's own classifier layer
        z = sae.encode(acts)
        z2 = z.clone()
        z2[:, fid] += 3.0 * float(engine.max_acts(pooled)[fid])
        steered = acts + sae.decode(z2) - sae.decode(z)
        want = torch.softmax(fc(steered[0]), -1)
        base = torch.softmax(fc(acts[0]), -1)
    for c in out["targets"]["classes"]["compare"]:
        assert c["after"] == pytest.approx(float(want[c["class_id"]]), rel=1e-3, abs=1e-6)
        assert c["before"] == pytest.approx(float(base[c["class_id"]]), rel=1e-3, abs=1e-6)
    assert out["edits"] == [{"feature_id": fid, "op": "add", "value": pytest.approx(3.0 * float(engine.max_acts(pooled)[fid]))}]


def test_steering_classes_equal_hand_computation_patches(engine):
    """The patch SAE's edit runs the rest of EfficientNet after blocks.15."""
    _, patch = _sae_ids(engine)
    spec = engine.specs[patch]
    acts = engine.activations([patch], [engine.sample(patch, 12)])[0][patch]
    sae, net = engine.sae(patch), engine.extractor(spec).model
    fid = int(engine.max_acts(patch).argmax())
    out = steer(engine, patch, acts, [Edit(fid, "set", 0.0), Edit(fid + 1, "add", 2.0)], "raw", patches=[0, 5])
    with torch.no_grad():
        z = sae.encode(acts)
        z2 = z.clone()
        z2[[0, 5], fid] = 0.0
        z2[[0, 5], fid + 1] += 2.0
        steered = acts + sae.decode(z2) - sae.decode(z)
        h, w = spec.grid
        fmap = steered.T.reshape(1, -1, h, w)
        logits = net._fc(net._swish(net._bn1(net._conv_head(fmap))).mean(dim=(2, 3)))
        want = torch.softmax(logits[0], -1)
    for c in out["targets"]["classes"]["compare"]:
        assert c["after"] == pytest.approx(float(want[c["class_id"]]), rel=1e-3, abs=1e-6)


def test_empty_edit_changes_nothing(engine):
    pooled, patch = _sae_ids(engine)
    for sae_id in (pooled, patch):
        acts = engine.activations([sae_id], [engine.sample(sae_id, 3)])[0][sae_id]
        out = steer(engine, sae_id, acts, [], "max")
        t = out["targets"]
        assert t["classes"]["before"] == t["classes"]["after"]
        assert t["neighbors"]["before"] == t["neighbors"]["after"]
        assert t["neighbors"]["before"][0]["sample_id"] == 3  # the sample is its own nearest neighbour


def test_retrieval_is_exact_and_streaming_agrees(engine):
    pooled, patch = _sae_ids(engine)
    for sae_id in (pooled, patch):
        spec = engine.specs[sae_id]
        store = ActivationStore(spec.store)
        vecs = store.rows(np.arange(store.n_tokens)).reshape(store.n_samples, spec.n_tokens, -1).mean(1).numpy()
        q = torch.randn(spec.n_tokens, spec.d_in).abs()
        qv = q.mean(0).numpy()
        cos = vecs @ qv / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(qv))
        want = np.argsort(-cos, kind="stable")[:6]
        got = Retrieval(spec.store).nearest(q, 6)
        assert [g["sample_id"] for g in got] == store.sample_ids()[want].tolist()
        np.testing.assert_allclose([g["cosine"] for g in got], cos[want], rtol=1e-5)
        streamed = Retrieval(spec.store, budget_bytes=0).nearest(q, 6)
        assert [g["sample_id"] for g in streamed] == [g["sample_id"] for g in got]


def test_bad_steering_input(engine):
    pooled, patch = _sae_ids(engine)
    acts = engine.activations([patch], [engine.sample(patch, 1)])[0][patch]
    with pytest.raises(ConfigError, match="does not exist"):
        steer(engine, patch, acts, [Edit(10**6, "add", 1.0)], "raw")
    with pytest.raises(ConfigError, match="outside"):
        steer(engine, patch, acts, [Edit(1, "add", 1.0)], "raw", patches=[16])
    with pytest.raises(ConfigError, match="target"):
        steer(engine, patch, acts, [Edit(1, "add", 1.0)], "raw", targets=["logits"])
    pooled_acts = engine.activations([pooled], [engine.sample(pooled, 1)])[0][pooled]
    with pytest.raises(ConfigError, match="no patches"):
        steer(engine, pooled, pooled_acts, [Edit(1, "add", 1.0)], "raw", patches=[0])
    with pytest.raises(UnknownSaeError):
        engine.spec("nope")
    with pytest.raises(InputError, match="does not exist"):
        engine.sample(pooled, 10_000)
    with pytest.raises(InputError, match="image inputs"):
        engine.codes([pooled], [LiveInput("a text", "text")])


def test_batcher_batches_concurrent_requests_and_isolates_failures():
    calls = []

    def run(items):
        calls.append(len(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [i * 2 for i in items]

    b = Batcher(max_batch=4, max_queue=32)
    started = threading.Event()

    def hold(items):  # holds the batcher's thread so the others queue up behind it
        started.set()
        time.sleep(0.3)
        return [i * 2 for i in items]

    b.submit(("k",), [0], hold)
    assert started.wait(5)  # running alone: the requests below cannot join its batch
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(lambda i=i: b.submit(("k",), [i], run).result(5)) for i in range(1, 9)]
        results = [f.result() for f in futs]
    assert sorted(r[0] for r in results) == [2 * i for i in range(1, 9)]
    assert max(calls) > 1  # some forwards served several requests
    good = b.submit(("k",), [5], run)
    bad = b.submit(("k",), ["bad"], run)
    assert good.result(5) == [10]
    with pytest.raises(ValueError):
        bad.result(5)
    assert b.submit(("k",), [1], run).result(5) == [2]  # the thread survived


def test_full_queue_refuses():
    import threading

    gate = threading.Event()
    b = Batcher(max_batch=1, max_queue=2)
    b.submit(None, [0], lambda items: (gate.wait(5), [0])[1])
    import time

    time.sleep(0.1)  # the first job is running; two more fill the queue
    b.submit(None, [1], lambda items: [1])
    b.submit(None, [2], lambda items: [2])
    with pytest.raises(QueueFull):
        b.submit(None, [3], lambda items: [3])
    gate.set()


def test_saes_of_one_model_share_one_forward(engine):
    ids = list(_sae_ids(engine))
    item = engine.sample(ids[0], 2)
    engine.codes(ids, [item])  # models load
    stems = {id(m): m for m in (engine.extractor(engine.specs[s]).model._conv_stem for s in ids)}
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in stems.values()]
    try:
        engine.codes(ids, [item])
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == 1, "both layers come from one pass through the stem and blocks"


def test_a_target_the_model_lacks_is_refused_when_asked(engine, monkeypatch):
    """CLIP-like models have no classes: asking for them is a clear error; by default they are left out."""
    pooled, _ = _sae_ids(engine)
    acts = engine.activations([pooled], [engine.sample(pooled, 1)])[0][pooled]
    monkeypatch.setattr(engine, "tail", lambda sae_id: None)
    out = steer(engine, pooled, acts, [Edit(1, "add", 1.0)], "raw")
    assert "classes" not in out["targets"] and "neighbors" in out["targets"]
    with pytest.raises(ConfigError, match="no classifier"):
        steer(engine, pooled, acts, [Edit(1, "add", 1.0)], "raw", targets=["classes"])


def test_samples_without_their_source_use_the_stored_activations(small_demo, monkeypatch):
    """A data folder copied without the original images: dataset samples still inspect, from the store."""
    import precompute.live.engine as engine_mod

    _, index = small_demo

    def gone(spec):
        raise InputError("the samples cannot be loaded", status=422)

    monkeypatch.setattr(engine_mod, "_open_dataset", gone)
    eng = LiveEngine(index, "cpu")
    ids = list(_sae_ids(eng))
    item = eng.sample(ids[0], 33)
    assert item.kind == "stored" and item.value is None
    codes = eng.codes(ids, [item])[0]
    for sae_id in ids:
        stored = _index_top(index, sae_id, 33)
        live = [(f, v) for f, v, _ in codes[sae_id].feature_scores()][: len(stored)]
        assert [f for f, _ in live] == [f for f, _ in stored]
    with pytest.raises(InputError, match="not in this SAE's activation store"):
        eng.sample(ids[0], 10_000)


def test_a_source_that_cannot_be_reopened_falls_back_to_the_store(small_demo, monkeypatch):
    """A source named in the dataset manifest that this machine cannot open (an `hf:` dataset whose
    cache is gone raises DataError, not OSError) still inspects, from the stored activations."""
    import precompute.live.engine as engine_mod
    from sae_core.errors import DataError

    def unavailable(dpath, name):
        raise DataError(f"--dataset {name}: not in the local datasets cache")

    monkeypatch.setattr(engine_mod, "DatasetSamples", unavailable)
    eng = LiveEngine(small_demo[1], "cpu")
    item = eng.sample(next(iter(_sae_ids(eng))), 5)
    assert item.kind == "stored" and item.value is None
