"""Steering FLUX: SAE feature edits inside FLUX Redux and inside FLUX transformer blocks.

Two places take an edit (`sae_core.steering`, error term kept, so an empty edit changes nothing):
- Redux (the seed's recipe): a forward pre-hook on `FluxPriorReduxPipeline.image_embedder`
  edits SigLIP's `last_hidden_state` [batch, grid_h*grid_w (27x27 = 729), 1152] before the
  Redux projector turns it into FLUX conditioning; `FluxPipeline(**prior_output)` then generates.
- A FLUX block (`transformer_blocks.N.image|text`, `single_transformer_blocks.N.image|text`,
  named as in `precompute.extractors.flux`): a forward hook edits that stream of the block's
  output, only at the chosen denoising steps (step = index of the transformer call).

A sweep multiplies the edits' values by each strength and generates at a fixed seed, so the
images differ only by the edit. diffusers (`saescope[flux]`) is imported only when loading.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from precompute.extractors.flux import (
    PIXELS_PER_TOKEN,
    STREAM_INDEX,
    StreamPicker,
    check_flux_layer,
    split_stream,
)
from precompute.extractors.module import get_module
from sae_core.errors import ConfigError
from sae_core.progress import progress
from sae_core.steering import Edit, apply_edits, cells_mask, check_edits, check_mask

REDUX = "redux"
"""Edit site name for the SigLIP -> Redux embedder hook (the alternative is a FLUX block layer)."""


@dataclass
class EditRecord:
    """What a steering hook did during a run: the transformer call count and where it edited."""

    step: int = -1
    fired_steps: list[int] = field(default_factory=list)
    n_edits: int = 0
    last_input: Tensor | None = None
    """The tensor the hooked module received last (edited), for checks and tests."""


@dataclass(frozen=True)
class Generation:
    """FluxPipeline settings shared by every image of a sweep (same seed: only the edit differs)."""

    seed: int = 0
    steps: int = 4
    size: int = 256
    guidance: float = 2.5
    max_sequence_length: int = 256
    """T5 tokens of a text prompt (FLUX.1-schnell's maximum); unused with Redux conditioning."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps}: generate with at least 1 denoising step")
        if self.size < PIXELS_PER_TOKEN or self.size % PIXELS_PER_TOKEN:
            raise ConfigError(f"size={self.size}: the image side must be a positive multiple of {PIXELS_PER_TOKEN} pixels")


def check_width(sae, width: int, where: str) -> None:
    """An SAE edits only activations as wide as the ones it was trained on."""
    if sae.cfg.d_in != width:
        raise ConfigError(f"the SAE has d_in={sae.cfg.d_in} but {where} is {width} wide; use an SAE trained on {where}")


def check_redux_width(prior: Any, sae) -> None:
    check_width(sae, prior.image_encoder.config.hidden_size, "SigLIP's last_hidden_state (the Redux embedder's input)")


def siglip_grid(prior: Any) -> tuple[int, int]:
    """SigLIP's patch grid (27x27 for so400m at 384 px): one token per cell, row-major."""
    cfg = prior.image_encoder.config
    side = cfg.image_size // cfg.patch_size
    return side, side


def patch_mask(patches: Sequence[int] | None, grid: tuple[int, int]) -> Tensor | None:
    """Cells of the grid (row-major ids) -> a boolean token mask; None edits every token."""
    return cells_mask(patches, grid[0] * grid[1], grid)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _edit_tokens(sae, x: Tensor, edits: Sequence[Edit], mask: Tensor | None, grid: tuple[int, int] | None) -> Tensor:
    """apply_edits with the mask checked against the tokens actually seen."""
    if x.shape[-1] != sae.cfg.d_in:
        raise ConfigError(f"the hooked activation is {x.shape[-1]} wide but the SAE has d_in={sae.cfg.d_in}")
    check_mask(mask, x.shape[-2], grid)
    return apply_edits(sae, x, edits, mask)


@contextmanager
def redux_edit(prior: Any, sae, edits: Sequence[Edit], token_mask: Tensor | None = None) -> Iterator[EditRecord]:
    """Edit SigLIP's last_hidden_state on its way into the Redux `image_embedder`."""
    check_redux_width(prior, sae)
    check_edits(edits, sae.cfg.d_sae)
    grid = siglip_grid(prior)
    check_mask(token_mask, grid[0] * grid[1], grid)
    sae.to(_device_of(prior.image_embedder))
    record = EditRecord()

    def hook(module: nn.Module, args: tuple) -> tuple:
        edited = _edit_tokens(sae, args[0], edits, token_mask, grid)
        record.n_edits += 1
        record.last_input = edited
        return (edited, *args[1:])

    handle = prior.image_embedder.register_forward_pre_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def replace_stream(output: Any, stream: str, new: Tensor, n_image_tokens: int | None) -> Any:
    """A block output with one stream replaced (tuple `(text, image)` or concatenated `[text; image]`)."""
    if isinstance(output, (tuple, list)):
        parts = list(output)
        parts[STREAM_INDEX[stream]] = new
        return type(output)(parts)
    if n_image_tokens is None:
        raise ConfigError("this diffusers version concatenates a single block's streams; pass the image size to split them")
    text, image = output[:, :-n_image_tokens], output[:, -n_image_tokens:]
    return torch.cat([text, new] if stream == "text" else [new, image], dim=1)


@contextmanager
def block_edit(
    transformer: nn.Module,
    layer: str,
    sae,
    edits: Sequence[Edit],
    at_steps: Sequence[int] | None = None,
    token_mask: Tensor | None = None,
    n_image_tokens: int | None = None,
) -> Iterator[EditRecord]:
    """Edit one stream of a FLUX block's output at the denoising steps `at_steps` (None: all).

    `layer` is `transformer_blocks.N[.image|.text]` or `single_transformer_blocks.N[...]` (image
    by default). Steps are counted as calls of the transformer, from 0 in each `with` block.
    """
    block_path, stream = split_stream(layer)
    check_flux_layer(transformer, block_path)
    cfg = transformer.config
    check_width(sae, cfg.num_attention_heads * cfg.attention_head_dim, f"FLUX {block_path}.{stream}")
    check_edits(edits, sae.cfg.d_sae)
    steps = None if at_steps is None else set(at_steps)
    picker = StreamPicker(stream, n_image_tokens or 0)
    sae.to(_device_of(transformer))
    record = EditRecord()

    def count(module: nn.Module, args: tuple) -> None:
        record.step += 1

    def edit(module: nn.Module, args: tuple, output: Any) -> Any:
        if steps is not None and record.step not in steps:
            return None
        if not isinstance(output, (tuple, list)) and n_image_tokens is None:
            raise ConfigError("this diffusers version concatenates a single block's streams; pass n_image_tokens to split them")
        picked = picker(output)
        edited = _edit_tokens(sae, picked, edits, token_mask, None)
        record.fired_steps.append(record.step)
        record.n_edits += 1
        record.last_input = edited
        return replace_stream(output, stream, edited, n_image_tokens)

    handles = [transformer.register_forward_pre_hook(count), get_module(transformer, block_path).register_forward_hook(edit)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


def redux_condition(prior: Any, image: Any) -> dict[str, Tensor]:
    """FLUX conditioning from one image: Redux's (prompt_embeds, pooled_prompt_embeds)."""
    out = prior(image=image)
    return {"prompt_embeds": out.prompt_embeds, "pooled_prompt_embeds": out.pooled_prompt_embeds}


def condition_for(prior: Any, source: Any, gen: Generation) -> dict[str, Any]:
    """FluxPipeline inputs: Redux conditioning of an image, or a text prompt (a str) for a
    pipeline loaded with its text encoders."""
    if isinstance(source, str):
        return {"prompt": source, "max_sequence_length": gen.max_sequence_length}
    if prior is None:
        raise ConfigError("an input image needs the Redux prior (--prior) to become FLUX conditioning")
    return redux_condition(prior, source)


def generate(flux: Any, condition: dict[str, Any], gen: Generation) -> Any:
    """One PIL image; the seed's noise is drawn on the CPU, so it is the same on every device."""
    result = flux(
        **condition,
        height=gen.size,
        width=gen.size,
        num_inference_steps=gen.steps,
        guidance_scale=gen.guidance,
        generator=torch.Generator("cpu").manual_seed(gen.seed),
        output_type="pil",
    )
    return result.images[0]


def scale_edits(edits: Sequence[Edit], strength: float) -> list[Edit]:
    """Edits at a sweep strength: add/set values times `strength`, scale factors to its power
    (so strength 0 leaves scale edits and adds as no-ops, and `set` clamps to 0)."""
    out = []
    for e in edits:
        if e.op != "scale":
            out.append(Edit(e.feature_id, e.op, e.value * strength))
        elif e.value > 0 or strength in (0, 1):
            out.append(Edit(e.feature_id, e.op, e.value ** strength))
        else:
            raise ConfigError(f"feature {e.feature_id}: a scale factor of {e.value:g} has no strength {strength:g}; "
                              "sweep it with strengths 0 and 1 only, or use a positive factor")
    return out


@dataclass(frozen=True)
class EditSite:
    """Where the SAE edit goes: `redux` (SigLIP -> embedder) or a FLUX block layer with steps."""

    layer: str = REDUX
    at_steps: tuple[int, ...] | None = None
    """Denoising steps (0-based transformer calls) at which a block edit fires; None: every step."""

    def check(self, gen: Generation) -> None:
        if self.layer == REDUX:
            if self.at_steps is not None:
                raise ConfigError("--at-steps is for FLUX block edits; the Redux edit changes the conditioning of every step")
            return
        bad = sorted(s for s in self.at_steps or () if not 0 <= s < gen.steps)
        if bad:
            raise ConfigError(f"step {bad[0]} is not one of the {gen.steps} denoising steps (0..{gen.steps - 1})")


def _site_context(site: EditSite, prior: Any, flux: Any, sae, edits: list[Edit], mask: Tensor | None, gen: Generation):
    if site.layer == REDUX:
        return redux_edit(prior, sae, edits, mask)
    n_image_tokens = (gen.size // PIXELS_PER_TOKEN) ** 2
    return block_edit(flux.transformer, site.layer, sae, edits, site.at_steps, mask, n_image_tokens)


def sweep(
    prior: Any,
    flux: Any,
    source: Any,
    sae,
    edits: Sequence[Edit],
    strengths: Sequence[float],
    *,
    site: EditSite = EditSite(),
    token_mask: Tensor | None = None,
    gen: Generation = Generation(),
) -> list[Any]:
    """One generated image per strength (edits' values times the strength), same seed for all.

    `source` is the input image (Redux conditioning through `prior`) or a text prompt (a str; the
    FLUX pipeline then needs its text encoders, and only block edits apply)."""
    site.check(gen)
    check_edits(edits, sae.cfg.d_sae)
    if site.layer == REDUX and isinstance(source, str):
        raise ConfigError("the Redux edit acts on an input image; with a text prompt, edit a FLUX block (--layer)")
    base = None if site.layer == REDUX else condition_for(prior, source, gen)  # a block edit leaves Redux alone
    images = []
    for strength in progress(iterable=list(strengths), desc="steer-flux", unit="image"):
        with _site_context(site, prior, flux, sae, scale_edits(edits, strength), token_mask, gen):
            condition = base if base is not None else redux_condition(prior, source)
            images.append(generate(flux, condition, gen))
    return images


def _diffusers() -> Any:
    """diffusers, imported on first use; with SAESCOPE_PROGRESS=0 its loading bars stay quiet too."""
    import os

    try:
        import diffusers
        import transformers
    except ImportError as err:
        raise ConfigError("FLUX steering needs diffusers: pip install 'saescope[flux]'") from err
    if os.environ.get("SAESCOPE_PROGRESS") == "0":
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    return diffusers


def _dtype(device: str, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_prior(name: str, device: str, dtype: torch.dtype | None = None) -> Any:
    """FluxPriorReduxPipeline (SigLIP + Redux embedder) via diffusers' from_pretrained: a hub name
    or a local folder; `dtype` defaults to bfloat16 on CUDA, float32 elsewhere."""
    pipe = _from_pretrained(_diffusers().FluxPriorReduxPipeline, name, "--prior", torch_dtype=_dtype(device, dtype)).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_flux(name: str, device: str, dtype: torch.dtype | None = None, *, text_encoders: bool = False) -> Any:
    """FluxPipeline; without text encoders or tokenizers (Redux supplies the conditioning) unless
    `text_encoders` (generation from a text prompt)."""
    skip = {} if text_encoders else {"text_encoder": None, "text_encoder_2": None, "tokenizer": None, "tokenizer_2": None}
    pipe = _from_pretrained(_diffusers().FluxPipeline, name, "--flux", torch_dtype=_dtype(device, dtype), **skip).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_pretrained(cls: type, name: str, flag: str, **kwargs: Any) -> Any:
    """diffusers' own loader; a folder or name it cannot load is a one-line error naming the flag."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{flag} {name}: cannot load a {cls.__name__} ({first}); give a diffusers folder or hub name") from None
