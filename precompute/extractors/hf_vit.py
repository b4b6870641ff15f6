"""ViT-style image encoders from transformers: ViT (google/vit-*), DINOv2, DINOv2 with registers,
and their image classifiers (`ViTForImageClassification`, `Dinov2ForImageClassification`).

Tokens are laid out `[CLS, registers (DINOv2 with registers), patches]`. Token selections:
`cls`, `registers` (models with registers), `patches` (row-major grid), `all`, `pooled` (mean
over all tokens, as for CLIP). Layers follow `output_hidden_states` (see `precompute.extractors.hf`):
an integer `L` is `hidden_states[L]`, `last_hidden_state` is after the final layernorm, and
`pooler` is the model's `pooler_output` (DINOv2: the normalised CLS token; ViT: its dense+tanh
pooler, when the checkpoint has one). Classifiers are read through their backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from precompute.extractors.base import ExtractorError, ExtractorInfo
from precompute.extractors.module import ModuleExtractor, as_tokens, check_shape, check_token_selection

VIT_MODEL_TYPES = ("vit", "dinov2", "dinov2_with_registers")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def backbone(model: nn.Module) -> nn.Module:
    """The encoder inside a `*ForImageClassification` (the model itself otherwise)."""
    prefix = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix, None) if prefix else None
    return inner if isinstance(inner, nn.Module) else model


def blocks_path(tower: nn.Module) -> str:
    """Module path of the encoder blocks (`layers` in transformers 5's ViT, `encoder.layer` in DINOv2)."""
    n = tower.config.num_hidden_layers
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.rsplit(".", 1)[-1] in ("layer", "layers"):
            return name
    raise ExtractorError(f"cannot find the {n} encoder blocks in {type(tower).__name__}")


def select_prefixed(x: torch.Tensor, token_selection: str, n_registers: int) -> torch.Tensor:
    """[batch, 1 + R + patches, d] -> the tokens asked for."""
    if token_selection == "cls":
        return x[:, :1]
    if token_selection == "registers":
        return x[:, 1:1 + n_registers]
    if token_selection == "patches":
        return x[:, 1 + n_registers:]
    if token_selection == "pooled":
        return x.mean(dim=1, keepdim=True)
    return x


class PrefixTokenExtractor(ModuleExtractor):
    """`ModuleExtractor` for token sequences that start with CLS and register tokens."""

    def __init__(self, model: nn.Module, module_path: str, token_selection: str, *args, n_registers: int = 0, **kwargs) -> None:
        super().__init__(model, module_path, "all", *args, **kwargs)  # the base class knows no `registers`
        self.token_selection, self.n_registers = token_selection, n_registers

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        acts = select_prefixed(as_tokens(raw), self.token_selection, self.n_registers)
        check_shape(acts, self.info)
        return acts.float()


class _ViTForward:
    """ViT needs `interpolate_pos_encoding` at other sizes; DINOv2 always interpolates."""

    def __init__(self, interpolate: bool | None) -> None:
        self.interpolate = interpolate

    def __call__(self, tower: nn.Module, batch: dict) -> Any:
        if self.interpolate is None:
            return tower(pixel_values=batch["pixel_values"])
        return tower(pixel_values=batch["pixel_values"], interpolate_pos_encoding=self.interpolate)


def input_side(prepare) -> int:
    """The side the preprocessing resizes to, read off a probe image (processors differ in how they say it)."""
    return int(prepare([Image.new("RGB", (64, 48))])["pixel_values"].shape[-1])


def _layer_module(tower: nn.Module, layer: str, n_registers: int) -> tuple[str, bool, tuple[str, ...], str | None]:
    """(module path, capture its input, valid selections, selection forced on the module's output)."""
    from precompute.extractors.hf import NAMED_LAYERS, resolve_layer

    token_kinds = ("cls", "patches", "all", "pooled") + (("registers",) if n_registers else ())
    if layer == "last_hidden_state":
        return "layernorm", False, token_kinds, None
    if layer == "pooler":
        if tower.config.model_type.startswith("dinov2"):
            return "layernorm", False, ("pooled", "cls"), "cls"  # pooler_output is the normalised CLS token
        if getattr(tower, "pooler", None) is None:
            raise ExtractorError("layer 'pooler': this ViT checkpoint has no pooler (add_pooling_layer=False); use last_hidden_state with cls")
        return "pooler", False, ("pooled", "cls"), "all"
    if layer not in NAMED_LAYERS:
        path, pre = resolve_layer(layer, tower.config.num_hidden_layers, blocks_path(tower))
        return path, pre, token_kinds, None
    raise ExtractorError(f"layer {layer!r} is not available for {tower.config.model_type}")


def build_vit_extractor(model: nn.Module, layer: str, token_selection: str, *, image_size: int | None, processor: Any,
                        common: dict, device: torch.device | str, dtype: torch.dtype) -> PrefixTokenExtractor:
    """One layer of a ViT / DINOv2 tower (or a classifier's backbone)."""
    from precompute.extractors.hf import PlainImageTransform, ProcessorTransform

    tower = backbone(model)
    config = tower.config
    n_registers = int(getattr(config, "num_register_tokens", 0) or 0)
    module_path, capture_input, valid, forced = _layer_module(tower, layer, n_registers)
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        raise ExtractorError(f"layer {layer!r}: {err}") from None
    is_dinov2 = config.model_type.startswith("dinov2")
    prepare = ProcessorTransform(processor) if processor is not None else None
    if prepare is None or (image_size and image_size != input_side(prepare)):
        mean = getattr(processor, "image_mean", None) or (IMAGENET_MEAN if is_dinov2 else (0.5, 0.5, 0.5))
        std = getattr(processor, "image_std", None) or (IMAGENET_STD if is_dinov2 else (0.5, 0.5, 0.5))
        prepare = PlainImageTransform(image_size or config.image_size, tuple(mean), tuple(std), center_crop=is_dinov2)
    side = input_side(prepare)
    grid = side // config.patch_size
    selection = forced or token_selection
    tokens = {"cls": 1, "pooled": 1, "registers": n_registers, "patches": grid * grid, "all": 1 + n_registers + grid * grid}
    n_tokens = 1 if forced else tokens[selection]
    info = ExtractorInfo(**common, tokens_per_sample=n_tokens, grid=(grid, grid) if selection == "patches" else None,
                         d_in=config.hidden_size, modality="image", input_side=side)
    interpolate = None if is_dinov2 else side != config.image_size
    return PrefixTokenExtractor(tower, module_path, selection, prepare, info, has_cls=True,
                                capture_input=capture_input, forward_fn=_ViTForward(interpolate), device=device, dtype=dtype,
                                n_registers=n_registers)
