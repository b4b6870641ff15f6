"""Save and load SAE checkpoints: `cfg.json` + `sae.safetensors` (docs/data-contract.md)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save

from sae_core.config import SAEConfig
from sae_core.contract import (
    SAESCOPE_VERSION,
    SCHEMA_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    git_commit,
    portable_path,
    read_manifest,
    resolve_recorded,
    sha256_file,
)
from sae_core.errors import ConfigError, DataError, FormatError
from sae_core.formats import CFG_FILE, SUPPORTED_FORMATS, WEIGHTS_FILE, detect
from sae_core.model import SparseAutoencoder
from sae_core.validate import is_count, short_repr

_RUNTIME_BUFFERS = ("threshold_n",)


def save(
    sae: SparseAutoencoder,
    dpath: str | Path,
    *,
    train_cfg: object | None = None,
    store: dict | None = None,
    n_tokens_trained: int = 0,
    metrics: dict | None = None,
) -> Path:
    """Write the checkpoint folder; weights first, cfg.json last, so cfg.json marks completeness.
    cfg.json records the weights' size and SHA-256, and the store's folder relative to this one when
    both are in one data root (docs/data-contract.md)."""
    dpath = Path(dpath)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in sae.state_dict().items() if k not in _RUNTIME_BUFFERS}
    data = safetensors_save(tensors)
    atomic_write_bytes(dpath / WEIGHTS_FILE, data)
    if store and store.get("dpath"):
        store = {**store, "dpath": portable_path(store["dpath"], dpath)}
    cfg = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sae",
        "sae": dataclasses.asdict(sae.cfg),
        "input_scale": float(sae.input_scale),
        "train": dataclasses.asdict(train_cfg) if dataclasses.is_dataclass(train_cfg) else train_cfg,
        "store": store,
        "n_tokens_trained": int(n_tokens_trained),
        "metrics": metrics or {},
        "weights": {"file": WEIGHTS_FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "saescope_version": SAESCOPE_VERSION,
        "git_commit": git_commit(),
    }
    atomic_write_json(dpath / CFG_FILE, cfg)
    return dpath


def read_cfg(dpath: str | Path) -> dict:
    """cfg.json, with the objects that readers index into checked, so a hand-edited file is a
    one-line FormatError here instead of a KeyError or AttributeError in whatever reads it next."""
    fpath = Path(dpath) / CFG_FILE
    cfg = read_manifest(fpath, "sae")
    for key in ("sae", "train", "store", "metrics", "weights"):
        value = cfg.get(key)
        if not isinstance(value, dict) and (key == "sae" or key in cfg and value is not None):
            found = "it is missing" if key not in cfg else f"found {short_repr(value)}"
            want = "the SAE config object" if key == "sae" else "an object or null"
            raise FormatError(f"{fpath}: {key!r} must be {want}, {found}; fix it or retrain (see docs/data-contract.md)")
    n_tokens = cfg.get("n_tokens_trained", 0)
    if not is_count(n_tokens):
        raise FormatError(f"{fpath}: 'n_tokens_trained' must be an integer >= 0, found {short_repr(n_tokens)}; fix it or retrain")
    return cfg


def store_dpath(dpath: str | Path, cfg: dict | None = None) -> Path | None:
    """The activation store a saescope checkpoint names (recorded relative to it, or absolute)."""
    cfg = read_cfg(dpath) if cfg is None else cfg
    recorded = (cfg.get("store") or {}).get("dpath")
    return resolve_recorded(recorded, dpath) if isinstance(recorded, str) and recorded else None


def load(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a saescope checkpoint, or one saved by SAELens, sparsify, saev or dictionary_learning
    (a local path, or `hf://owner/repo[/subfolder]` through the Hugging Face cache)."""
    if str(path).startswith("hf://"):
        from sae_core.hub import resolve_hub_path

        path = resolve_hub_path(str(path))
    path = Path(path)
    found = detect(path)
    if found is None:
        raise FormatError(f"{path}: not a checkpoint format saescope can read; supported formats: {SUPPORTED_FORMATS}")
    if found.format == "saescope":
        return _load_own(found.target).to(device)
    from sae_core.interop import load_detected  # foreign formats only when needed

    sae = load_detected(found)
    _check_finite(sae.state_dict(), path)
    return sae.to(device)


