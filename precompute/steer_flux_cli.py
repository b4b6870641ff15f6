"""`saescope steer-flux`: an image (or a prompt), SAE edits and strengths in; a labelled PNG grid and a JSON report out.

The grid has one row (the edits) and a column per strength after the input image; the report
beside it (`grid.json` for `grid.png`) records everything needed to redo the run: pipelines,
SAE, edits as given and in raw units, mask, strengths, seed and the files written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sae_core.errors import ConfigError, FormatError

DEFAULT_PRIOR = "black-forest-labs/FLUX.1-Redux-dev"
DEFAULT_FLUX = "black-forest-labs/FLUX.1-schnell"


@dataclass(frozen=True)
class SteerFluxConfig:
    """One steering sweep through FLUX Redux (or a FLUX block)."""

    sae: str = field(default="", metadata={"help": "SAE checkpoint folder: a SigLIP SAE for the Redux edit, a FLUX one for --layer"})
    image: str = field(default="", metadata={"help": "input image (PNG, JPEG, ...) that Redux turns into FLUX conditioning"})
    prompt: str = field(default="", metadata={"help": "instead of --image: a text prompt for FLUX with its text encoders "
                                                     "(block edits only: --layer)"})
    out: str = field(default="steer-flux.png", metadata={"help": "grid PNG to write; the JSON report goes beside it (.json)"})
    prior: str = field(default=DEFAULT_PRIOR, metadata={"help": "FluxPriorReduxPipeline: hub name or diffusers folder"})
    flux: str = field(default=DEFAULT_FLUX, metadata={"help": "FluxPipeline (loaded without text encoders): hub name or diffusers folder"})
    edits: tuple[str, ...] = ()
    units: Literal["raw", "max"] = field(default="raw", metadata={"help": "edit values in raw latent units or in multiples of the "
                                                                        "feature's max activation over the index (--index)"})
    index: str = field(default="", metadata={"help": "explorer index holding this SAE's features.max_act (for --units max)"})
    patches: str = field(default="", metadata={"help": "edit only these grid cells (comma-separated row-major ids; "
                                                       "SigLIP's 27x27 grid for Redux); empty: every token"})
    sweep: str = field(default="0,1", metadata={"help": "comma-separated strengths; each multiplies the edit values"})
    layer: str = field(default="redux", metadata={"help": "where to edit: redux (SigLIP -> Redux embedder) or a FLUX block, "
                                                         "e.g. transformer_blocks.18.image, single_transformer_blocks.3.text"})
    at_steps: str = field(default="", metadata={"help": "FLUX block edits only: comma-separated denoising steps (from 0); empty: all"})
    seed: int = field(default=0, metadata={"help": "noise seed, the same for every image of the sweep"})
    steps: int = field(default=4, metadata={"help": "denoising steps"})
    size: int = field(default=256, metadata={"help": "generated image side in pixels (a multiple of 16)"})
    guidance: float = field(default=2.5, metadata={"help": "FLUX guidance scale (used by guidance-distilled models such as FLUX.1-dev)"})
    max_sequence_length: int = field(default=256, metadata={"help": "T5 tokens of --prompt (FLUX.1-schnell takes up to 256)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})


@dataclass(frozen=True)
class SteerFluxResult:
    grid_fpath: Path
    report_fpath: Path
    n_images: int


def parse_numbers(text: str, what: str, kind: type = float) -> list:
    """`0,1,2.5` -> [0.0, 1.0, 2.5]; a bad item is a one-line error naming the option."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: write comma-separated {'integers' if kind is int else 'numbers'}, e.g. 0,1,2") from None
    if any(not math.isfinite(v) for v in values):
        raise ConfigError(f"{what} {text!r}: every value must be finite")
    return values


def max_activations(index_fpath: str, sae_fpath: str) -> dict[int, float]:
    """features.max_act of the SAE whose checkpoint is `sae_fpath`, from an explorer index."""
    import duckdb

    if not Path(index_fpath).is_file():
        raise ConfigError(f"--index {index_fpath}: no such index; --units max needs the index built from this SAE")
    try:
        con = duckdb.connect(index_fpath, read_only=True)
    except duckdb.Error as err:
        raise FormatError(f"--index {index_fpath}: not a readable DuckDB index ({str(err).splitlines()[0]})") from None
    try:
        rows = con.execute("SELECT sae_id, checkpoint FROM saes").fetchall()
        want = str(Path(sae_fpath).resolve())
        ids = [sid for sid, ckpt in rows if ckpt and str(Path(ckpt).resolve()) == want]
        if not ids:
            raise ConfigError(f"--index {index_fpath} has no SAE with checkpoint {want} (it has {[sid for sid, _ in rows]}); "
                              "index this SAE or use --units raw")
        found = con.execute("SELECT feature_id, max_act FROM features WHERE sae_id = ?", [ids[0]]).fetchall()
    except duckdb.Error as err:
        raise FormatError(f"--index {index_fpath}: not a saescope index ({str(err).splitlines()[0]})") from None
    finally:
        con.close()
    return {int(f): float(m) for f, m in found if m is not None}


def _load_image(fpath: str):
    from PIL import Image

    if not fpath:
        raise ConfigError("no input image; pass --image PATH")
    try:
        with Image.open(fpath) as im:
            return im.convert("RGB")
    except OSError as err:
        raise ConfigError(f"--image {fpath}: not a readable image ({err})") from None


