"""Feature edits: change some SAE latents of an activation and keep everything the SAE missed.

An `Edit` is (feature, op, value) with op `add`, `set` or `scale`; several compose in order.
`apply_edits` returns `x + decode(z') - decode(z)`: the SAE error term `x - decode(z)` is kept,
so an empty edit returns `x` exactly (bit for bit) and only the edited features' decoder
directions are added. Values are raw latent units, or multiples of each feature's maximum
activation over the indexed data (`units="max"`, the natural slider scale). A boolean token
mask ([tokens], e.g. chosen patches of the grid) limits an edit to those tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sae_core.errors import ConfigError

Op = Literal["add", "set", "scale"]
Units = Literal["raw", "max"]
OPS: tuple[str, ...] = ("add", "set", "scale")
MAX_EDITS = 64
"""A steering request edits at most this many features (a UI and API cap, not a model limit)."""


@dataclass(frozen=True)
class Edit:
    """One feature edit: `set 0` clamps, a negative `set`/`add` suppresses, `scale` multiplies."""

    feature_id: int
    op: Op
    value: float

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"edit of feature {self.feature_id}: op {self.op!r} is not one of {list(OPS)}")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ConfigError(f"edit of feature {self.feature_id}: value {self.value!r} is not a finite number")
        if isinstance(self.feature_id, bool) or not isinstance(self.feature_id, int) or self.feature_id < 0:
            raise ConfigError(f"edit: feature id {self.feature_id!r} is not an integer >= 0")


def parse_edit(text: str) -> Edit:
    """CLI form: `12=+3` adds 3, `12=-3` adds -3, `12=3` sets 3, `40=0` clamps, `12=*2` scales."""
    fid, sep, rhs = text.partition("=")
    rhs = rhs.strip()
    if not sep or not fid.strip().isdigit() or not rhs:
        raise ConfigError(f"edit {text!r}: write FEATURE=VALUE (set), FEATURE=+VALUE or -VALUE (add), FEATURE=*VALUE (scale)")
    op: Op = "set"
    if rhs[0] in "+-":
        op = "add"
    elif rhs[0] in "*x":
        op, rhs = "scale", rhs[1:]
    try:
        value = float(rhs)
    except ValueError:
        raise ConfigError(f"edit {text!r}: {rhs!r} is not a number") from None
    return Edit(int(fid), op, value)


def check_edits(edits: Sequence[Edit], d_sae: int) -> None:
    """Refuse unknown features and too many edits with a message naming them."""
    if len(edits) > MAX_EDITS:
        raise ConfigError(f"{len(edits)} edits; at most {MAX_EDITS} per request")
    bad = sorted({e.feature_id for e in edits if e.feature_id >= d_sae})
    if bad:
        raise ConfigError(f"feature {bad[0]} does not exist: this SAE has features 0..{d_sae - 1}")


def resolve_units(edits: Sequence[Edit], units: Units, max_act: Mapping[int, float] | None = None) -> list[Edit]:
    """Edits in raw latent units: with `units="max"`, add/set values are multiplied by the feature's
    maximum activation (scale factors are unitless and stay as given)."""
    if units == "raw":
        return list(edits)
    if units != "max":
        raise ConfigError(f"units {units!r}: choose raw or max")
    out = []
    for e in edits:
        if e.op == "scale":
            out.append(e)
            continue
        peak = (max_act or {}).get(e.feature_id)
        if peak is None or not math.isfinite(peak) or peak <= 0:
            raise ConfigError(f"feature {e.feature_id} never fired in the indexed data, so it has no maximum activation; "
                              "give its value in raw units")
        out.append(Edit(e.feature_id, e.op, e.value * float(peak)))
    return out


def edit_code(z: Tensor, edits: Sequence[Edit], token_mask: Tensor | None = None) -> Tensor:
    """A copy of the dense code z [..., tokens, d_sae] (or [tokens, d_sae]) with the edits applied in
    order; `token_mask` [tokens] (bool) limits them to those tokens."""
    edited = z.clone()
    for e in edits:
        col = edited[..., e.feature_id]
        if e.op == "set":
            new = torch.full_like(col, e.value)
        elif e.op == "add":
            new = col + e.value
        else:
            new = col * e.value
        if token_mask is not None:
            new = torch.where(token_mask.to(col.device), new, col)
        edited[..., e.feature_id] = new
    return edited


def cells_mask(cells: Sequence[int] | None, n_tokens: int, grid: tuple[int, int] | None) -> Tensor | None:
    """Chosen cells of the input's grid (row-major ids) -> a boolean token mask; None edits every token."""
    if cells is None:
        return None
    if grid is None and n_tokens == 1:
        raise ConfigError("this SAE reads one pooled vector per input; it has no patches to mask")
    where = f"the {grid[0]}x{grid[1]} grid" if grid else f"the input's {n_tokens} tokens"
    bad = sorted({c for c in cells if not 0 <= c < n_tokens})
    if bad or not cells:
        raise ConfigError(f"patch {bad[0] if bad else '(none)'} is not a cell of {where} (it lies outside cells 0..{n_tokens - 1})")
    mask = torch.zeros(n_tokens, dtype=torch.bool)
    mask[list(cells)] = True
    return mask


def check_mask(token_mask: Tensor | None, n_tokens: int, grid: tuple[int, int] | None) -> None:
    """A mask must have one entry per token of the input (the grid's cells for patch SAEs)."""
    if token_mask is None:
        return
    if token_mask.ndim != 1 or token_mask.numel() != n_tokens:
        shape = f"{grid[0]}x{grid[1]} grid" if grid else f"{n_tokens} token(s)"
        raise ConfigError(f"patch mask has {token_mask.numel()} entries; this SAE's input has a {shape} ({n_tokens} entries)")


@torch.no_grad()
def apply_edits(sae, x: Tensor, edits: Sequence[Edit], token_mask: Tensor | None = None) -> Tensor:
    """x [tokens, d_in] (or [batch, tokens, d_in]) -> x + decode(z') - decode(z), error term kept.

    With no edits (or edits that change nothing) x itself comes back, so the rest of the model
    sees exactly the original activation.
    """
    if not edits:
        return x
    check_edits(edits, sae.cfg.d_sae)
    shape = x.shape
    flat = x.reshape(-1, shape[-1]).to(sae.W_enc.dtype)
    z = sae.encode(flat).reshape(*shape[:-1], -1)
    z_new = edit_code(z, edits, token_mask)
    delta = (z_new - z).reshape(-1, z.shape[-1])
    # decode(z') - decode(z) = (z' - z) W_dec / scale: the biases cancel exactly, and rows whose
    # code did not change get an exact zero.
    change = (delta @ sae.W_dec) / sae.input_scale
    return (flat + change).to(x.dtype).reshape(shape)
