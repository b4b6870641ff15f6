"""Emoji sets that ship as vectors or large images, rasterised once into a cache of 128 px PNGs.

Microsoft's Fluent Emoji in two renderings (3D: 256 px WebP from npm `@lobehub/fluent-emoji-3d`;
flat: SVG from npm `fluentui-emoji`, both MIT) and OpenMoji (SVG from npm `openmoji`, CC BY-SA 4.0)
add art styles that the Noto/Google/Twitter PNG sets lack. Decoding an SVG or a 256 px WebP for
every sample twice (thumbnail, then extraction) would slow the demo, so each set is drawn once
into `<npm data>/raster/<style>-<version>-128px/<concept key>.png` (flattened on white), in
parallel, each file written atomically; a `complete.json` marker makes later runs skip the work.
Only drawings of Unicode's base emoji (no skin-tone variants, no components, no OpenMoji extras)
are kept, so every picture is a concept the other styles draw too.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sae_core.contract import atomic_write_bytes, atomic_write_json
from sae_core.errors import DataError

RASTER_PX = 128
"""Side of the cached PNGs: the demo model's input side, sharp enough for 160 px thumbnails."""
SKIN_TONES = frozenset(f"{c:x}" for c in range(0x1F3FB, 0x1F400))
PARALLEL_MIN = 64
"""Below this many drawings, starting worker processes costs more than it saves."""


@dataclass(frozen=True)
class RasterSet:
    package: str
    """npm package name."""
    marker: str
    """A path inside the package that exists when it is installed."""
    needs_svg: bool


RASTER_SETS = {
    "fluent3d": RasterSet("@lobehub/fluent-emoji-3d", "assets", needs_svg=False),
    "fluentflat": RasterSet("fluentui-emoji", "icons/flat", needs_svg=True),
    "openmoji": RasterSet("openmoji", "data/openmoji.json", needs_svg=True),
}


def svg_renderer_missing() -> str | None:
    """Why SVGs cannot be drawn here (one line with the fix), or None."""
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        return "the SVG renderer resvg-py is not installed (pip install resvg-py, or scripts/install.sh)"
    return None


def is_base_concept(key: str, concepts: dict) -> bool:
    """A Unicode emoji other sets draw too: known, not a component swatch, no skin tone."""
    concept = concepts.get(key)
    return concept is not None and concept.category != "Component" and not SKIN_TONES & set(key.split("-"))


def _key(hexes: str) -> str:
    """`0023-FE0F-20E3` -> `23-20e3` (the concept key of sources_emoji: lower-case hex, no U+FE0F)."""
    return "-".join(f"{int(h, 16):x}" for h in hexes.split("-") if int(h, 16) != 0xFE0F)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _fluent3d(pkg: Path, concepts: dict) -> list[tuple[str, Path]]:
    """Files are named by code points (`1f600.webp`, `0023-fe0f-20e3.webp`)."""
    out = []
    for f in sorted((pkg / "assets").glob("*.webp")):
        try:
            key = _key(f.stem)
        except ValueError:
            continue
        out.append((key, f))
    return out


def _fluentflat(pkg: Path, concepts: dict) -> list[tuple[str, Path]]:
    """Files are named by Unicode name (`1st-place-medal.svg`, `thumbs-up-default.svg` for the
    toneless person emoji), so they are matched to concepts by name, punctuation ignored."""
    by_name = {_norm(c.name): key for key, c in concepts.items()}
    out = []
    for f in sorted((pkg / "icons" / "flat").glob("*.svg")):
        key = by_name.get(_norm(f.stem.removesuffix("-default")))
        if key is not None:
            out.append((key, f))
    return out