def _resolve(cfg: SteerFluxConfig, sae):
    """Edits in raw units, strengths, the patch cells and the edit site, all validated."""
    from precompute.steer_flux import EditSite, Generation, scale_edits
    from sae_core.steering import check_edits, parse_edit, resolve_units

    if not cfg.edits:
        raise ConfigError("no edit given; pass --edit FEATURE=VALUE (e.g. --edit 12=+3 --edit 40=0)")
    edits = [parse_edit(t) for t in cfg.edits]
    check_edits(edits, sae.cfg.d_sae)
    if cfg.units == "max" and not cfg.index:
        raise ConfigError("--units max needs --index INDEX (the features' max activations come from it)")
    raw = resolve_units(edits, cfg.units, max_activations(cfg.index, cfg.sae) if cfg.units == "max" else None)
    strengths = parse_numbers(cfg.sweep, "--sweep")
    if not strengths:
        raise ConfigError("--sweep is empty; give strengths such as 0,1,2")
    for strength in strengths:  # refuse an impossible strength before loading any model
        scale_edits(raw, strength)
    patches = parse_numbers(cfg.patches, "--patches", int) if cfg.patches.strip() else None
    at_steps = tuple(parse_numbers(cfg.at_steps, "--at-steps", int)) if cfg.at_steps.strip() else None
    gen = Generation(seed=cfg.seed, steps=cfg.steps, size=cfg.size, guidance=cfg.guidance,
                     max_sequence_length=cfg.max_sequence_length)
    site = EditSite(cfg.layer, at_steps)
    site.check(gen)
    return edits, raw, strengths, patches, site, gen


def _out_paths(out: str) -> tuple[Path, Path]:
    grid = Path(out)
    if grid.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the grid is a PNG; give a path ending in .png")
    return grid, grid.with_suffix(".json")


def _source(cfg: SteerFluxConfig, layer: str):
    """The input image (Redux conditioning) or the text prompt, exactly one of them."""
    if cfg.prompt and cfg.image:
        raise ConfigError("give --image (FLUX Redux) or --prompt (FLUX with its text encoders), not both")
    if cfg.prompt:
        if layer == "redux":
            raise ConfigError("the Redux edit acts on an input image; with --prompt, edit a FLUX block (--layer transformer_blocks.N.image)")
        return cfg.prompt
    return _load_image(cfg.image)


def _load_models(cfg: SteerFluxConfig, sae, site, gen, patches: list[int] | None, device: str):
    """Prior (Redux runs only), FLUX, and the patch mask over the grid the edit sees."""
    from precompute.extractors.flux import PIXELS_PER_TOKEN
    from precompute.steer_flux import REDUX, check_redux_width, load_flux, load_prior, patch_mask, siglip_grid

    prior = None if cfg.prompt else load_prior(cfg.prior, device)
    side = gen.size // PIXELS_PER_TOKEN
    mask_grid = siglip_grid(prior) if site.layer == REDUX else (side, side)
    mask = patch_mask(patches, mask_grid)
    if site.layer == REDUX:  # refuse a SigLIP mismatch before loading the (large) FLUX pipeline
        check_redux_width(prior, sae)
    flux = load_flux(cfg.flux, device, text_encoders=bool(cfg.prompt))
    return prior, flux, mask, mask_grid


def run_steer_flux(cfg: SteerFluxConfig) -> SteerFluxResult:
    """Validate everything, load the pipelines, run the sweep, write grid and report."""
    from precompute.extractors.flux import split_stream
    from precompute.steer_flux import REDUX, sweep
    from precompute.steer_flux_grid import image_grid, save_png
    from sae_core.checkpoint import load
    from sae_core.contract import atomic_write_json
    from sae_core.distributed import pick_device

    if not cfg.sae:
        raise ConfigError("no SAE given; pass --sae PATH (a checkpoint folder)")
    grid_fpath, report_fpath = _out_paths(cfg.out)
    sae = load(cfg.sae)
    edits, raw, strengths, patches, site, gen = _resolve(cfg, sae)
    if patches is not None and site.layer != REDUX and split_stream(site.layer)[1] == "text":
        raise ConfigError(f"--patches picks image cells, but {site.layer} is a text stream; drop --patches or edit an .image stream")
    source = _source(cfg, site.layer)
    device = pick_device(cfg.device)
    prior, flux, mask, mask_grid = _load_models(cfg, sae, site, gen, patches, device)
    images = sweep(prior, flux, source, sae, raw, strengths, site=site, token_mask=mask, gen=gen)
    columns = [f"x{s:g}" for s in strengths]
    inputs = [] if cfg.prompt else [source]
    label = " ".join(cfg.edits) + (" x max" if cfg.units == "max" else "")
    save_png(image_grid([[*inputs, *images]], [label], ["input"] * len(inputs) + columns, gen.size), grid_fpath)
    report = {
        "kind": "steer-flux", "prior": None if cfg.prompt else cfg.prior, "flux": cfg.flux, "sae": str(Path(cfg.sae).resolve()),
        "image": str(Path(cfg.image).resolve()) if cfg.image else None, "prompt": cfg.prompt or None,
        "layer": site.layer, "at_steps": site.at_steps,
        "edits": [asdict(e) for e in edits], "units": cfg.units, "raw_edits": [asdict(e) for e in raw],
        "patches": patches, "patch_grid": list(mask_grid), "strengths": strengths,
        "seed": gen.seed, "steps": gen.steps, "size": gen.size, "guidance": gen.guidance, "device": device,
        "files": {"grid": grid_fpath.name}, "grid_columns": ["input"] * len(inputs) + strengths,
    }
    atomic_write_json(report_fpath, report)
    return SteerFluxResult(grid_fpath, report_fpath, len(images))
