"""Load SAEs saved by other libraries into a saescope `SparseAutoencoder`.

`sae_core.load(path)` sends every path that is not a saescope checkpoint here. The format is
detected from the files present, by `sae_core.formats.detect`:

| library | files | archs |
| --- | --- | --- |
| SAELens (`sae-lens`, 3.x to 6.x) | `cfg.json` + `sae_weights.safetensors` | standard (ReLU), topk, jumprelu, gated, batchtopk and matryoshka_batchtopk training checkpoints |
| EleutherAI sparsify (`eai-sparsify`) | `cfg.json` + `sae.safetensors` | topk |
| saev (OSU-NLP-Group) | one file: a JSON header line, then a `torch.save`d state dict | relu; topk (schema 1 and 2 headers) |
| dictionary_learning (saprmarks) | `ae.pt` (+ `config.json`) | AutoEncoder, AutoEncoderNew, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE, JumpReluAutoEncoder, GatedAutoEncoder |

Every mapping is exact up to float rounding: the loaded SAE's `encode` returns the library's latents
and `decode` its reconstruction. Differences in where biases are applied are folded into the
weights, e.g. an encoder that computes `x @ W_enc + b_enc` without subtracting `b_dec` becomes
`b_enc' = b_enc + b_dec @ W_enc`; a TopK SAE that ranks `pre * |W_dec row|` gets those norms
folded into the encoder and out of the decoder. Loaded decoders keep their rows' norms.

Not representable, so refused with a `FormatError`: per-input normalisation (SAELens
`normalize_activations` = `layer_norm` / `constant_norm_rescale`), transcoders and skip
connections, sparsify's `groupmax` activation, SAELens abstopk / matching-pursuit / temporal SAEs.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from sae_core.config import SAEConfig
from sae_core.errors import ConfigError, FormatError
from sae_core.formats import SAELENS_WEIGHTS, SUPPORTED_FORMATS, Detected, detect
from sae_core.formats import WEIGHTS_FILE as SPARSIFY_WEIGHTS
from sae_core.model import SparseAutoencoder


def load_foreign(path: str | Path) -> SparseAutoencoder:
    """Load the SAE another library saved at `path` (a folder or a weights file), as `detect` finds it."""
    path = Path(path)
    found = detect(path)
    if found is None:
        raise FormatError(f"{path}: not a checkpoint format saescope can read; supported formats: {SUPPORTED_FORMATS}")
    return load_detected(found)


def load_detected(found: Detected) -> SparseAutoencoder:
    """Run the loader of a foreign format that `detect` found."""
    if found.format == "saescope":
        raise FormatError(f"{found.target}: a saescope checkpoint; load it with sae_core.load")
    return _LOADERS[found.format](found.target)


# ---- building the saescope module ---------------------------------------------------------------
def _build(
    source: Path,
    arch: str,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_dec: Tensor,
    *,
    k: int = 32,
    threshold: Tensor | None = None,
    r_mag: Tensor | None = None,
    b_mag: Tensor | None = None,
) -> SparseAutoencoder:
    """A SparseAutoencoder with exactly these (already saescope-convention) weights.

    W_enc [d_in, d_sae]; W_dec [d_sae, d_in]; `threshold` is a scalar for batchtopk and a
    per-latent vector for jumprelu (values <= 0 mean a plain ReLU).
    """
    W_enc, b_enc, W_dec, b_dec = (t.detach().to(torch.float32) for t in (W_enc, b_enc, W_dec, b_dec))
    if W_enc.ndim != 2:
        raise FormatError(f"{source}: encoder weight has shape {tuple(W_enc.shape)}, expected a matrix")
    d_in, d_sae = W_enc.shape
    expected = {"W_dec": (W_dec, (d_sae, d_in)), "b_enc": (b_enc, (d_sae,)), "b_dec": (b_dec, (d_in,))}
    if r_mag is not None and b_mag is not None:
        expected |= {"r_mag": (r_mag, (d_sae,)), "b_mag": (b_mag, (d_sae,))}
    if threshold is not None and arch == "jumprelu":
        expected["threshold"] = (threshold, (d_sae,))
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise FormatError(f"{source}: {name} has shape {tuple(t.shape)}, expected {shape} for d_in={d_in}, d_sae={d_sae}")
    try:
        cfg = SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=int(k))
    except ConfigError as e:
        raise FormatError(f"{source}: {e}") from None
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
        sae.input_scale.fill_(1.0)
        if arch == "batchtopk":
            sae.threshold.fill_(float(threshold) if threshold is not None else 0.0)
        elif arch == "jumprelu":
            assert threshold is not None
            # x > t with t <= 0 after a ReLU is a plain ReLU: the smallest normal float stands in for 0.
            sae.log_threshold.copy_(threshold.float().clamp_min(torch.finfo(torch.float32).tiny).log())
        elif arch == "gated":
            assert r_mag is not None and b_mag is not None
            sae.r_mag.copy_(r_mag.float())
            sae.b_mag.copy_(b_mag.float())
    sae.eval()
    return sae


def _fold_b_dec(W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
    """b_enc for an encoder that subtracts b_dec, equivalent to `x @ W_enc + b_enc` without it."""
    return b_enc + b_dec @ W_enc


def _fold_decoder_norm(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Latents z * |W_dec row| decoded by W_dec / |W_dec row|: the same SAE with unit decoder rows."""
    norms = W_dec.norm(dim=-1)
    return W_enc * norms, b_enc * norms, W_dec / norms[:, None]


