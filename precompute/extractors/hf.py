"""Extractors for transformers image/text encoders: CLIP vision and text towers, SigLIP vision.

Layer convention (the same numbers `output_hidden_states=True` uses):
- an integer `L` is `hidden_states[L]`: `L = 0` is the input of block 0 (embeddings, after
  CLIP's pre-layernorm), `1..n` the output of encoder block `L` counted from 1
  (`encoder.layers[L-1]`), negatives count from the end like Python indexing, so `-1` is the
  last block and `-2` the penultimate one (the usual CLIP/SAE choice);
- `last_hidden_state`: the model's `last_hidden_state` (SigLIP: after its post-layernorm; CLIP:
  equals `hidden_states[-1]`, after CLIP text's final layernorm for the text tower);
- `pooler`: the model's `pooler_output` (CLIP vision: post-layernorm CLS; CLIP text: final-layer
  EOS token, the seed's text-SAE input; SigLIP: attention-pool head), one token per sample.

Models load through the libraries' own `from_pretrained`, so a hub name or a local folder works
and nothing here reaches the network by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo
from precompute.extractors.module import (
    LayerCapture,
    ModuleExtractor,
    as_tokens,
    check_shape,
    check_token_selection,
    get_module,
    move_batch,
)

SUPPORTED_MODEL_TYPES = (
    "clip",
    "clip_vision_model",
    "clip_text_model",
    "siglip",
    "siglip_vision_model",
    "siglip2",
    "siglip2_vision_model",
)
TRANSFORMERS_FLOOR = "4.56"
"""Oldest transformers this code runs on: `from_pretrained(dtype=)` arrived in 4.56 (pyproject's
floor must match; tests/test_model_identity.py checks)."""
IMAGE_FAMILY_TYPES = ("vit", "dinov2", "dinov2_with_registers", "convnext", "resnet")
"""Image-only families (precompute.extractors.hf_vit, hf_convnet), bare or as image classifiers."""
NAMED_LAYERS = ("last_hidden_state", "pooler")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def parse_hf_spec(spec: str) -> str:
    """`hf:<name_or_path>` -> `<name_or_path>` (a bare name passes through)."""
    return spec.removeprefix("hf:")


def build_hf_extractor(
    name_or_path: str | nn.Module,
    layer: str,
    token_selection: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    image_size: int | None = None,
    *,
    modality: str | None = None,
    processor: Any = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    revision: str | None = None,
    spec: str | None = None,
) -> Extractor:
    """An extractor for one layer of a CLIP/SigLIP tower.

    `name_or_path`: `hf:<hub name or folder>`, a bare name/folder, or a loaded model object
    (`CLIPVisionModel`, `CLIPTextModel(WithProjection)`, `SiglipVisionModel`, or `CLIPModel` /
    `SiglipModel`, whose tower `modality` picks). Combined checkpoints default to the image
    tower. `image_size` other than the model's trains-at size resizes to that size and
    interpolates position embeddings. `processor`/`tokenizer` override what is loaded from the
    path; models given as objects without them get a plain resize+normalise, and text towers
    then need `tokenizer`. `max_length` (text) defaults to the model's positions (77 for CLIP).
    """
    if modality not in (None, "image", "text"):
        raise ExtractorError(f"modality {modality!r} is not 'image' or 'text'")
    path = parse_hf_spec(name_or_path) if isinstance(name_or_path, str) else None
    if path is not None:
        model = _load_tower(path, modality, revision, dtype)
    else:
        model = name_or_path
    model_name = spec or (f"hf:{path}" if path else f"hf:{model.config._name_or_path or type(model).__name__}")
    common = {
        "model": model_name,
        "model_revision": (_cached_commit(path, revision) if path else None) or revision,  # the commit a branch resolved to
        "layer": str(layer),
        "token_selection": token_selection,
    }
    build_family = _image_family(model)
    if build_family is not None:  # ViT, DINOv2, ConvNeXt, ResNet and their classifiers
        if modality == "text":
            raise ExtractorError(f"{model_name} is an image model ({model.config.model_type}); it cannot take text inputs")
        model.to(device=device, dtype=dtype).eval()
        if processor is None and path is not None:
            processor = _load_image_processor(path, revision)
        return build_family(model, str(layer), token_selection, image_size=image_size, processor=processor, common=common,
                            device=device, dtype=dtype)
    tower = _pick_tower(model, modality)
    kind = _tower_kind(tower)
    tower.to(device=device, dtype=dtype).eval()
    config = tower.config
    if kind == "clip_text":
        if tokenizer is None and path is not None:
            tokenizer = _load_tokenizer(path, revision)
        if tokenizer is None:
            raise ExtractorError(f"{model_name}: a text tower needs a tokenizer; pass tokenizer=")
        check_tokenizer(tokenizer, model_name, config.vocab_size)
        length = max_length or config.max_position_embeddings
        return _build_text(
            tower,
            str(layer),
            token_selection,
            Tokenize(tokenizer, length),
            length,
            common,
            device,
        )
    if processor is None and path is not None:
        processor = _load_image_processor(path, revision)
    return _build_vision(
        tower,
        kind,
        str(layer),
        token_selection,
        image_size,
        processor,
        common,
        device,
        dtype,
    )


# ----------------------------------------------------------------------------- loading


def _load_tower(path: str, modality: str | None, revision: str | None, dtype: torch.dtype) -> nn.Module:
    """Read the config to find the architecture, then load only the tower asked for."""
    import transformers

    check_transformers_version(transformers.__version__)
    config = transformers.AutoConfig.from_pretrained(path, revision=revision)
    model_type = config.model_type
    if model_type in IMAGE_FAMILY_TYPES:
        classifier = any(a.endswith("ForImageClassification") for a in (config.architectures or []))
        auto = transformers.AutoModelForImageClassification if classifier else transformers.AutoModel
        return auto.from_pretrained(path, revision=revision, dtype=dtype)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExtractorError(f"hf:{path} is a {model_type!r} model; supported model types: {list(SUPPORTED_MODEL_TYPES + IMAGE_FAMILY_TYPES)}")
    if model_type in ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model", "clip_text_model"):
        own = "text" if model_type == "clip_text_model" else "image"
        if modality not in (None, own):
            raise ExtractorError(f"hf:{path} is a {own} tower ({model_type}); it cannot take {modality} inputs")
        modality = own
    modality = modality or "image"
    family = model_type.split("_")[0]
    classes = {
        ("clip", "image"): "CLIPVisionModel",
        ("clip", "text"): "CLIPTextModel",
        ("siglip", "image"): "SiglipVisionModel",
        ("siglip2", "image"): "Siglip2VisionModel",
    }
    if (family, modality) not in classes:
        raise ExtractorError(f"hf:{path}: the {family} {modality} tower is not supported; supported: {list(classes)}")
    cls = getattr(transformers, classes[family, modality])
    return cls.from_pretrained(path, revision=revision, dtype=dtype)


def _cached_commit(name: str, revision: str | None) -> str | None:
    """The hub commit whose files were just loaded, read from the huggingface_hub cache (None for
    local folders and when the cache cannot tell)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError:  # not a repo id: a local folder or a malformed name
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else None


