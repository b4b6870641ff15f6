"""`--layer a,b,c`: one pass over the data fills one store per layer, each identical (same folder,
same manifest keys, same bytes of activations) to the store a single-layer run writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.cli import main as cli_main
from precompute.extract import ExtractConfig, extract
from precompute.extractors.base import ExtractorError
from precompute.extractors.multi import split_layers
from sae_core.store import ActivationStore

transformers = pytest.importorskip("transformers")

VOLATILE = {"created_at", "schema_version"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                           image_size=32, patch_size=8)
    folder = tmp_path_factory.mktemp("clip")
    transformers.CLIPVisionModel(config).eval().save_pretrained(folder)
    return folder


def _stable(manifest: dict) -> dict:
    """A manifest without what differs between two runs' folders (times, data roots)."""
    config = {k: v for k, v in manifest["config"].items() if k != "data_root"}
    return {k: v for k, v in manifest.items() if k not in VOLATILE | {"dataset_dpath", "config"}} | {"config": config}


def _rows(dpath):
    store = ActivationStore(dpath)
    return store.rows(np.arange(len(store)))


def test_one_pass_equals_single_layer_runs(tmp_path, images, clip_folder):
    common = dict(dataset=str(images), model=f"hf:{clip_folder}", device="cpu", shard_samples=4, batch_size=2)
    many = extract(ExtractConfig(layer="-1,-3,0,last_hidden_state", tokens="cls,patches,all,cls", data_root=str(tmp_path / "many"), **common))
    assert len(many.store_dpaths) == 4 and not many.reused
    for dpath, (layer, tokens) in zip(many.store_dpaths, split_layers("-1,-3,0,last_hidden_state", "cls,patches,all,cls")):
        single = extract(ExtractConfig(layer=layer, tokens=tokens, data_root=str(tmp_path / "many"), **common))
        assert single.reused  # the single-layer run finds the multi-layer run's store
        fresh = extract(ExtractConfig(layer=layer, tokens=tokens, data_root=str(tmp_path / f"single{layer}"), **common))
        assert dpath.name == fresh.store_dpath.name
        ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (dpath, fresh.store_dpath))
        assert _stable(ma) == _stable(mb) and ma["layer"] == layer and ma["token_selection"] == tokens
        assert torch.equal(_rows(dpath), _rows(fresh.store_dpath))
    assert extract(ExtractConfig(layer="-1,-3,0,last_hidden_state", tokens="cls,patches,all,cls", data_root=str(tmp_path / "many"),
                                 **common)).reused


def test_one_forward_pass_for_all_layers(images, clip_folder):
    """Hooks on every layer, the forward stops after the deepest: blocks run once per batch."""
    from precompute.extractors import build_extractors
    from precompute.extractors.multi import MultiLayerExtractor

    exs = build_extractors(f"hf:{clip_folder}", split_layers("1,3", "cls"), device="cpu", modality="image")
    assert exs[0].model is exs[1].model  # loaded once
    multi = MultiLayerExtractor(exs)
    calls = []
    blocks = exs[0].model.encoder.layers
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        acts = multi.activations(multi.prepare([Image.open(p) for p in sorted(images.glob("*.png"))[:3]]))
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1, 2]  # block 3 (index 3) is after the deepest hooked layer: never run
    batch = exs[0].prepare([Image.open(p) for p in sorted(images.glob("*.png"))[:3]])
    with torch.no_grad():
        hs = exs[0].model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts[0], hs[1][:, :1])
    torch.testing.assert_close(acts[1], hs[3][:, :1])


def test_efficientnet_shares_one_pass(tmp_path, images):
    common = dict(dataset=str(images), model="efficientnet-lite0", image_size=64, device="cpu", shard_samples=4, batch_size=4)
    many = extract(ExtractConfig(layer="head,blocks.15,blocks.3", tokens="pooled,patches,patches", data_root=str(tmp_path / "a"), **common))
    for dpath, (layer, tokens) in zip(many.store_dpaths, split_layers("head,blocks.15,blocks.3", "pooled,patches,patches")):
        single = extract(ExtractConfig(layer=layer, tokens=tokens, data_root=str(tmp_path / layer), **common))
        assert dpath.name == single.store_dpath.name
        torch.testing.assert_close(_rows(dpath), _rows(single.store_dpath), atol=1e-6, rtol=1e-6)


def test_resumes_a_store_that_is_further_along(tmp_path, images, clip_folder):
    """One layer's store already complete, another half-written: each ends identical to a fresh run."""
    common = dict(dataset=str(images), model=f"hf:{clip_folder}", device="cpu", shard_samples=2, batch_size=2, data_root=str(tmp_path))
    done = extract(ExtractConfig(layer="-2", tokens="cls", **common))
    both = extract(ExtractConfig(layer="-2,-1", tokens="cls", **common))
    assert both.store_dpaths[0] == done.store_dpath and not both.reused
    fresh = extract(ExtractConfig(layer="-1", tokens="cls", **{**common, "data_root": str(tmp_path / "fresh")}))
    assert torch.equal(_rows(both.store_dpaths[1]), _rows(fresh.store_dpath))


@pytest.mark.parametrize(("layer", "tokens", "message"), [
    ("-1,-1", "cls", "names a layer twice"),
    ("-1,-2", "cls,cls,cls", "3 selections for 2 layers"),
    ("-1,,-2", "cls", "an empty item"),
    ("-1,9", "cls", "'9' is out of range"),
])
def test_bad_layer_lists_fail_before_any_write(tmp_path, images, clip_folder, capsys, layer, tokens, message):
    code = cli_main(["extract", "--dataset", str(images), "--model", f"hf:{clip_folder}", f"--layer={layer}", "--tokens", tokens,
                     "--device", "cpu", "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "data").exists()
    if "out of range" not in message:
        with pytest.raises(ExtractorError, match=message):
            split_layers(layer, tokens)
