"""FLUX (diffusers) extractor: one transformer block's image or text stream at the first step.

The recipe (FLUX.1-schnell): generate a 256x256 image from each caption, record the hooked
block's output at the first denoising step, and keep the generated images as the samples'
images (`generated_images()`). Image-stream tokens are the packed latents: each token covers
16x16 pixels (VAE /8, then 2x2 packing), so 256x256 gives a 16x16 patch grid in row-major order.

Stream layout, checked against diffusers 0.42: both `transformer_blocks.N` (double stream) and
`single_transformer_blocks.N` return `(encoder_hidden_states, hidden_states)` = (text, image).
Older diffusers single blocks return one concatenated `[text; image]` tensor, which is split.

diffusers is an optional extra (`saescope[flux]`) imported only when a pipeline is loaded.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo
from precompute.extractors.module import (
    LayerCapture,
    check_shape,
    check_token_selection,
    get_module,
    move_batch,
    select_tokens,
)

DEFAULT_MODEL = "black-forest-labs/FLUX.1-schnell"
STREAMS = ("image", "text")
STREAM_INDEX = {"text": 0, "image": 1}
"""Position of each stream in a block's `(encoder_hidden_states, hidden_states)` output."""
PIXELS_PER_TOKEN = 16
_LAYER_RE = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)$")


class StreamPicker:
    """Pick one stream from a FLUX block output (tuple, or concatenated `[text; image]`)."""

    def __init__(self, stream: str, n_image_tokens: int) -> None:
        self.stream, self.n_image_tokens = stream, n_image_tokens

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, (tuple, list)):
            if len(output) != 2:
                raise ExtractorError(f"FLUX block returned {len(output)} outputs; expected (encoder_hidden_states, hidden_states)")
            return output[STREAM_INDEX[self.stream]]
        if isinstance(output, torch.Tensor):
            n = self.n_image_tokens
            return output[:, -n:] if self.stream == "image" else output[:, :-n]
        raise ExtractorError(f"FLUX block output of type {type(output).__name__} is not understood")


def check_flux_layer(transformer: nn.Module, layer: str) -> None:
    """Refuse anything but an existing `transformer_blocks.N` / `single_transformer_blocks.N`."""
    match = _LAYER_RE.match(layer)
    n_double = len(getattr(transformer, "transformer_blocks", []))
    n_single = len(getattr(transformer, "single_transformer_blocks", []))
    valid = f"transformer_blocks.0..{n_double - 1} (double stream) or single_transformer_blocks.0..{n_single - 1}"
    if match is None:
        raise ExtractorError(f"FLUX layer {layer!r} is not a block; choose {valid}")
    n = n_double if match.group(1) == "transformer_blocks" else n_single
    if int(match.group(2)) >= n:
        raise ExtractorError(f"FLUX layer {layer!r} does not exist; choose {valid}")


def flux_info(
    transformer: nn.Module,
    model: str,
    revision: str | None,
    layer: str,
    stream: str,
    token_selection: str,
    grid: tuple[int, int],
    text_len: int,
) -> ExtractorInfo:
    """Validate layer/stream/selection and describe the activations they give."""
    check_flux_layer(transformer, layer)
    if stream not in STREAMS:
        raise ExtractorError(f"FLUX stream {stream!r} is not one of {list(STREAMS)}")
    valid = ("patches", "all", "pooled") if stream == "image" else ("all", "pooled")
    try:
        check_token_selection(token_selection, valid)
    except ExtractorError as err:
        raise ExtractorError(f"FLUX {stream} stream: {err}") from None
    if token_selection == "pooled":
        tokens, out_grid = 1, None
    elif stream == "image":
        tokens, out_grid = grid[0] * grid[1], grid
    else:
        tokens, out_grid = text_len, None
    config = transformer.config
    return ExtractorInfo(
        model=model,
        model_revision=revision,
        layer=f"{layer}.{stream}",
        token_selection=token_selection,
        tokens_per_sample=tokens,
        grid=out_grid,
        d_in=config.num_attention_heads * config.attention_head_dim,
        modality="text",
    )


