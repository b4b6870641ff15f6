"""Classifier tails reproduce the full model's logits from stored-layer activations."""

from __future__ import annotations

import pytest
import torch

from precompute.extractors.efficientnet import EfficientNetExtractor
from precompute.heads import imagenet_class_names, load_classifier_tail
from precompute.sources import EmojiSource


@pytest.fixture(scope="module")
def emoji_images():
    src = EmojiSource(limit=40)
    return [src.load(i) for i in (0, 17, 39)]


@pytest.mark.parametrize(("layer", "tokens"), [("head", "pooled"), ("head", "patches"), ("blocks.15", "patches"), ("blocks.12", "patches")])
def test_tail_equals_full_model(emoji_images, layer, tokens):
    ext = EfficientNetExtractor(layer, tokens, image_size=128)
    batch = ext.prepare(emoji_images)
    tail = load_classifier_tail("efficientnet-lite0", layer, tokens, module=ext.model)
    assert tail is not None and len(tail.class_names) == 1000
    want = ext.logits(batch)
    got = tail.logits(ext.activations(batch))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_linear_projection_is_the_classifier(emoji_images):
    ext = EfficientNetExtractor("head", "pooled", image_size=128)
    tail = load_classifier_tail("efficientnet-lite0", "head", "pooled", module=ext.model)
    W, b = tail.linear
    acts = ext.activations(ext.prepare(emoji_images))
    torch.testing.assert_close(acts[:, 0] @ W.T + b, tail.logits(acts), rtol=1e-5, atol=1e-5)


def test_no_tail_without_classes_or_spatial_map():
    assert load_classifier_tail("hf:openai/clip-vit-large-patch14", "-2", "cls") is None
    assert load_classifier_tail("efficientnet-lite0", "blocks.15", "pooled") is None


def test_top_classes_named_and_sorted(emoji_images):
    ext = EfficientNetExtractor("head", "pooled", image_size=128)
    tail = load_classifier_tail("efficientnet-lite0", "head", "pooled", module=ext.model)
    top = tail.top_classes(tail.logits(ext.activations(ext.prepare(emoji_images))), n=5)
    assert len(top) == 3 and all(len(t) == 5 for t in top)
    for row in top:
        probs = [c["prob"] for c in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert all(c["name"] == imagenet_class_names()[c["class_id"]] for c in row)
