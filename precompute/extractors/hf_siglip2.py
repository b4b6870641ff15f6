"""SigLIP2 (NaFlex) vision towers on a fixed square grid.

SigLIP2 takes images as flattened patches at any aspect ratio, so its token count varies per
image; a store needs one count per sample. Every image is therefore resized to a square of
`grid * patch_size` pixels (grid = sqrt(the processor's `max_num_patches`), 16 for 256 patches,
or `--image-size / patch_size`) and cut into patches in the processor's order: the activations
are those of that square image. Layers as for SigLIP (`precompute.extractors.hf`): integer
hidden_states indices, `last_hidden_state` (after the post-layernorm) and `pooler` (the
attention-pool head). Token selections: `patches` (= `all`, there is no CLS) and `pooled`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from precompute.extractors.base import ExtractorError, ExtractorInfo
from precompute.extractors.module import ModuleExtractor, check_token_selection

DEFAULT_MAX_PATCHES = 256


class SquarePatches:
    """Images -> {pixel_values [b, g*g, p*p*3], pixel_attention_mask, spatial_shapes}; picklable."""

    def __init__(self, grid: int, patch: int, mean: tuple, std: tuple) -> None:
        self.grid, self.patch = grid, patch
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def _one(self, image: Image.Image) -> np.ndarray:
        side = self.grid * self.patch
        x = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        x = (x - self.mean) / self.std  # [H, W, C]
        g, p = self.grid, self.patch
        return x.reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, p * p * 3)  # (row, col) patches of (p_h, p_w, C)

    def __call__(self, images: list) -> dict:
        n = len(images)
        return {
            "pixel_values": torch.from_numpy(np.stack([self._one(im) for im in images])),
            "pixel_attention_mask": torch.ones(n, self.grid * self.grid, dtype=torch.int32),
            "spatial_shapes": torch.tensor([[self.grid, self.grid]] * n, dtype=torch.int64),
        }


def _grid(image_size: int | None, processor: Any, patch: int) -> int:
    if image_size:
        if image_size % patch:
            raise ExtractorError(f"image size {image_size} is not a multiple of SigLIP2's patch size {patch}")
        return image_size // patch
    max_patches = int(getattr(processor, "max_num_patches", 0) or DEFAULT_MAX_PATCHES)
    return math.isqrt(max_patches)


def build_siglip2_extractor(model: nn.Module, layer: str, token_selection: str, *, image_size: int | None, processor: Any,
                            common: dict, device: torch.device | str, dtype: torch.dtype) -> ModuleExtractor:
    """One layer of a SigLIP2 vision tower (a combined model gives its vision tower)."""
    from precompute.extractors.hf import _layers_path, _sibling, resolve_layer

    tower = getattr(model, "vision_model", model) if hasattr(model, "text_model") else model
    config = tower.config
    layers_path = _layers_path(tower)
    capture_input = False
    if layer == "pooler":
        module_path, valid = _sibling(layers_path, "head"), ("pooled",)
    elif layer == "last_hidden_state":
        module_path, valid = _sibling(layers_path, "post_layernorm"), ("patches", "all", "pooled")
    else:
        module_path, capture_input = resolve_layer(layer, config.num_hidden_layers, layers_path)
        valid = ("patches", "all", "pooled")
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        raise ExtractorError(f"layer {layer!r}: {err}") from None
    grid = _grid(image_size, processor, config.patch_size)
    mean = tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5))
    std = tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5))
    keeps_grid = token_selection != "pooled" and layer != "pooler"
    info = ExtractorInfo(**common, tokens_per_sample=grid * grid if keeps_grid else 1, grid=(grid, grid) if keeps_grid else None,
                         d_in=config.hidden_size, modality="image", input_side=grid * config.patch_size)
    return ModuleExtractor(tower, module_path, "all" if keeps_grid else "pooled", SquarePatches(grid, config.patch_size, mean, std),
                           info, has_cls=False, capture_input=capture_input, device=device, dtype=dtype)
