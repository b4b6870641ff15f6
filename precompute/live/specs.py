"""What the worker needs to know about each SAE of an index, read once at start-up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from sae_core.contract import resolve_recorded
from sae_core.errors import FormatError


@dataclass(frozen=True)
class LiveSae:
    """One indexed SAE and the extraction that fed it."""

    sae_id: str
    title: str
    model: str
    layer: str
    token_selection: str
    grid: tuple[int, int] | None
    d_in: int
    d_sae: int
    image_size: int | None
    """Model input side recorded in the store (None: the model's default, as extraction used)."""
    model_dtype: str
    modality: str
    checkpoint: Path
    store: Path
    dataset_dpath: Path
    dataset_id: str
    pretrained: str | None = None
    """open_clip:<architecture> weights (tag or checkpoint file) as extraction was given them."""

    @property
    def model_key(self) -> tuple:
        """SAEs with equal keys share one loaded model and one forward pass."""
        return (self.model, self.image_size, self.modality, self.model_dtype, self.pretrained)

    @property
    def layer_key(self) -> tuple:
        return (*self.model_key, self.layer, self.token_selection)

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1] if self.grid else 1

    @property
    def live_problem(self) -> str | None:
        """Why this SAE cannot be run live, or None."""
        if self.model.startswith("diffusers:"):
            return "live inspection of diffusion models is not supported (it would have to generate an image per request)"
        if not self.checkpoint.exists():
            return f"its checkpoint {self.checkpoint} is missing on the worker's machine"
        return None


def resolve_path(value: str, index_fpath: Path) -> Path:
    """Index paths are absolute, or relative to the index file's folder (docs/data-contract.md, Paths)."""
    return resolve_recorded(value, Path(index_fpath).resolve().parent)


def read_specs(index_fpath: Path) -> dict[str, LiveSae]:
    """Every SAE of the index with its model, layer and preprocessing (store manifest)."""
    with duckdb.connect(str(index_fpath), read_only=True) as con:
        rows = con.execute(
            "SELECT s.sae_id, s.title, s.model, s.layer, s.token_selection, s.grid_h, s.grid_w, s.d_in, s.d_sae, "
            "s.checkpoint, s.store, s.dataset_id, d.modality FROM saes s LEFT JOIN datasets d USING (dataset_id) "
            "ORDER BY s.sae_id").fetchall()
    specs = {}
    for (sae_id, title, model, layer, tokens, gh, gw, d_in, d_sae, ckpt, store, dataset_id, modality) in rows:
        store_dpath = resolve_path(store, index_fpath)
        manifest = _store_manifest(store_dpath)
        ds_dpath = resolve_recorded(manifest.get("dataset_dpath") or "", store_dpath)
        specs[sae_id] = LiveSae(
            sae_id=sae_id, title=title, model=model, layer=layer, token_selection=tokens,
            grid=(int(gh), int(gw)) if gh else None, d_in=int(d_in), d_sae=int(d_sae),
            image_size=manifest.get("image_size"), model_dtype=manifest.get("model_dtype") or "float32",
            modality=modality or "image", checkpoint=resolve_path(ckpt, index_fpath), store=store_dpath,
            dataset_dpath=ds_dpath, dataset_id=dataset_id, pretrained=_pretrained(manifest))
    return specs


def read_max_acts(index_fpath: Path, sae_id: str, d_sae: int) -> np.ndarray:
    """Each feature's maximum score over the indexed data (0 where it never fired)."""
    out = np.zeros(d_sae, dtype=np.float64)
    with duckdb.connect(str(index_fpath), read_only=True) as con:
        for fid, mx in con.execute("SELECT feature_id, max_act FROM features WHERE sae_id = ?", [sae_id]).fetchall():
            out[int(fid)] = float(mx or 0.0)
    return out


def _store_manifest(store_dpath: Path) -> dict:
    fpath = store_dpath / "manifest.json"
    if not fpath.is_file():
        return {}
    try:
        return json.loads(fpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FormatError(f"{fpath}: unreadable store manifest ({e})") from None


def _pretrained(manifest: dict) -> str | None:
    """The `--pretrained` extraction was given (kept in the manifest's resolved config)."""
    return (manifest.get("config") or {}).get("pretrained") or None


def spec_from_checkpoint(sae_dpath: Path) -> LiveSae:
    """An SAE outside any index: its cfg.json names the store it was trained on."""
    cfg_fpath = sae_dpath / "cfg.json"
    try:
        cfg = json.loads(cfg_fpath.read_text())
    except (OSError, json.JSONDecodeError):
        raise FormatError(f"{sae_dpath}: no readable cfg.json; give a checkpoint folder written by `saescope train`, or --index") from None
    store = (cfg.get("store") or {}).get("dpath")
    if not store:
        raise FormatError(f"{cfg_fpath}: the SAE does not name its activation store; give --index with an index that holds it")
    store_dpath = resolve_recorded(store, sae_dpath)
    m = _store_manifest(store_dpath)
    if not m:
        raise FormatError(f"{store_dpath}: the SAE's activation store is missing; it is needed to rebuild the extraction")
    ds = resolve_recorded(m.get("dataset_dpath") or "", store_dpath)
    modality = "text" if m.get("model") == "minilm" else "image"
    try:
        modality = json.loads((ds / "manifest.json").read_text()).get("modality", modality)
    except (OSError, json.JSONDecodeError):
        pass
    sae = cfg["sae"]
    return LiveSae(sae_id=sae_dpath.name, title=sae_dpath.name, model=m["model"], layer=m["layer"],
                   token_selection=m["token_selection"], grid=tuple(m["grid"]) if m.get("grid") else None, d_in=int(sae["d_in"]),
                   d_sae=int(sae["d_sae"]), image_size=m.get("image_size"), model_dtype=m.get("model_dtype") or "float32",
                   modality=modality, checkpoint=sae_dpath, store=store_dpath, dataset_dpath=ds, dataset_id=m.get("dataset_id", ""),
                   pretrained=_pretrained(m))
