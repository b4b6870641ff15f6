"""`saescope info PATH`: a short, human summary of any saescope file or folder.

Every file is read through the same checks as the commands that use it (read_manifest, the store
and checkpoint readers, the index's schema version), so a damaged file is a one-line error here too.
"""

from __future__ import annotations

import json
from pathlib import Path

from precompute.dataset import read_dataset_manifest
from sae_core.contract import check_version
from sae_core.errors import FormatError


def describe(path: Path) -> str:
    if path.is_file() and path.suffix == ".duckdb":
        return _describe_index(path)
    if path.is_dir() and (path / "manifest.json").exists():
        kind = _manifest_kind(path / "manifest.json")
        if kind == "activation_store":
            return _describe_store(path)
        if kind == "dataset":
            return _describe_dataset(path)
    if path.exists():
        return _describe_sae(path)
    raise FormatError(f"{path}: no such file or folder")


def _manifest_kind(fpath: Path) -> object:
    """Only to pick the reader (which then checks the whole manifest); unreadable is an error here."""
    try:
        obj = json.loads(fpath.read_text())
    except OSError as e:
        raise FormatError(f"{fpath}: cannot be read ({e.strerror}); it should be a saescope JSON manifest") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{fpath}: corrupt JSON ({getattr(e, 'msg', e)}); re-run the job that wrote it") from None
    return obj.get("kind") if isinstance(obj, dict) else None


def fmt_number(value, spec: str, scale: float = 1) -> str:
    """`value` formatted, or '-' where the file holds no number (an older or partial record)."""
    return format(value * scale, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


_METRICS = (("explained variance", "explained_variance", ".4f", 1, ""), ("FVU", "fvu", ".4f", 1, ""),
            ("MSE", "mse", ".5g", 1, ""), ("L0", "l0", ".2f", 1, ""), ("dead", "dead_fraction", ".1f", 100, "%"))


def _describe_sae(path: Path) -> str:
    from sae_core.checkpoint import load, read_cfg
    from sae_core.formats import detect

    sae = load(path)
    c = sae.cfg
    lines = [f"SAE checkpoint {path}", f"  architecture  {c.arch}" + (f" (k={c.k})" if c.is_topk_family else ""),
             f"  sizes         d_in={c.d_in}  d_sae={c.d_sae}  (x{c.d_sae / c.d_in:g})", f"  input scale   {float(sae.input_scale):.6g}"]
    found = detect(path)
    if found is not None and found.format == "saescope":  # not a foreign cfg.json
        cfg = read_cfg(found.target)
        lines.append(f"  trained on    {cfg.get('n_tokens_trained', 0):,} tokens")
        store = cfg.get("store") or {}
        if store:
            lines.append(f"  source        {store.get('model')} layer {store.get('layer')} ({store.get('token_selection')})")
        m = cfg.get("metrics") or {}
        shown = [f"{label} {fmt_number(m[key], spec, scale)}{unit}" for label, key, spec, scale, unit in _METRICS if key in m]
        if "n_tokens" in m:
            shown.append(f"({fmt_number(m['n_tokens'], ',')} tokens)")
        if shown:
            lines.append("  held-out      " + "  ".join(shown))
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
    m = read_dataset_manifest(path)
    return (f"dataset {path}\n  source        {m['source']} ({m['modality']})\n  samples       {m['n_samples']:,}"
            f" ({m['n_skipped']} skipped)\n  labels        {'yes' if m['has_labels'] else 'no'}")


def _describe_index(path: Path) -> str:
    import duckdb

    fix = "rebuild it with `saescope index`"
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        raise FormatError(f"{path}: not a readable DuckDB file ({str(e).splitlines()[0]}); {fix}") from None
    with con:
        try:
            row = con.execute("SELECT version FROM schema_version").fetchone()
        except duckdb.Error:
            raise FormatError(f"{path}: not a saescope index (no schema_version table); {fix}") from None
        version = row[0] if row else None
        check_version(version, "index", path, fix)
        try:
            rows = con.execute("SELECT sae_id, arch, d_sae, l0, explained_variance, dead_fraction FROM saes ORDER BY sae_id").fetchall()
        except duckdb.Error as e:
            raise FormatError(f"{path}: the saes table is missing or incomplete ({str(e).splitlines()[0]}); {fix}") from None
    lines = [f"explorer index {path} (schema {version})"]
    for sae_id, arch, d_sae, l0, ev, dead in rows:
        lines.append(f"  {sae_id}: {arch} d_sae={d_sae} L0 {fmt_number(l0, '.1f')} explained variance {fmt_number(ev, '.3f')} "
                     f"dead {fmt_number(dead, '.1f', 100)}%")
    return "\n".join(lines)
