"""`saescope steer`: the explorer's steering experiment from the command line, with a report.

Writes a JSON report (edits in raw units, each target before and after, per sweep strength)
and, for image datasets, a PNG grid beside it: one row per strength, the input followed by the
nearest dataset images after the edit, labelled with the model's top class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from precompute.live.engine import LiveEngine
from precompute.live.inputs import LiveInput, check_text, decode_image
from precompute.live.specs import spec_from_checkpoint
from precompute.live.steer import steer
from sae_core.contract import atomic_write_bytes, atomic_write_json
from sae_core.errors import ConfigError
from sae_core.steering import Edit, parse_edit

TILE = 96


def parse_sweep(text: str) -> list[float]:
    if not text:
        return [1.0]
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {text!r}: give comma-separated numbers, e.g. 0,1,2,4") from None
    if not values or any(v != v or abs(v) == float("inf") for v in values):
        raise ConfigError(f"--sweep {text!r}: give comma-separated finite numbers, e.g. 0,1,2,4")
    return values


def scaled(edits: list[Edit], strength: float) -> list[Edit]:
    """A sweep multiplies the values of add and set edits; scale factors stay as given."""
    return [e if e.op == "scale" else Edit(e.feature_id, e.op, e.value * strength) for e in edits]


def _engine(args: argparse.Namespace) -> tuple[LiveEngine, str]:
    if args.index:
        engine = LiveEngine(args.index, args.device)
        if args.sae in engine.specs:
            return engine, args.sae
        wanted = Path(args.sae).resolve()
        for sid, spec in engine.specs.items():
            if spec.checkpoint.resolve() == wanted:
                return engine, sid
        raise ConfigError(f"--sae {args.sae!r} is neither an SAE id nor a checkpoint of {args.index}; it has {', '.join(engine.specs)}")
    if args.units == "max":
        raise ConfigError("--units max needs --index (each feature's max activation is in the index); or pass --units raw")
    spec = spec_from_checkpoint(Path(args.sae))
    return LiveEngine(None, args.device, specs={spec.sae_id: spec}), spec.sae_id


def _input(engine: LiveEngine, sae_id: str, args: argparse.Namespace) -> LiveInput:
    if args.image:
        return LiveInput(decode_image(Path(args.image).read_bytes()), "image")
    if args.text is not None:
        return LiveInput(check_text(args.text), "text")
    return engine.sample(sae_id, args.sample_id)


def run_steer(args: argparse.Namespace) -> Path:
    edits = [parse_edit(e) for e in args.edits]
    if not edits:
        raise ConfigError("no --edit given; e.g. --edit 257=+3 (add 3 x max) or --edit 40=0 (clamp)")
    strengths = parse_sweep(args.sweep)
    patches = [int(p) for p in args.patches.split(",") if p.strip()] if args.patches else None
    engine, sae_id = _engine(args)
    item = _input(engine, sae_id, args)
    acts = engine.activations([sae_id], [item])[0][sae_id]
    runs = [{"strength": s, **steer(engine, sae_id, acts, scaled(edits, s), args.units, patches)} for s in strengths]
    spec = engine.specs[sae_id]
    report = {"sae_id": sae_id, "checkpoint": str(spec.checkpoint), "model": spec.model, "layer": spec.layer,
              "input": {"kind": item.kind, "image": args.image, "text": args.text, "sample_id": args.sample_id},
              "units": args.units, "patches": patches, "edits": [e.__dict__ for e in edits], "runs": runs}
    out = Path(args.out)
    if spec.modality == "image":
        grid = out.with_suffix(".png")
        atomic_write_bytes(grid, _grid_png(item, runs, spec.dataset_dpath / "thumbs"))
        report["grid_png"] = str(grid)
    atomic_write_json(out, report)
    return out


def _grid_png(item: LiveInput, runs: list[dict], thumbs_dpath: Path) -> bytes:
    """Rows: strengths. Cells: the input, then the nearest samples after the edit."""
    import io

    n_cols = 1 + max(len(r["targets"].get("neighbors", {}).get("after", [])) for r in runs)
    label_h = 28
    canvas = Image.new("RGB", (n_cols * TILE, len(runs) * (TILE + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, run in enumerate(runs):
        y = row * (TILE + label_h)
        top = run["targets"].get("classes", {}).get("after", [])
        caption = f"strength {run['strength']:g}" + (f": {top[0]['name']} {100 * top[0]['prob']:.0f}%" if top else "")
        draw.text((4, y + 8), caption, fill="black")
        if hasattr(item.value, "resize"):
            canvas.paste(item.value.convert("RGB").resize((TILE, TILE)), (0, y + label_h))
        for col, n in enumerate(run["targets"].get("neighbors", {}).get("after", []), start=1):
            fpath = thumbs_dpath / f"{n['sample_id']}.webp"
            if fpath.is_file():
                with Image.open(fpath) as im:
                    im = im.convert("RGB")
                    im.thumbnail((TILE, TILE))
                    canvas.paste(im, (col * TILE + (TILE - im.width) // 2, y + label_h + (TILE - im.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
