"""ViT, DINOv2 (with and without registers), ConvNeXt and ResNet, bare and as classifiers: stored
activations equal the models' own `output_hidden_states` (tiny configs, no hub access)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.extractors.base import ExtractorError
from precompute.extractors.hf import build_hf_extractor

transformers = pytest.importorskip("transformers")

D, LAYERS, IMAGE, PATCH = 32, 2, 32, 8  # a 4x4 patch grid
VIT = {"hidden_size": D, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 4, "image_size": IMAGE,
       "patch_size": PATCH}
CONV = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_labels": 5}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(40, 32), (32, 50), (64, 64)]]


def _model(cls, config, seed=0):
    torch.manual_seed(seed)
    return cls(config).eval()


def _hidden(model, pixel_values, **kw):
    with torch.no_grad():
        return model(pixel_values=pixel_values, output_hidden_states=True, **kw)


def _select(hs, selection, n_registers=0):
    return {"cls": hs[:, :1], "registers": hs[:, 1:1 + n_registers], "patches": hs[:, 1 + n_registers:], "all": hs,
            "pooled": hs.mean(1, keepdim=True)}[selection]


VIT_CASES = [("0", 0), ("1", 1), ("-1", 2), ("-3", 0)]


@pytest.mark.parametrize(("layer", "index"), VIT_CASES)
@pytest.mark.parametrize("selection", ["cls", "patches", "all", "pooled"])
def test_vit_matches_hidden_states(images, layer, index, selection):
    model = _model(transformers.ViTModel, transformers.ViTConfig(**VIT))
    ex = build_hf_extractor(model, layer, selection)
    batch = ex.prepare(images)
    expected = _select(_hidden(model, batch["pixel_values"]).hidden_states[index], selection)
    torch.testing.assert_close(ex.activations(batch), expected, atol=1e-5, rtol=1e-5)
    assert ex.info.tokens_per_sample == expected.shape[1] and ex.info.d_in == D
    assert ex.info.grid == ((4, 4) if selection == "patches" else None)


def test_vit_last_hidden_state_pooler_and_other_size(images):
    model = _model(transformers.ViTModel, transformers.ViTConfig(**VIT))
    last = build_hf_extractor(model, "last_hidden_state", "all")
    pooler = build_hf_extractor(model, "pooler", "pooled")
    batch = last.prepare(images)
    out = _hidden(model, batch["pixel_values"])
    torch.testing.assert_close(last.activations(batch), out.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooler.activations(batch)[:, 0], out.pooler_output, atol=1e-5, rtol=1e-5)
    big = build_hf_extractor(model, "-1", "patches", image_size=48)
    batch = big.prepare(images)
    expected = _hidden(model, batch["pixel_values"], interpolate_pos_encoding=True).hidden_states[-1][:, 1:]
    torch.testing.assert_close(big.activations(batch), expected, atol=1e-5, rtol=1e-5)
    assert big.info.grid == (6, 6) and big.info.input_side == 48


@pytest.mark.parametrize(("layer", "index"), VIT_CASES)
@pytest.mark.parametrize("selection", ["cls", "registers", "patches", "all"])
def test_dinov2_with_registers_matches_hidden_states(images, layer, index, selection):
    config = transformers.Dinov2WithRegistersConfig(**VIT, num_register_tokens=4)
    model = _model(transformers.Dinov2WithRegistersModel, config)
    ex = build_hf_extractor(model, layer, selection)
    batch = ex.prepare(images)
    hs = _hidden(model, batch["pixel_values"]).hidden_states[index]
    assert hs.shape[1] == 1 + 4 + 16
    expected = _select(hs, selection, n_registers=4)
    torch.testing.assert_close(ex.activations(batch), expected, atol=1e-5, rtol=1e-5)
    assert ex.info.tokens_per_sample == {"cls": 1, "registers": 4, "patches": 16, "all": 21}[selection]


def test_dinov2_pooler_last_hidden_state_and_errors(images):
    model = _model(transformers.Dinov2Model, transformers.Dinov2Config(**VIT))
    pooler = build_hf_extractor(model, "pooler", "cls")
    last = build_hf_extractor(model, "last_hidden_state", "patches")
    batch = pooler.prepare(images)
    out = _hidden(model, batch["pixel_values"])
    torch.testing.assert_close(pooler.activations(batch)[:, 0], out.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last.activations(batch), out.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ExtractorError, match=r"'registers'.*not supported"):
        build_hf_extractor(model, "-1", "registers")  # no registers in plain DINOv2
    with pytest.raises(ExtractorError, match=r"'3' is out of range: this model has 2 blocks"):
        build_hf_extractor(model, "3", "cls")


@pytest.mark.parametrize(("cls", "config_cls", "base"), [
    ("ViTForImageClassification", "ViTConfig", "vit"),
    ("Dinov2ForImageClassification", "Dinov2Config", "dinov2"),
])
def test_classifiers_read_through_their_backbone(images, cls, config_cls, base):
    model = _model(getattr(transformers, cls), getattr(transformers, config_cls)(**VIT, num_labels=5))
    ex = build_hf_extractor(model, "-2", "all")
    batch = ex.prepare(images)
    expected = _hidden(model, batch["pixel_values"]).hidden_states[-2]
    torch.testing.assert_close(ex.activations(batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["ConvNext", "ResNet"])
@pytest.mark.parametrize("layer", ["0", "1", "3", "-1"])
def test_convnets_match_hidden_states(images, family, layer):
    model = _model(getattr(transformers, f"{family}ForImageClassification"), getattr(transformers, f"{family}Config")(**CONV))
    patches = build_hf_extractor(model, layer, "patches", image_size=64)
    pooled = build_hf_extractor(model, layer, "pooled", image_size=64)
    batch = patches.prepare(images)
    hs = _hidden(model, batch["pixel_values"]).hidden_states[int(layer)]
    tokens = hs.flatten(2).transpose(1, 2)  # row-major grid order
    torch.testing.assert_close(patches.activations(batch), tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled.activations(batch), tokens.mean(1, keepdim=True), atol=1e-5, rtol=1e-5)
    assert patches.info.grid == tuple(hs.shape[2:]) and patches.info.d_in == hs.shape[1]


@pytest.mark.parametrize("family", ["ConvNext", "ResNet"])
def test_convnet_pooler(images, family):
    model = _model(getattr(transformers, f"{family}Model"), getattr(transformers, f"{family}Config")(**CONV))
    ex = build_hf_extractor(model, "pooler", "pooled", image_size=64)
    batch = ex.prepare(images)
    out = _hidden(model, batch["pixel_values"])
    torch.testing.assert_close(ex.activations(batch)[:, 0], out.pooler_output.flatten(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ExtractorError, match=r"'cls'.*not supported"):
        build_hf_extractor(model, "-1", "cls", image_size=64)
    with pytest.raises(ExtractorError, match=r"'5' is out of range: this model has 4 stages"):
        build_hf_extractor(model, "5", "patches", image_size=64)


def test_classifier_folder_through_extract(tmp_path, images):
    """A saved ViT classifier with its processor, extracted by `saescope extract --model hf:<folder>`."""
    from precompute.extract import ExtractConfig, extract
    from sae_core.store import ActivationStore

    model = _model(transformers.ViTForImageClassification, transformers.ViTConfig(**VIT, num_labels=5))
    folder = tmp_path / "vit"
    model.save_pretrained(folder)
    processor = transformers.ViTImageProcessor(size={"height": IMAGE, "width": IMAGE})
    processor.save_pretrained(folder)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, im in enumerate(images):
        im.save(imgs / f"{i}.png")
    result = extract(ExtractConfig(dataset=str(imgs), model=f"hf:{folder}", layer="-1", tokens="patches",
                                   data_root=str(tmp_path / "data"), device="cpu"))
    store = ActivationStore(result.store_dpath)
    manifest = json.loads((result.store_dpath / "manifest.json").read_text())
    assert manifest["grid"] == [4, 4] and manifest["image_size"] == IMAGE
    pixel_values = processor(images=[Image.open(imgs / f"{i}.png").convert("RGB") for i in range(3)], return_tensors="pt")["pixel_values"]
    expected = _hidden(model, pixel_values).hidden_states[-1][:, 1:].reshape(-1, D)
    torch.testing.assert_close(store.rows(np.arange(48)), expected, atol=1e-5, rtol=1e-5)


def _siglip2():
    config = transformers.Siglip2VisionConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                                              patch_size=PATCH, num_patches=16)
    return _model(transformers.Siglip2VisionModel, config)


@pytest.mark.parametrize(("layer", "index"), VIT_CASES)
def test_siglip2_square_grid_matches_hidden_states(images, layer, index):
    model = _siglip2()
    ex = build_hf_extractor(model, layer, "patches", image_size=48)  # 6x6 patches from a 4x4 position table
    batch = ex.prepare(images)
    assert batch["pixel_values"].shape == (3, 36, PATCH * PATCH * 3)
    hs = _hidden(model, batch["pixel_values"], pixel_attention_mask=batch["pixel_attention_mask"],
                 spatial_shapes=batch["spatial_shapes"]).hidden_states[index]
    torch.testing.assert_close(ex.activations(batch), hs, atol=1e-5, rtol=1e-5)
    assert ex.info.grid == (6, 6) and ex.info.tokens_per_sample == 36


def test_siglip2_patches_follow_the_processor_and_pooler_is_the_head(images):
    """On a square image the processor's own NaFlex patches are ours, in the same order."""
    model = _siglip2()
    processor = transformers.Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=16)
    ex = build_hf_extractor(model, "-1", "all", processor=processor)
    pooler = build_hf_extractor(model, "pooler", "pooled", processor=processor)
    square = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    theirs = processor(images=[square], return_tensors="pt")
    ours = ex.prepare([square])
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"].float(), atol=1e-5, rtol=1e-5)
    assert ours["spatial_shapes"].tolist() == theirs["spatial_shapes"].tolist() == [[4, 4]]
    batch = ex.prepare(images)
    out = _hidden(model, batch["pixel_values"], pixel_attention_mask=batch["pixel_attention_mask"], spatial_shapes=batch["spatial_shapes"])
    torch.testing.assert_close(pooler.activations(batch)[:, 0], out.pooler_output, atol=1e-5, rtol=1e-5)
    with pytest.raises(ExtractorError, match=r"'cls'.*not supported"):
        build_hf_extractor(model, "-1", "cls")