class _FluxBase(Extractor):
    """Hook bookkeeping shared by the transformer-only and the pipeline extractors."""

    def __init__(
        self,
        transformer: nn.Module,
        layer: str,
        stream: str,
        token_selection: str,
        info: ExtractorInfo,
        n_image_tokens: int,
        stop: bool,
    ) -> None:
        self.transformer, self.info = transformer, info
        self.token_selection = token_selection
        self.capture = LayerCapture(
            get_module(transformer, layer),
            output_index=StreamPicker(stream, n_image_tokens),
            stop=stop,
            first_call_only=True,
        )

    def _finish(self, raw: torch.Tensor) -> torch.Tensor:
        acts = select_tokens(raw, self.token_selection, has_cls=False)
        check_shape(acts, self.info)
        return acts.float()


class FluxTransformerExtractor(_FluxBase):
    """A `FluxTransformer2DModel` run directly on prepared inputs (no text encoders, no VAE).

    `prepare` takes the transformer's keyword arguments as one dict (`hidden_states` packed
    latents [b, grid_h*grid_w, C], `encoder_hidden_states` [b, text_len, D], `pooled_projections`,
    `timestep`, `img_ids`, `txt_ids`, ...). For bringing your own latents, and for tests.
    """

    def __init__(
        self,
        transformer: nn.Module,
        layer: str,
        stream: str,
        token_selection: str,
        grid: tuple[int, int],
        text_len: int,
        *,
        model: str = "flux-transformer",
        revision: str | None = None,
    ) -> None:
        info = flux_info(transformer, model, revision, layer, stream, token_selection, grid, text_len)
        super().__init__(
            transformer,
            layer,
            stream,
            token_selection,
            info,
            grid[0] * grid[1],
            stop=True,
        )

    def prepare(self, inputs: Any) -> Any:
        if not isinstance(inputs, Mapping):
            raise ExtractorError("FluxTransformerExtractor.prepare takes the transformer's kwargs as a dict")
        return dict(inputs)

    @torch.inference_mode()
    def activations(self, batch: dict) -> torch.Tensor:
        param = next(self.transformer.parameters())
        batch = move_batch(batch, param.device, param.dtype)
        raw, _ = self.capture.run(lambda: self.transformer(**batch, return_dict=False))
        return self._finish(raw)