def check_transformers_version(installed: str) -> None:
    """One line naming the upgrade instead of a TypeError deep inside `from_pretrained`."""
    from packaging.version import Version

    if Version(installed) < Version(TRANSFORMERS_FLOOR):
        raise ExtractorError(f"transformers {installed} is older than {TRANSFORMERS_FLOOR}, which hf: models need; "
                             f"pip install 'transformers>={TRANSFORMERS_FLOOR}'")


def _load_image_processor(path: str, revision: str | None) -> Any:
    """The checkpoint's own image processor, or None when the folder has none."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path, revision=revision)
    except (OSError, ValueError):
        return None


def _load_tokenizer(path: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError, TypeError):
        return None


PROBE_CAPTIONS = ("a photo of a cat", "two red squares beside the blue house")
MIN_DISTINCT_PROBE_IDS = 4


def check_tokenizer(tokenizer: Any, model_name: str, vocab_size: int) -> None:
    """Refuse a tokenizer that cannot tell captions apart: a folder saved without its tokenizer
    files loads an empty vocabulary that maps every word to one id (identical activations)."""
    fix = "save the tokenizer into the model folder (tokenizer.save_pretrained) or use the hub name"
    try:
        ids = [list(tokenizer(text)["input_ids"]) for text in PROBE_CAPTIONS]
    except Exception as err:  # tokenizers raise many types; any of them means "cannot encode"
        raise ExtractorError(f"{model_name}: its tokenizer cannot encode text ({type(err).__name__}); {fix}") from None
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    distinct = {i for seq in ids for i in seq} - special
    if any(not 0 <= i < vocab_size for seq in ids for i in seq):
        raise ExtractorError(f"{model_name}: its tokenizer gives ids outside the model's vocabulary of {vocab_size}; {fix}")
    if len(distinct) < MIN_DISTINCT_PROBE_IDS:
        raise ExtractorError(f"{model_name}: the tokenizer is missing or empty (different captions encode to the same ids); {fix}")


def _image_family(model: nn.Module):
    """The builder for image-only families, or None for CLIP/SigLIP towers."""
    from precompute.extractors.hf_convnet import CONVNET_MODEL_TYPES, build_convnet_extractor
    from precompute.extractors.hf_siglip2 import build_siglip2_extractor
    from precompute.extractors.hf_vit import VIT_MODEL_TYPES, build_vit_extractor

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in VIT_MODEL_TYPES:
        return build_vit_extractor
    if model_type in CONVNET_MODEL_TYPES:
        return build_convnet_extractor
    if model_type in ("siglip2", "siglip2_vision_model"):
        return build_siglip2_extractor
    return None


def _pick_tower(model: nn.Module, modality: str | None) -> nn.Module:
    """The vision or text tower of a combined model; a single tower passes through."""
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):
        return model.text_model if modality == "text" else model.vision_model
    if hasattr(model, "text_model") and not hasattr(model.config, "image_size"):
        return model.text_model  # CLIPTextModelWithProjection: pooler_output is pre-projection
    return model


def _tower_kind(tower: nn.Module) -> str:
    model_type = getattr(getattr(tower, "config", None), "model_type", None)
    kinds = {
        "clip_vision_model": "clip_vision",
        "clip_text_model": "clip_text",
        "siglip_vision_model": "siglip_vision",
    }
    if model_type not in kinds:
        raise ExtractorError(f"{type(tower).__name__} (model_type {model_type!r}) is not supported; supported towers: {list(kinds)}")
    return kinds[model_type]


def _layers_path(tower: nn.Module) -> str:
    """Where the encoder blocks live; found by search so both flat (transformers 5) and nested
    (`vision_model.encoder.layers`, transformers 4) layouts work."""
    n = tower.config.num_hidden_layers
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.endswith("layers"):
            return name
    raise ExtractorError(f"cannot find the {n} encoder blocks in {type(tower).__name__}")


def _sibling(layers_path: str, name: str) -> str:
    """`encoder.layers` -> `post_layernorm` (or `vision_model.post_layernorm` when nested)."""
    prefix = layers_path.rpartition("encoder.layers")[0]
    return prefix + name


def resolve_layer(layer: str, n_layers: int, layers_path: str) -> tuple[str, bool]:
    """Integer layer -> (module path, capture the module's input instead of its output)."""
    try:
        index = int(layer)
    except ValueError:
        raise ExtractorError(
            f"layer {layer!r} is not an integer in [{-n_layers - 1}, {n_layers}] (hidden_states index) nor one of {list(NAMED_LAYERS)}"
        ) from None
    resolved = index if index >= 0 else n_layers + 1 + index
    if not 0 <= resolved <= n_layers:
        raise ExtractorError(
            f"layer {layer!r} is out of range: this model has {n_layers} blocks, so hidden_states indices run {-n_layers - 1}..{n_layers}"
        )
    if resolved == 0:
        return f"{layers_path}.0", True
    return f"{layers_path}.{resolved - 1}", False


# ----------------------------------------------------------------------------- vision


class PlainImageTransform:
    """Resize + normalise without a processor (models built from configs, custom sizes).

    `center_crop=True` resizes the short side then crops (CLIP), else squashes to a square
    (SigLIP). A class, not a closure, so data-loader workers can pickle it.
    """

    def __init__(self, size: int, mean: tuple, std: tuple, center_crop: bool) -> None:
        self.size, self.center_crop = size, center_crop
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def _one(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        s = self.size
        if self.center_crop:
            w, h = image.size
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            image = image.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - s) // 2, (nh - s) // 2
            image = image.crop((left, top, left + s, top + s))
        else:
            image = image.resize((s, s), Image.Resampling.BICUBIC)
        x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std

    def __call__(self, images: list) -> dict:
        return {"pixel_values": torch.from_numpy(np.stack([self._one(im) for im in images]))}


class ProcessorTransform:
    """A transformers image processor as a picklable `prepare` function."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, images: list) -> dict:
        images = [im.convert("RGB") for im in images]
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}


class _VisionForward:
    def __init__(self, interpolate: bool) -> None:
        self.interpolate = interpolate

    def __call__(self, tower: nn.Module, batch: dict) -> Any:
        return tower(
            pixel_values=batch["pixel_values"],
            interpolate_pos_encoding=self.interpolate,
        )


def _build_vision(
    tower: nn.Module,
    kind: str,
    layer: str,
    token_selection: str,
    image_size: int | None,
    processor: Any,
    common: dict,
    device: torch.device | str,
    dtype: torch.dtype,
) -> ModuleExtractor:
    config = tower.config
    has_cls = kind == "clip_vision"
    layers_path = _layers_path(tower)
    size = image_size or config.image_size
    side = size // config.patch_size
    n_patches = side * side
    capture_input = False
    if layer == "pooler":
        if kind == "siglip_vision" and not getattr(config, "vision_use_head", True):
            raise ExtractorError("layer 'pooler': this SigLIP model has no pooling head (vision_use_head=False)")
        module_path = _sibling(layers_path, "post_layernorm" if has_cls else "head")
        valid = ("pooled", "cls") if has_cls else ("pooled",)
    elif layer == "last_hidden_state":
        module_path = f"{layers_path}.{config.num_hidden_layers - 1}" if has_cls else _sibling(layers_path, "post_layernorm")
        valid = ("cls", "patches", "all", "pooled") if has_cls else ("patches", "all", "pooled")
    else:
        module_path, capture_input = resolve_layer(layer, config.num_hidden_layers, layers_path)
        valid = ("cls", "patches", "all", "pooled") if has_cls else ("patches", "all", "pooled")
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        raise ExtractorError(f"layer {layer!r}: {err}") from None
    if layer == "pooler" or token_selection in ("cls", "pooled"):
        tokens, grid = 1, None
    elif token_selection == "all" and has_cls:
        tokens, grid = n_patches + 1, None
    else:
        tokens, grid = n_patches, (side, side)
    info = ExtractorInfo(
        **common,
        tokens_per_sample=tokens,
        grid=grid,
        d_in=config.hidden_size,
        modality="image",
        input_side=size,
    )
    if processor is not None and size == config.image_size:
        prepare = ProcessorTransform(processor)
    else:
        mean = getattr(processor, "image_mean", None) or (OPENAI_CLIP_MEAN if has_cls else (0.5, 0.5, 0.5))
        std = getattr(processor, "image_std", None) or (OPENAI_CLIP_STD if has_cls else (0.5, 0.5, 0.5))
        prepare = PlainImageTransform(size, tuple(mean), tuple(std), center_crop=has_cls)
    # The pooler's output is one token, which "pooled" (mean) and "cls" (token 0) both keep.
    return ModuleExtractor(
        tower,
        module_path,
        token_selection,
        prepare,
        info,
        has_cls=has_cls,
        capture_input=capture_input,
        forward_fn=_VisionForward(size != config.image_size),
        device=device,
        dtype=dtype,
    )


# ----------------------------------------------------------------------------- text


class Tokenize:
    """Captions -> padded token ids; fixed length so every sample has the same token count."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, captions: list) -> dict:
        enc = self.tokenizer(
            [str(c) for c in captions],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class HFTextExtractor(Extractor):
    """CLIP text tower: `pooler_output` (layer `pooler`), or one layer's token states.

    Token states are `all` (padded to `max_length`, padding rows included so every sample has
    the same count) or `pooled` (mean over real tokens only, using the attention mask).
    """

    def __init__(
        self,
        tower: nn.Module,
        tokenize: Tokenize,
        info: ExtractorInfo,
        module_path: str | None,
        capture_input: bool,
        device: torch.device | str,
    ) -> None:
        self.tower, self.prepare_fn, self.info, self.device = tower, tokenize, info, device
        self.module_path = module_path
        self.capture = LayerCapture(get_module(tower, module_path), pre=capture_input) if module_path is not None else None

    def prepare(self, inputs: list) -> dict:
        return self.prepare_fn(inputs)

    @torch.inference_mode()
    def activations(self, batch: dict) -> torch.Tensor:
        batch = move_batch(batch, self.device)
        if self.capture is None:
            acts = self.tower(**batch).pooler_output[:, None, :]
        else:
            raw, _ = self.capture.run(lambda: self.tower(**batch))
            acts = as_tokens(raw)
            if self.info.token_selection == "pooled":
                mask = batch["attention_mask"][:, :, None].to(acts.dtype)
                acts = (acts * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
        check_shape(acts, self.info)
        return acts.float()


def _build_text(
    tower: nn.Module,
    layer: str,
    token_selection: str,
    tokenize: Tokenize,
    length: int,
    common: dict,
    device: torch.device | str,
) -> HFTextExtractor:
    config = tower.config
    layers_path = _layers_path(tower)
    capture_input = False
    if layer == "pooler":
        module_path, valid = None, ("pooled",)
    elif layer == "last_hidden_state":
        module_path, valid = (
            _sibling(layers_path, "final_layer_norm"),
            ("all", "pooled"),
        )
    else:
        module_path, capture_input = resolve_layer(layer, config.num_hidden_layers, layers_path)
        valid = ("all", "pooled")
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        hint = " (pooler_output, the text-SAE input, is layer='pooler')" if token_selection == "pooled" else ""
        raise ExtractorError(f"layer {layer!r}: {err}{hint}") from None
    tokens = length if token_selection == "all" else 1
    info = ExtractorInfo(
        **common,
        tokens_per_sample=tokens,
        grid=None,
        d_in=config.hidden_size,
        modality="text",
    )
    return HFTextExtractor(tower, tokenize, info, module_path, capture_input, device)