def _need(tensors: dict[str, Tensor], keys: tuple[str, ...], source: Path, what: str) -> list[Tensor]:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise FormatError(f"{source}: {what} weights lack {', '.join(missing)} (found {', '.join(sorted(tensors)) or 'nothing'})")
    return [tensors[k].to(torch.float32) for k in keys]


def _read_json(fpath: Path) -> dict:
    try:
        data = json.loads(fpath.read_text())
    except FileNotFoundError:
        raise FormatError(f"{fpath}: missing config file") from None
    except (OSError, ValueError) as e:
        raise FormatError(f"{fpath}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{fpath}: expected a JSON object")
    return data


def _read_safetensors(fpath: Path) -> dict[str, Tensor]:
    try:
        return load_file(fpath)
    except (OSError, SafetensorError) as e:
        raise FormatError(f"{fpath}: missing or corrupt weights ({e})") from None


def _read_torch(data: str | Path | io.BytesIO, source: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(data, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise FormatError(f"{source}: missing or corrupt weights ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FormatError(f"{source}: expected a state dict of tensors")
    return state


# ---- SAELens ---------------------------------------------------------------------------------
_SAELENS_ARCHS = ("standard", "topk", "jumprelu", "gated", "batchtopk", "matryoshka_batchtopk")


def _load_saelens(dpath: Path) -> SparseAutoencoder:
    cfg_path = dpath / "cfg.json"
    cfg = _read_json(cfg_path)
    tensors = _read_safetensors(dpath / SAELENS_WEIGHTS)
    arch = cfg.get("architecture")
    act_fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch is None:  # SAELens < 6 without an architecture key: standard, or topk via activation_fn
        arch = "topk" if act_fn == "topk" else "standard"
    if arch == "standard" and act_fn == "topk":
        arch = "topk"
    if arch not in _SAELENS_ARCHS:
        raise FormatError(f"{cfg_path}: SAELens architecture {arch!r} cannot be represented; saescope reads {', '.join(_SAELENS_ARCHS)}")
    if arch == "standard" and act_fn not in ("relu", None):
        raise FormatError(f"{cfg_path}: SAELens activation_fn {act_fn!r} is not supported (relu or topk)")
    norm = cfg.get("normalize_activations") or "none"
    if norm is True:
        norm = "expected_average_only_in"
    if norm in ("layer_norm", "constant_norm_rescale"):
        raise FormatError(f"{cfg_path}: normalize_activations={norm!r} rescales each input separately, which a saescope SAE cannot represent")
    # "expected_average_only_in" / "covariance_whitening" are identities at SAELens inference time
    # (the factors are folded into the weights before saving or by its from_pretrained), so the
    # weights are read as they are, like SAELens.load_from_disk does.
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    W_dec, b_dec = _need(tensors, ("W_dec", "b_dec"), dpath / SAELENS_WEIGHTS, "SAELens")
    sf = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    if sf is not None:  # pre-6 finetuning scaling factor multiplies the latents before decoding
        W_dec = W_dec * sf.float()[:, None]

    if arch == "gated":
        W_enc, b_gate, r_mag, b_mag = _need(tensors, ("W_enc", "b_gate", "r_mag", "b_mag"), dpath / SAELENS_WEIGHTS, "SAELens gated")
        if not apply_b_dec:
            shift = b_dec @ W_enc
            b_gate, b_mag = b_gate + shift, b_mag + shift * r_mag.exp()
        return _build(dpath, "gated", W_enc, b_gate, W_dec, b_dec, r_mag=r_mag, b_mag=b_mag)

    W_enc, b_enc = _need(tensors, ("W_enc", "b_enc"), dpath / SAELENS_WEIGHTS, f"SAELens {arch}")
    if not apply_b_dec:
        b_enc = _fold_b_dec(W_enc, b_enc, b_dec)
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk") and cfg.get("rescale_acts_by_decoder_norm"):
        W_enc, b_enc, W_dec = _fold_decoder_norm(W_enc, b_enc, W_dec)
    if arch == "standard":
        return _build(dpath, "relu", W_enc, b_enc, W_dec, b_dec)
    if arch == "topk":
        if k is None:
            raise FormatError(f"{cfg_path}: topk SAE without k")
        return _build(dpath, "topk", W_enc, b_enc, W_dec, b_dec, k=int(k))
    if arch == "jumprelu":
        if "threshold" in tensors:
            threshold = tensors["threshold"].float()
        elif "log_threshold" in tensors:
            threshold = tensors["log_threshold"].float().exp()
        else:
            raise FormatError(f"{dpath / SAELENS_WEIGHTS}: jumprelu weights lack threshold (or log_threshold)")
        return _build(dpath, "jumprelu", W_enc, b_enc, W_dec, b_dec, threshold=threshold)
    # batchtopk training checkpoints: inference is ReLU then `pre > topk_threshold` (SAELens turns
    # them into JumpReLU SAEs with that threshold on every latent), i.e. saescope's batchtopk.
    threshold = tensors.get("topk_threshold", tensors.get("threshold"))
    if threshold is None:
        raise FormatError(f"{dpath / SAELENS_WEIGHTS}: {arch} weights lack topk_threshold")
    if threshold.numel() != 1:
        return _build(dpath, "jumprelu", W_enc, b_enc, W_dec, b_dec, threshold=threshold.float().reshape(-1))
    k_int = max(1, min(round(float(k or 32)), W_enc.shape[1]))
    return _build(dpath, "batchtopk", W_enc, b_enc, W_dec, b_dec, k=k_int, threshold=threshold.float().reshape(()))


# ---- EleutherAI sparsify -----------------------------------------------------------------------
def _load_sparsify(dpath: Path) -> SparseAutoencoder:
    cfg_path = dpath / "cfg.json"
    cfg = _read_json(cfg_path)
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise FormatError(f"{cfg_path}: sparsify transcoders and skip connections are not sparse autoencoders saescope can represent")
    if cfg.get("activation", "topk") != "topk":
        raise FormatError(f"{cfg_path}: sparsify activation {cfg.get('activation')!r} is not supported (topk only)")
    fpath = dpath / SPARSIFY_WEIGHTS
    tensors = _read_safetensors(fpath)
    enc_w, enc_b, W_dec, b_dec = _need(tensors, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), fpath, "sparsify")
    if "W_skip" in tensors:
        raise FormatError(f"{fpath}: sparsify skip connections (W_skip) are not supported")
    d_in = cfg.get("d_in", enc_w.shape[1])
    if enc_w.shape[1] != d_in:
        raise FormatError(f"{fpath}: encoder.weight has shape {tuple(enc_w.shape)} but cfg.json says d_in={d_in}")
    if "k" not in cfg:
        raise FormatError(f"{cfg_path}: no k")
    # sparsify: relu(encoder(x - b_dec)) then top-k; decode = sum of chosen W_dec rows + b_dec.
    return _build(dpath, "topk", enc_w.T, enc_b, W_dec, b_dec, k=int(cfg["k"]))


# ---- saev --------------------------------------------------------------------------------------
def _load_saev(fpath: Path) -> SparseAutoencoder:
    try:
        with open(fpath, "rb") as f:
            header = json.loads(f.readline())
            buffer = io.BytesIO(f.read())
    except (OSError, ValueError) as e:
        raise FormatError(f"{fpath}: unreadable saev header ({e})") from None
    schema = header.get("schema")
    if schema is None:  # saev <= 0.1: the header is the SAE config; ReLU, encoder subtracts b_dec
        cfg, act, subtracts_b_dec = header, {"cls": "Relu"}, True
    elif schema in (1, 2):  # later releases: {"schema", "cfg", ...}; encode() does not subtract b_dec
        cfg = header.get("cfg") or {}
        act = cfg.get("activation") or {"cls": header.get("cls", "Relu"), "params": {"top_k": cfg.get("top_k", 32)}}
        if not isinstance(act, dict):
            raise FormatError(f"{fpath}: unreadable saev activation {act!r}")
        subtracts_b_dec = False
    else:
        raise FormatError(f"{fpath}: saev checkpoint schema {schema} is not supported (saescope reads saev schemas 1 and 2 and headerless ones)")
    state = _read_torch(buffer, fpath)
    W_enc, b_enc, W_dec, b_dec = _need(state, ("W_enc", "b_enc", "W_dec", "b_dec"), fpath, "saev")
    if not subtracts_b_dec:
        b_enc = _fold_b_dec(W_enc, b_enc, b_dec)
    cls = act.get("cls", "Relu")
    if cls == "Relu":
        return _build(fpath, "relu", W_enc, b_enc, W_dec, b_dec)
    if cls in ("TopK", "BatchTopK"):  # saev applies its top-k per sample in both
        return _build(fpath, "topk", W_enc, b_enc, W_dec, b_dec, k=int((act.get("params") or {}).get("top_k", 32)))
    raise FormatError(f"{fpath}: saev activation {cls!r} is not supported (Relu, TopK)")


# ---- dictionary_learning -----------------------------------------------------------------------
_DL_KEYS = {
    "AutoEncoder": {"encoder.weight", "encoder.bias", "decoder.weight", "bias"},
    "AutoEncoderNew": {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"},
    "GatedAutoEncoder": {"encoder.weight", "decoder.weight", "decoder_bias", "r_mag", "gate_bias", "mag_bias"},
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "AutoEncoderTopK": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"},
    "MatryoshkaBatchTopKSAE": {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"},
}
_DL_CLASSES = (*_DL_KEYS, "BatchTopKSAE")


def _load_dictionary_learning(fpath: Path) -> SparseAutoencoder:
    state = _read_torch(fpath, fpath)
    config_path = fpath.parent / "config.json"
    dict_class = None
    if config_path.exists():
        trainer = _read_json(config_path).get("trainer") or {}
        dict_class = trainer.get("dict_class")
        if dict_class is not None and dict_class not in _DL_CLASSES:
            raise FormatError(f"{config_path}: dictionary_learning dict_class {dict_class!r} is not supported ({', '.join(_DL_CLASSES)})")
    if dict_class is None:
        # Without config.json the keys decide; AutoEncoderTopK and BatchTopKSAE share theirs
        # and the former (per-row top-k) is assumed.
        keys = set(state)
        dict_class = next((name for name, need in _DL_KEYS.items() if need == keys), None)
        if dict_class is None:
            raise FormatError(f"{fpath}: not a dictionary_learning SAE state dict (keys: {', '.join(sorted(keys))}); supported formats: {SUPPORTED_FORMATS}")
    what = f"dictionary_learning {dict_class}"
    if dict_class == "AutoEncoder":  # relu(encoder(x - bias)); decoder(f) + bias
        enc_w, enc_b, dec_w, bias = _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "bias"), fpath, what)
        return _build(fpath, "relu", enc_w.T, enc_b, dec_w.T, bias)
    if dict_class == "AutoEncoderNew":  # relu(encoder(x)); decoder(f) with its own bias
        enc_w, enc_b, dec_w, dec_b = _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"), fpath, what)
        return _build(fpath, "relu", enc_w.T, _fold_b_dec(enc_w.T, enc_b, dec_b), dec_w.T, dec_b)
    if dict_class == "GatedAutoEncoder":
        enc_w, dec_w, dec_b, r_mag, gate_b, mag_b = _need(
            state, ("encoder.weight", "decoder.weight", "decoder_bias", "r_mag", "gate_bias", "mag_bias"), fpath, what)
        return _build(fpath, "gated", enc_w.T, gate_b, dec_w.T, dec_b, r_mag=r_mag, b_mag=mag_b)
    if dict_class == "JumpReluAutoEncoder":  # apply_b_dec_to_input is False (and not saved)
        W_enc, b_enc, W_dec, b_dec, thr = _need(state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), fpath, what)
        return _build(fpath, "jumprelu", W_enc, _fold_b_dec(W_enc, b_enc, b_dec), W_dec, b_dec, threshold=thr)
    if dict_class == "MatryoshkaBatchTopKSAE":  # all groups are active at inference
        W_enc, b_enc, W_dec, b_dec, thr = _need(state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), fpath, what)
    else:  # AutoEncoderTopK, BatchTopKSAE
        enc_w, enc_b, dec_w, b_dec, thr = _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "threshold"), fpath, what)
        W_enc, b_enc, W_dec = enc_w.T, enc_b, dec_w.T
    if "k" not in state:
        raise FormatError(f"{fpath}: {what} weights lack k")
    k = int(state["k"])
    if dict_class == "AutoEncoderTopK":  # its encode() ignores the threshold by default
        return _build(fpath, "topk", W_enc, b_enc, W_dec, b_dec, k=k)
    # relu(pre) * (relu(pre) > threshold); a negative (never trained) threshold means plain ReLU.
    if thr.numel() != 1 or not math.isfinite(float(thr)):
        raise FormatError(f"{fpath}: {what} threshold must be one finite number")
    return _build(fpath, "batchtopk", W_enc, b_enc, W_dec, b_dec, k=k, threshold=thr.reshape(()))


_LOADERS = {
    "saelens": _load_saelens,
    "sparsify": _load_sparsify,
    "saev": _load_saev,
    "dictionary_learning": _load_dictionary_learning,
}
