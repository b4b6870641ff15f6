"""`saescope info PATH`: a short, human summary of any saescope file or folder."""

from __future__ import annotations

import json
from pathlib import Path

from sae_core.errors import FormatError


def describe(path: Path) -> str:
    if path.is_file() and path.suffix == ".duckdb":
        return _describe_index(path)
    if path.is_dir() and (path / "manifest.json").exists():
        kind = json.loads((path / "manifest.json").read_text()).get("kind")
        if kind == "activation_store":
            return _describe_store(path)
        if kind == "dataset":
            return _describe_dataset(path)
    if path.exists():
        return _describe_sae(path)
    raise FormatError(f"{path}: no such file or folder")


def _describe_sae(path: Path) -> str:
    from sae_core.checkpoint import CFG_FILE, load

    sae = load(path)
    c = sae.cfg
    lines = [f"SAE checkpoint {path}", f"  architecture  {c.arch}" + (f" (k={c.k})" if c.is_topk_family else ""),
             f"  sizes         d_in={c.d_in}  d_sae={c.d_sae}  (x{c.d_sae / c.d_in:g})", f"  input scale   {float(sae.input_scale):.6g}"]
    cfg_fpath = path / CFG_FILE if path.is_dir() else None
    if cfg_fpath and cfg_fpath.exists():
        cfg = json.loads(cfg_fpath.read_text())
        lines.append(f"  trained on    {cfg.get('n_tokens_trained', 0):,} tokens")
        store = cfg.get("store") or {}
        if store:
            lines.append(f"  source        {store.get('model')} layer {store.get('layer')} ({store.get('token_selection')})")
        m = cfg.get("metrics") or {}
        if m:
            lines.append(f"  held-out      explained variance {m['explained_variance']:.4f}  FVU {m['fvu']:.4f}  "
                         f"MSE {m['mse']:.5g}  L0 {m['l0']:.2f}  dead {100 * m['dead_fraction']:.1f}%  ({m['n_tokens']:,} tokens)")
    return "\n".join(lines)


def _describe_store(path: Path) -> str:
    from sae_core.store import ActivationStore

    s = ActivationStore(path, allow_incomplete=True)
    m = s.manifest
    grid = f" grid {s.grid[0]}x{s.grid[1]}" if s.grid else ""
    return (f"activation store {path}\n  model         {m.get('model')} layer {m.get('layer')} ({m.get('token_selection')}{grid})\n"
            f"  size          {s.n_samples:,} samples, {s.n_tokens:,} tokens, d_in={s.d_in}, {s.dtype}, {len(s.shards)} shards\n"
            f"  complete      {m.get('complete')}")


def _describe_dataset(path: Path) -> str:
    m = json.loads((path / "manifest.json").read_text())
    return (f"dataset {path}\n  source        {m['source']} ({m['modality']})\n  samples       {m['n_samples']:,}"
            f" ({m['n_skipped']} skipped)\n  labels        {'yes' if m['has_labels'] else 'no'}")


def _describe_index(path: Path) -> str:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        version = con.execute("SELECT version FROM schema_version").fetchone()[0]
        rows = con.execute("SELECT sae_id, arch, d_sae, l0, explained_variance, dead_fraction FROM saes ORDER BY sae_id").fetchall()
    lines = [f"explorer index {path} (schema {version})"]
    for sae_id, arch, d_sae, l0, ev, dead in rows:
        lines.append(f"  {sae_id}: {arch} d_sae={d_sae} L0 {l0:.1f} explained variance {ev:.3f} dead {100 * dead:.1f}%")
    return "\n".join(lines)