def check_outputs(dpath: Path, cfg: dict) -> str | None:
    """Why the finished run in `dpath` cannot be reused (None: it can): its weights file must exist,
    have the size cfg.json records, and hold the tensors and shapes the config needs. Reads only
    the file's header: cheap enough for every reuse. `verify` also checks the bytes."""
    fpath = dpath / WEIGHTS_FILE
    if not fpath.is_file():
        return f"{fpath} is missing"
    want = (cfg.get("weights") or {}).get("bytes")
    if is_count(want) and fpath.stat().st_size != want:
        return f"{fpath} has {fpath.stat().st_size} bytes, cfg.json records {want}"
    try:
        with torch.device("meta"):  # shapes only: no memory for the weights of a large SAE
            sae = SparseAutoencoder(SAEConfig(**cfg["sae"]))
        with safe_open(fpath, "pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, SafetensorError, TypeError, ValueError, ConfigError) as e:
        return f"{fpath} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    expected = {k: list(v.shape) for k, v in sae.state_dict().items() if k not in _RUNTIME_BUFFERS}
    if shapes != expected:
        return f"{fpath} does not hold the tensors cfg.json's config needs"
    return None


def verify(dpath: str | Path) -> str:
    """`saescope verify` of a checkpoint: outputs as for reuse, then the weights' SHA-256 against
    cfg.json's record, then a full load (finite weights). Returns a one-line summary."""
    dpath = Path(dpath)
    cfg = read_cfg(dpath)
    problem = check_outputs(dpath, cfg)
    if problem:
        raise FormatError(f"{problem}; retrain (`saescope train` with the same options)")
    want = (cfg.get("weights") or {}).get("sha256")
    if want is not None and sha256_file(dpath / WEIGHTS_FILE) != want:
        raise FormatError(f"{dpath / WEIGHTS_FILE}: checksum mismatch (the file changed after training); retrain or restore it")
    _load_own(dpath)
    return f"SAE checkpoint {dpath}: ok ({'checksum verified' if want else 'no checksum recorded: sizes and tensors checked'})"


def _load_own(dpath: Path) -> SparseAutoencoder:
    cfg = read_cfg(dpath)
    try:
        sae_cfg = SAEConfig(**cfg["sae"])
        if min(sae_cfg.d_in, sae_cfg.d_sae) <= 0:
            raise ConfigError(f"d_in={sae_cfg.d_in} and d_sae={sae_cfg.d_sae} must be positive in a saved checkpoint")
        sae = SparseAutoencoder(sae_cfg)
    except (TypeError, ValueError, ConfigError) as e:
        raise FormatError(f"{dpath / CFG_FILE}: invalid SAE config ({e})") from None
    try:
        tensors = load_file(dpath / WEIGHTS_FILE)
    except (OSError, SafetensorError) as e:
        raise FormatError(f"{dpath / WEIGHTS_FILE}: missing or corrupt weights ({e})") from None
    _check_weights(sae, tensors, dpath / WEIGHTS_FILE)
    sae.load_state_dict(tensors, strict=False)
    return sae


def _check_weights(sae: SparseAutoencoder, tensors: dict[str, torch.Tensor], fpath: Path) -> None:
    """The weights must be exactly the tensors, with the shapes, that cfg.json's config needs (a
    cfg.json from another run would otherwise fail in load_state_dict), and finite: NaN/inf weights
    load fine but make every activation NaN in training, indexing and the explorer."""
    c = sae.cfg
    expected = {k: v for k, v in sae.state_dict().items() if k not in _RUNTIME_BUFFERS}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise FormatError(f"{fpath}: weights do not match the {c.arch} config (missing {missing}, unexpected {unexpected}); "
                          "the two files come from different runs: retrain or restore the pair")
    for name, want in expected.items():
        if tensors[name].shape != want.shape:
            raise FormatError(f"{fpath}: {name} has shape {list(tensors[name].shape)} but cfg.json (d_in={c.d_in}, d_sae={c.d_sae}) "
                              f"needs {list(want.shape)}; the two files come from different runs: retrain or restore the pair")
    _check_finite(tensors, fpath)


def _check_finite(tensors: dict[str, torch.Tensor], fpath: Path) -> None:
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise DataError(f"{fpath}: weights contain NaN or inf ({', '.join(bad)}); the run diverged — retrain with a lower --lr")