def _openmoji(pkg: Path, concepts: dict) -> list[tuple[str, Path]]:
    """`data/openmoji.json` lists each drawing's code points; OpenMoji's own extras are skipped."""
    try:
        entries = json.loads((pkg / "data" / "openmoji.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{pkg / 'data' / 'openmoji.json'}: cannot read the emoji list ({e})") from None
    out = []
    for e in entries:
        if e.get("skintone") or str(e.get("group", "")).startswith("extras"):
            continue
        hexcode = str(e.get("hexcode", ""))
        try:
            out.append((_key(hexcode), pkg / "color" / "svg" / f"{hexcode}.svg"))
        except ValueError:
            continue
    return out


_LISTERS: dict[str, Callable[[Path, dict], list[tuple[str, Path]]]] = {
    "fluent3d": _fluent3d, "fluentflat": _fluentflat, "openmoji": _openmoji}


def list_drawings(style: str, pkg: Path, concepts: dict) -> list[tuple[str, Path]]:
    """(concept key, original file) of every base-emoji drawing of a set, one per concept."""
    seen: set[str] = set()
    out = []
    for key, fpath in _LISTERS[style](pkg, concepts):
        if key not in seen and is_base_concept(key, concepts) and fpath.is_file():
            seen.add(key)
            out.append((key, fpath))
    return out


def rasterise(src: Path, px: int = RASTER_PX) -> bytes:
    """One drawing as a px x px RGB PNG on white (transparent parts composited)."""
    if src.suffix.lower() == ".svg":
        import resvg_py

        rgba = Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_path=str(src), width=px, height=px)))).convert("RGBA")
    else:
        with Image.open(src) as im:
            rgba = im.convert("RGBA")
    if rgba.size != (px, px):
        rgba = rgba.resize((px, px), Image.Resampling.LANCZOS)
    out = Image.new("RGB", rgba.size, "white")
    out.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _draw_one(job: tuple[Path, Path]) -> str | None:
    """Rasterise src into dst (atomically); the source path when it cannot be drawn."""
    src, dst = job
    try:
        atomic_write_bytes(dst, rasterise(src))
    except (OSError, ValueError, Image.DecompressionBombError):
        return str(src)
    return None


def ensure_cache(dpath: Path, drawings: list[tuple[str, Path]], num_workers: int = -1) -> dict[str, Path]:
    """Draw the drawings missing from `dpath` (in parallel) and return key -> cached PNG.

    Idempotent: files already there are kept, and once `complete.json` lists this many drawings
    nothing is checked again. Drawings that cannot be rendered are left out (and listed there)."""
    marker = dpath / "complete.json"
    wanted = {key: dpath / f"{key}.png" for key, _ in drawings}
    try:
        done = json.loads(marker.read_text())
        if done.get("n_drawings") == len(drawings):
            failed = set(done.get("failed", []))
            return {k: p for (k, src), p in zip(drawings, wanted.values()) if str(src) not in failed}
    except (OSError, ValueError, AttributeError):
        pass
    todo = [(src, wanted[key]) for key, src in drawings if not wanted[key].is_file()]
    if num_workers < 0:
        num_workers = min(8, os.cpu_count() or 1) if len(todo) >= PARALLEL_MIN else 0
    if num_workers:
        with ProcessPoolExecutor(num_workers) as pool:
            failed = [f for f in pool.map(_draw_one, todo, chunksize=32) if f]
    else:
        failed = [f for f in map(_draw_one, todo) if f]
    atomic_write_json(marker, {"n_drawings": len(drawings), "px": RASTER_PX, "failed": failed})
    return {k: p for (k, src), p in zip(drawings, wanted.values()) if str(src) not in set(failed)}


def main() -> None:
    """`python -m precompute.emoji_raster`: draw every installed raster set now (scripts/install.sh)."""
    import sys

    from precompute.sources_emoji import EmojiStylesSource, npm_data_dpath, style_missing

    styles = tuple(s for s in RASTER_SETS if style_missing(s) is None)
    if not styles:
        print("==> no SVG/WebP emoji set installed: nothing to draw")
        return
    try:
        src = EmojiStylesSource(styles)
    except DataError as e:
        sys.exit(f"emoji_raster: {e}")
    print(f"==> {len(src.records):,} emoji of {', '.join(styles)} drawn at {RASTER_PX} px under {npm_data_dpath() / 'raster'}")


if __name__ == "__main__":
    main()