class FluxPipelineExtractor(_FluxBase):
    """Captions -> FLUX generation; the hooked block's stream at the first denoising step.

    With `generate=True` the pipeline runs to the end and `generated_images()` returns the
    images of the last batch; with `generate=False` the forward stops at the hook (fast, no
    images). Each caption's noise is seeded from `seed` and the caption itself, so a sample's
    image does not depend on the batch it lands in.
    """

    def __init__(
        self,
        pipe: Any,
        layer: str,
        stream: str,
        token_selection: str,
        info: ExtractorInfo,
        *,
        resolution: int,
        num_inference_steps: int,
        guidance_scale: float,
        max_sequence_length: int,
        seed: int,
        generate: bool,
    ) -> None:
        n_image_tokens = info.grid[0] * info.grid[1] if info.grid else (resolution // PIXELS_PER_TOKEN) ** 2
        super().__init__(
            pipe.transformer,
            layer,
            stream,
            token_selection,
            info,
            n_image_tokens,
            stop=not generate,
        )
        self.pipe = pipe
        self.resolution = resolution
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length
        self.seed = seed
        self.generate = generate
        self._images: list | None = None

    def prepare(self, inputs: list) -> list[str]:
        return [str(c) for c in inputs]

    def caption_seed(self, caption: str) -> int:
        return (self.seed + zlib.crc32(caption.encode("utf-8"))) % (2**63)

    @torch.inference_mode()
    def activations(self, batch: list[str]) -> torch.Tensor:
        generators = [torch.Generator("cpu").manual_seed(self.caption_seed(c)) for c in batch]
        self._images = None

        def run() -> Any:
            return self.pipe(
                prompt=batch,
                height=self.resolution,
                width=self.resolution,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                max_sequence_length=self.max_sequence_length,
                generator=generators,
                output_type="pil",
            )

        raw, result = self.capture.run(run)
        if self.generate and result is not None:
            self._images = list(result.images)
        return self._finish(raw)

    @property
    def generates_images(self) -> bool:
        return self.generate

    def generated_images(self) -> list | None:
        return self._images


def split_stream(layer: str, stream: str | None = None) -> tuple[str, str]:
    """`transformer_blocks.18.text` -> (`transformer_blocks.18`, `text`); a bare block path
    takes `stream` (default `image`). Lets a single layer string name block and stream."""
    block, _, suffix = layer.rpartition(".")
    if suffix in STREAMS:
        if stream not in (None, suffix):
            raise ExtractorError(f"FLUX layer {layer!r} names the {suffix} stream but stream={stream!r}")
        return block, suffix
    return layer, stream or "image"


def build_flux_extractor(
    name_or_pipeline: str | Any = DEFAULT_MODEL,
    layer: str = "transformer_blocks.18",
    token_selection: str = "patches",
    device: torch.device | str = "cuda",
    dtype: torch.dtype | None = None,
    image_size: int | None = 256,
    *,
    stream: str | None = None,
    num_inference_steps: int = 4,
    guidance_scale: float = 0.0,
    max_sequence_length: int = 256,
    seed: int = 0,
    generate: bool = True,
    revision: str | None = None,
    spec: str | None = None,
) -> FluxPipelineExtractor:
    """A FLUX pipeline extractor; defaults are the FLUX.1-schnell recipe (256 px, 4 steps, no
    guidance, 256 T5 tokens).

    `name_or_pipeline`: hub name or local folder (optionally `diffusers:`/`flux:` prefixed,
    loaded with `FluxPipeline.from_pretrained`) or a loaded pipeline. `layer`:
    `transformer_blocks.N` or `single_transformer_blocks.N`, optionally suffixed `.image` /
    `.text` for the stream (or pass `stream=`; default image). `image_size`: generated image
    side in pixels, a multiple of 16 (None: 256). `dtype` defaults to bfloat16 on CUDA, float32 elsewhere.
    """
    layer, stream = split_stream(layer, stream)
    image_size = image_size or 256
    if image_size % PIXELS_PER_TOKEN:
        raise ExtractorError(f"FLUX image size {image_size} must be a multiple of {PIXELS_PER_TOKEN}")
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(name_or_pipeline, str):
        name = name_or_pipeline.removeprefix("diffusers:").removeprefix("flux:")
        try:
            from diffusers import FluxPipeline
        except ImportError as err:
            raise ExtractorError("FLUX needs diffusers: pip install 'saescope[flux]'") from err
        pipe = FluxPipeline.from_pretrained(name, torch_dtype=dtype, revision=revision).to(device)
    else:
        pipe = name_or_pipeline
        name = getattr(pipe, "name_or_path", None) or "flux"
    pipe.set_progress_bar_config(disable=True)
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, nn.Module):
            component.eval()  # pipelines built from parts start in train mode (T5 dropout)
    side = image_size // PIXELS_PER_TOKEN
    model = spec or f"diffusers:{name}"
    info = flux_info(pipe.transformer, model, revision, layer, stream, token_selection, (side, side), max_sequence_length)
    return FluxPipelineExtractor(
        pipe,
        layer,
        stream,
        token_selection,
        info,
        resolution=image_size,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        max_sequence_length=max_sequence_length,
        seed=seed,
        generate=generate,
    )
