"""Extractor for open_clip image towers (`open_clip:ViT-B-32 --pretrained TAG|FILE`, `open_clip:<folder>`).

The residual stream is read at the blocks of `visual.transformer.resblocks`, numbered as
`precompute.extractors.hf` numbers `hidden_states`: an integer `L` is the input of block 0
(after `ln_pre`) for `L = 0`, the output of block `L - 1` for `1..n`, and negatives count from
the end (`-1` the last block, `-2` the penultimate, the usual SAE choice). `pooler` is the
tower's output (the projected image embedding `encode_image` returns, unnormalised).
Tokens are `[CLS, patches]`: `cls`, `patches` (row-major grid), `all` or `pooled` (mean).
Only transformer towers are read; ResNet (RN50) and timm-trunk towers are refused by name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from precompute.extractors.base import ExtractorError, ExtractorInfo
from precompute.extractors.hf import resolve_layer
from precompute.extractors.module import ModuleExtractor, check_token_selection
from precompute.extractors.open_clip_load import import_open_clip, load_model, resolve_weights

SPEC_PREFIX = "open_clip:"


class OpenClipTransform:
    """open_clip's own eval preprocessing (resize, centre crop, normalise) as a picklable `prepare`."""

    def __init__(self, preprocess: Any) -> None:
        self.preprocess = preprocess

    def __call__(self, images: list) -> dict:
        return {"pixel_values": torch.stack([self.preprocess(im.convert("RGB")) for im in images])}


def _forward_visual(visual: nn.Module, batch: dict) -> Any:
    return visual(batch["pixel_values"])


class _SequenceFirst:
    """Blocks built with `batch_first=False` give [tokens, batch, d]; the store wants batch first."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


def build_open_clip_extractor(spec: str, layer: str, token_selection: str, *, pretrained: str | None = None,
                              device: str = "cpu", image_size: int | None = None, modality: str = "image") -> ModuleExtractor:
    """One layer of an open_clip image tower; the model is loaded once per weights revision."""
    name = spec.removeprefix(SPEC_PREFIX)
    if not name:
        raise ExtractorError(f"model {spec!r} names no model; e.g. open_clip:ViT-B-32 --pretrained laion2b_s34b_b79k")
    if modality == "text":
        raise ExtractorError(f"{spec}: open_clip text towers are not read yet; for captions use hf:<CLIP name or folder>")
    open_clip = import_open_clip()
    model_name, weights, revision = resolve_weights(open_clip, name, pretrained)
    model, preprocess = load_model(model_name, weights, revision, str(device), image_size)
    visual = model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or not hasattr(visual, "class_embedding"):
        raise ExtractorError(f"{spec}: its image tower is a {type(visual).__name__}; only open_clip VisionTransformer towers "
                             "(ViT-*) are read, not ResNet or timm trunks")
    side = visual.grid_size[0] if isinstance(visual.grid_size, tuple) else visual.grid_size
    common = {"model": spec, "model_revision": revision, "layer": str(layer), "token_selection": token_selection}
    if str(layer) == "pooler":
        check_token_selection(token_selection, ("pooled", "cls"))
        module_path, capture_input, tokens, grid = "", False, 1, None
        d_in = visual.output_dim
    else:
        module_path, capture_input = resolve_layer(str(layer), len(blocks), "transformer.resblocks")
        check_token_selection(token_selection, ("cls", "patches", "all", "pooled"))
        tokens, grid = {"cls": (1, None), "pooled": (1, None), "all": (side * side + 1, None),
                        "patches": (side * side, (side, side))}[token_selection]
        d_in = visual.transformer.width
    input_side = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    info = ExtractorInfo(**common, tokens_per_sample=tokens, grid=grid, d_in=d_in, modality="image", input_side=input_side)
    extractor = ModuleExtractor(visual, module_path, token_selection, OpenClipTransform(preprocess), info, has_cls=True,
                                capture_input=capture_input, forward_fn=_forward_visual, device=device)
    if module_path and not getattr(visual.transformer, "batch_first", True):
        extractor.capture.transform = _SequenceFirst()
    return extractor
