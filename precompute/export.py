"""`saescope export`: write a saescope SAE as a checkpoint SAELens or EleutherAI sparsify load.

saescope scales raw inputs by `input_scale` s inside the SAE; the other libraries take raw
inputs. The scale is folded into the weights so the exported SAE gives the same latents on the
same raw activations: W_enc' = s W_enc, b_dec' = b_dec / s, W_dec' = W_dec / s (decoder rows then
have norm 1/s), b_enc and thresholds unchanged. The folder is written under a temporary name
and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from sae_core.errors import ConfigError

FORMATS = ("saelens", "sparsify")
SAELENS_ARCHS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated"}


@dataclass(frozen=True)
class ExportConfig:
    sae: str = field(default="", metadata={"help": "saescope SAE checkpoint folder to export"})
    format: str = field(default="saelens", metadata={"help": "saelens (cfg.json + sae_weights.safetensors) or sparsify "
                                                             "(cfg.json + sae.safetensors, TopK SAEs)"})
    out: str = field(default="", metadata={"help": "folder to create (must not exist)"})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r}; choose one of {', '.join(FORMATS)}")
        if not self.sae or not self.out:
            raise ConfigError("give the SAE folder (--sae) and the folder to create (--out)")


def export_sae(cfg: ExportConfig) -> Path:
    """Write the exported checkpoint folder and return its path."""
    from sae_core.checkpoint import load

    out = Path(cfg.out)
    if out.exists():
        raise ConfigError(f"{out} already exists; choose another --out or remove it")
    sae = load(cfg.sae)
    tensors, meta = (_saelens if cfg.format == "saelens" else _sparsify)(sae)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        weights = "sae_weights.safetensors" if cfg.format == "saelens" else "sae.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / weights))
        (tmp / "cfg.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def folded(sae) -> dict[str, torch.Tensor]:
    """The SAE's weights in raw-input units (input_scale folded in), float32 on the CPU."""
    s = float(sae.input_scale)
    with torch.no_grad():
        return {"W_enc": (sae.W_enc * s).float().cpu(), "b_enc": sae.b_enc.float().cpu(),
                "W_dec": (sae.W_dec / s).float().cpu(), "b_dec": (sae.b_dec / s).float().cpu()}


def _saelens(sae) -> tuple[dict[str, torch.Tensor], dict]:
    arch = sae.cfg.arch
    if arch not in SAELENS_ARCHS:
        raise ConfigError(f"a {arch} SAE has no SAELens counterpart; SAELens export covers {', '.join(SAELENS_ARCHS)}")
    w = folded(sae)
    tensors = dict(w)
    if arch == "jumprelu":
        tensors["threshold"] = sae.log_threshold.detach().exp().float().cpu()
    elif arch == "batchtopk":  # inference is `pre > threshold` on every latent: a JumpReLU with one threshold
        tensors["threshold"] = sae.threshold.detach().clamp_min(0).float().cpu().expand(sae.cfg.d_sae).clone()
    elif arch == "gated":
        tensors = {"W_enc": w["W_enc"], "b_gate": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"],
                   "r_mag": sae.r_mag.detach().float().cpu(), "b_mag": sae.b_mag.detach().float().cpu()}
    meta = {"architecture": SAELENS_ARCHS[arch], "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"exported_by": "saescope", "input_scale_folded": float(sae.input_scale)}}
    if arch == "topk":
        meta["k"] = sae.cfg.k
        meta["rescale_acts_by_decoder_norm"] = False
    return tensors, meta


def _sparsify(sae) -> tuple[dict[str, torch.Tensor], dict]:
    if sae.cfg.arch != "topk":
        raise ConfigError(f"sparsify SAEs are TopK; this SAE is {sae.cfg.arch} (export it with --format saelens)")
    w = folded(sae)
    tensors = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    meta = {"activation": "topk", "k": sae.cfg.k, "num_latents": sae.cfg.d_sae, "expansion_factor": max(1, sae.cfg.d_sae // sae.cfg.d_in),
            "normalize_decoder": False, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": sae.cfg.d_in}
    return tensors, meta
