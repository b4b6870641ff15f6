"""Classifier tails of transformers image classifiers: the tail on the extractor's activations
gives the model's own logits (tiny configs saved to folders, loaded through `hf:<folder>`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.extractors.hf import build_hf_extractor
from precompute.heads import load_classifier_tail

transformers = pytest.importorskip("transformers")

VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 32, "patch_size": 8,
       "num_labels": 5, "id2label": {i: f"class{i}" for i in range(5)}}
CONV = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_labels": 5, "id2label": {i: f"class{i}" for i in range(5)}}
MODELS = {
    "vit": ("ViTForImageClassification", "ViTConfig", VIT),
    "dinov2": ("Dinov2ForImageClassification", "Dinov2Config", VIT),
    "dinov2_registers": ("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig", {**VIT, "num_register_tokens": 2}),
    "convnext": ("ConvNextForImageClassification", "ConvNextConfig", CONV),
    "resnet": ("ResNetForImageClassification", "ResNetConfig", CONV),
}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(3)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder, model): each classifier saved once, with random weights."""
    out = {}
    for i, (name, (cls, config_cls, kw)) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        model = getattr(transformers, cls)(getattr(transformers, config_cls)(**kw)).eval()
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        out[name] = (folder, model)
    return out


CASES = [
    ("vit", "0", "all", False), ("vit", "2", "all", False), ("vit", "-1", "cls", False), ("vit", "last_hidden_state", "cls", True),
    ("vit", "last_hidden_state", "all", False),
    ("dinov2", "1", "all", False), ("dinov2", "last_hidden_state", "all", False),
    ("dinov2_registers", "-2", "all", False),
    ("convnext", "0", "patches", False), ("convnext", "2", "patches", False), ("convnext", "-1", "pooled", False),
    ("convnext", "pooler", "pooled", True),
    ("resnet", "1", "patches", False), ("resnet", "4", "pooled", True), ("resnet", "pooler", "pooled", True),
]


@pytest.mark.parametrize(("name", "layer", "selection", "linear"), CASES)
def test_tail_on_stored_activations_gives_the_models_logits(saved, images, name, layer, selection, linear):
    folder, model = saved[name]
    size = 64 if name in ("convnext", "resnet") else None
    ex = build_hf_extractor(f"hf:{folder}", layer, selection, image_size=size)
    batch = ex.prepare(images)
    acts = ex.activations(batch)
    tail = load_classifier_tail(f"hf:{folder}", layer, selection)
    assert tail is not None and tail.class_names == [f"class{i}" for i in range(5)]
    with torch.no_grad():
        expected = model(pixel_values=batch["pixel_values"]).logits
    torch.testing.assert_close(tail.logits(acts), expected, atol=1e-4, rtol=1e-4)
    assert (tail.linear is not None) == linear
    if linear:  # logits are one linear map of the mean stored token
        w, b = tail.linear
        torch.testing.assert_close(acts.mean(1) @ w.T + b, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "layer", "selection"), [
    ("vit", "1", "pooled"), ("vit", "1", "cls"), ("dinov2", "-1", "cls"), ("convnext", "2", "pooled"),
])
def test_no_tail_where_the_activations_cannot_be_fed_onwards(saved, name, layer, selection):
    assert load_classifier_tail(f"hf:{saved[name][0]}", layer, selection) is None


def test_no_tail_for_models_without_classes(tmp_path):
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**{k: v for k, v in VIT.items() if k not in ("num_labels", "id2label")})).save_pretrained(tmp_path)
    assert load_classifier_tail(f"hf:{tmp_path}", "-1", "all") is None
