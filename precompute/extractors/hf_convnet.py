"""Convolutional image models from transformers: ConvNeXt and ResNet, bare or as ImageNet classifiers.

Layers follow `output_hidden_states`: `0` is the stem's output, `1..n` the output of stage `L`
(negatives count from the end), each a feature map read as row-major patch tokens; `pooler` is
the model's `pooler_output` (ConvNeXt: the layer-normed spatial mean; ResNet: the average pool).
Token selections: `patches` (= `all`) and `pooled` (mean over the grid).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from precompute.extractors.base import ExtractorError, ExtractorInfo
from precompute.extractors.hf_vit import IMAGENET_MEAN, IMAGENET_STD, backbone, input_side
from precompute.extractors.module import LayerCapture, ModuleExtractor, check_token_selection, get_module

CONVNET_MODEL_TYPES = ("convnext", "resnet")
STEMS = {"convnext": "embeddings", "resnet": "embedder"}
POOLERS = {"convnext": "layernorm", "resnet": "pooler"}


def stage_path(tower: nn.Module, layer: str) -> str:
    """hidden_states index -> the module whose output it is."""
    model_type = tower.config.model_type
    n = len(tower.encoder.stages)
    if layer == "pooler":
        return POOLERS[model_type]
    try:
        index = int(layer)
    except ValueError:
        raise ExtractorError(f"layer {layer!r} is not an integer in [{-n - 1}, {n}] (hidden_states index) nor 'pooler'") from None
    resolved = index if index >= 0 else n + 1 + index
    if not 0 <= resolved <= n:
        raise ExtractorError(f"layer {layer!r} is out of range: this model has {n} stages, so hidden_states indices run {-n - 1}..{n}")
    return STEMS[model_type] if resolved == 0 else f"encoder.stages.{resolved - 1}"


def _forward(tower: nn.Module, batch: dict) -> Any:
    return tower(pixel_values=batch["pixel_values"])


def build_convnet_extractor(model: nn.Module, layer: str, token_selection: str, *, image_size: int | None, processor: Any,
                            common: dict, device: torch.device | str, dtype: torch.dtype) -> ModuleExtractor:
    """One stage of a ConvNeXt / ResNet (or a classifier's backbone), as patch tokens."""
    from precompute.extractors.hf import PlainImageTransform, ProcessorTransform

    tower = backbone(model)
    module_path = stage_path(tower, layer)
    valid = ("pooled",) if layer == "pooler" else ("patches", "all", "pooled")
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        raise ExtractorError(f"layer {layer!r}: {err}") from None
    prepare = ProcessorTransform(processor) if processor is not None else None
    if prepare is None or (image_size and image_size != input_side(prepare)):
        mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
        std = getattr(processor, "image_std", None) or IMAGENET_STD
        prepare = PlainImageTransform(image_size or getattr(tower.config, "image_size", 224), tuple(mean), tuple(std), center_crop=True)
    side = input_side(prepare)
    probe = torch.zeros(1, 3, side, side, device=device, dtype=dtype)
    with torch.inference_mode():
        raw, _ = LayerCapture(get_module(tower, module_path)).run(lambda: _forward(tower, {"pixel_values": probe}))
    shape = raw.shape
    d_in = int(shape[1])
    grid = (int(shape[2]), int(shape[3])) if raw.ndim == 4 else (1, 1)
    n_patches = grid[0] * grid[1]
    keeps_grid = token_selection != "pooled" and n_patches > 1
    info = ExtractorInfo(**common, tokens_per_sample=n_patches if keeps_grid else 1, grid=grid if keeps_grid else None,
                         d_in=d_in, modality="image", input_side=side)
    return ModuleExtractor(tower, module_path, "all" if token_selection == "patches" else token_selection, prepare, info,
                           has_cls=False, forward_fn=_forward, device=device, dtype=dtype)

