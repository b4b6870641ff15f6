"""The same emoji drawn in several art styles: a source whose concepts repeat across styles.

Noto colour emoji come from the Debian font (`sources.EmojiSource`); Google's and Twitter's
(Twemoji) 64 px PNGs with their names and categories come from the npm packages
`emoji-datasource-google` / `emoji-datasource-twitter` (MIT); Microsoft's Fluent Emoji (3D and
flat) and OpenMoji come from npm too and are rasterised once into a cache (`emoji_raster`).
`scripts/install.sh` installs them under `.npm-data/` (or `$SAESCOPE_NPM_DATA`). Google's
drawings are the Noto design, so the demo's default styles leave them out. The same concept (code point sequence)
gets the same caption in every style, so SAE features can be checked for holding across styles;
the label is `style / category / subcategory`, so style shows in label words and names.
A style that is not installed is skipped with a one-line notice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from precompute.emoji_raster import RASTER_PX, RASTER_SETS, ensure_cache, list_drawings, svg_renderer_missing
from precompute.sources import EMOJI_FONT, EMOJI_TEST, EmojiSource, SampleRecord, Source
from sae_core.errors import DataError

NPM_DATA_ENV = "SAESCOPE_NPM_DATA"
DEFAULT_NPM_DATA = Path(__file__).resolve().parents[1] / ".npm-data"
NPM_STYLES = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter"}
"""Style name -> npm package; images at `img/<style>/64/<image>`, metadata in `emoji.json`."""
STYLES = ("noto", *NPM_STYLES, *RASTER_SETS)
DEFAULT_STYLES = ("noto", "twitter", "fluent3d", "fluentflat", "openmoji")
"""Five renderings of four designs (Google's is Noto's again): the demo's set, `emoji-styles`."""
SKIPPED_CATEGORIES = ("Component",)
"""Skin-tone and hair swatches are not pictures of anything."""


@dataclass(frozen=True)
class Concept:
    """One emoji's Unicode facts, shared by every style that draws it."""

    rank: int
    """Position in Unicode's emoji order (emoji-test.txt), so `limit` keeps the same concepts."""
    name: str
    category: str
    subcategory: str


@dataclass(frozen=True)
class Drawing:
    style: str
    key: str
    """Code points in lower-case hex joined by `-`, without U+FE0F (the concept's identity)."""
    locator: str
    """Noto: the record index in EmojiSource; npm: the image's path (raster sets: the cached PNG's)."""


def concept_key(codes: list[int]) -> str:
    return "-".join(f"{c:x}" for c in codes if c != 0xFE0F)


def unicode_concepts() -> dict[str, Concept]:
    """Every fully-qualified emoji of emoji-test.txt (empty when unicode-data is missing)."""
    if not EMOJI_TEST.exists():
        return {}
    out: dict[str, Concept] = {}
    group = subgroup = ""
    for line in EMOJI_TEST.read_text().splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and "#" in line:
            key = concept_key([int(c, 16) for c in line.split(";")[0].split()])
            name = line.split("#", 1)[1].strip().split(" ", 2)[-1].strip()
            out.setdefault(key, Concept(len(out), name, group, subgroup))
    return out


def npm_data_dpath() -> Path:
    return Path(os.environ.get(NPM_DATA_ENV) or DEFAULT_NPM_DATA)


def npm_package_name(style: str) -> str:
    return NPM_STYLES[style] if style in NPM_STYLES else RASTER_SETS[style].package


def npm_package_dpath(style: str) -> Path:
    return npm_data_dpath() / "node_modules" / npm_package_name(style)


def npm_package_version(style: str) -> str:
    """The installed version (a new release redraws the images); "" when unreadable."""
    try:
        return str(json.loads((npm_package_dpath(style) / "package.json").read_text()).get("version", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def style_missing(style: str) -> str | None:
    """Why a style cannot be drawn here (one line with the fix), or None when it can."""
    if style == "noto":
        for need, pkg in ((EMOJI_FONT, "fonts-noto-color-emoji"), (EMOJI_TEST, "unicode-data")):
            if not need.exists():
                return f"{need} is missing (apt-get install {pkg})"
        return None
    marker = "emoji.json" if style in NPM_STYLES else RASTER_SETS[style].marker
    if not (npm_package_dpath(style) / marker).exists():
        return (f"npm package {npm_package_name(style)} not found under {npm_data_dpath()} "
                f"(scripts/install.sh, or npm install --prefix .npm-data {npm_package_name(style)})")
    if style in RASTER_SETS and RASTER_SETS[style].needs_svg:
        return svg_renderer_missing()
    return None


def parse_styles(text: str) -> tuple[str, ...]:
    """`noto,google` -> ('noto', 'google'); unknown or repeated names are a DataError."""
    styles = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles or len(set(styles)) != len(styles):
        raise DataError(f"emoji styles {text!r}: give distinct names from {', '.join(STYLES)} separated by commas")
    return styles


class EmojiStylesSource(Source):
    """Emoji of several art styles; `limit` keeps the first N concepts in Unicode order, in every style.

    Records come concept by concept (each concept's styles together), concepts in a fixed
    hash order, so the held-out tail of a store is whole concepts of every category."""

    def __init__(self, styles: tuple[str, ...] = STYLES, limit: int = 0):
        self.styles = tuple(s for s in styles if not self._notice_missing(s))
        if not self.styles:
            raise DataError(f"no emoji style of {', '.join(styles)} is installed; run scripts/install.sh")
        self.name = "emoji-" + "-".join(self.styles)
        concepts = unicode_concepts()
        drawings: list[tuple[Concept, Drawing]] = []
        for style in self.styles:
            lister = self._noto if style == "noto" else self._npm if style in NPM_STYLES else self._raster
            drawings.extend(lister(style, concepts))
        if limit:
            keep = sorted({(c.rank, d.key) for c, d in drawings})[:limit]
            kept = {key for _, key in keep}
            drawings = [(c, d) for c, d in drawings if d.key in kept]
        drawings = self._cached(drawings)
        # a concept's drawings stay together, concepts in a stable shuffled order: the samples a
        # trainer holds out at the end are whole unseen concepts from every category, not the flags
        order = {style: i for i, style in enumerate(self.styles)}
        drawings.sort(key=lambda cd: (hashlib.sha1(cd[1].key.encode()).hexdigest(), order[cd[1].style]))
        self._drawings = [d for _, d in drawings]
        self.records = [SampleRecord(f"{d.style}/{d.key}", c.name, f"{d.style} / {c.category} / {c.subcategory}")
                        for c, d in drawings]

    @staticmethod
    def _notice_missing(style: str) -> bool:
        why = style_missing(style)
        if why:
            logging.getLogger(__name__).warning(f"emoji style {style} skipped: {why}")
        return why is not None

    def _noto(self, style: str, concepts: dict[str, Concept]) -> list[tuple[Concept, Drawing]]:
        self._noto_source = EmojiSource()
        out = []
        for i, r in enumerate(self._noto_source.records):
            key = concept_key([int(r.source[2:], 16)])
            concept = concepts.get(key) or Concept(10**6 + i, r.caption or key, "", r.label or "")
            out.append((concept, Drawing("noto", key, str(i))))
        return out

    def _npm(self, style: str, concepts: dict[str, Concept]) -> list[tuple[Concept, Drawing]]:
        dpath = npm_package_dpath(style)
        try:
            entries = json.loads((dpath / "emoji.json").read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{dpath / 'emoji.json'}: cannot read the emoji list ({e})") from None
        out = []
        for e in entries:
            png = dpath / "img" / style / "64" / str(e.get("image", ""))
            if e.get("category") in SKIPPED_CATEGORIES or not e.get(f"has_img_{style}") or not png.is_file():
                continue
            key = concept_key([int(c, 16) for c in str(e["unified"]).split("-")])
            concept = concepts.get(key) or Concept(
                10**6 + int(e.get("sort_order") or 0), str(e.get("name") or key).lower(),
                str(e.get("category") or ""), str(e.get("subcategory") or ""))
            out.append((concept, Drawing(style, key, str(png))))
        return out

    def _raster(self, style: str, concepts: dict[str, Concept]) -> list[tuple[Concept, Drawing]]:
        """Drawings of a raster set, located at their original files until `_cached` draws them."""
        return [(concepts[key], Drawing(style, key, str(src)))
                for key, src in list_drawings(style, npm_package_dpath(style), concepts)]

    def _cached(self, drawings: list[tuple[Concept, Drawing]]) -> list[tuple[Concept, Drawing]]:
        """Raster-set drawings point at their cached PNGs (drawn now if missing); others unchanged."""
        out = [cd for cd in drawings if cd[1].style not in RASTER_SETS]
        for style in (s for s in self.styles if s in RASTER_SETS):
            mine = [cd for cd in drawings if cd[1].style == style]
            dpath = npm_data_dpath() / "raster" / f"{style}-{npm_package_version(style)}-{RASTER_PX}px"
            cached = ensure_cache(dpath, [(d.key, Path(d.locator)) for _, d in mine])
            out.extend((c, Drawing(style, d.key, str(cached[d.key]))) for c, d in mine if d.key in cached)
        return out

    def load(self, i: int) -> Image.Image:
        d = self._drawings[i]
        if d.style == "noto":
            return self._noto_source.load(int(d.locator))
        with Image.open(d.locator) as im:
            rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, "white")
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out

    def fingerprint(self) -> str:
        """The records, plus each npm package's version (a new release redraws the images)."""
        h = hashlib.sha256(super().fingerprint().encode())
        for style in self.styles:
            if style != "noto":
                h.update(f"{style}:{npm_package_version(style)}".encode())
        return h.hexdigest()


def open_emoji_styles(spec: str) -> EmojiStylesSource:
    """`emoji-styles[:N]` (the demo's DEFAULT_STYLES) or `emoji:STYLES[:N]` (e.g. `emoji:noto,twitter:200`)."""
    head, _, rest = spec.partition(":")
    styles_text, _, limit_text = (("", "", rest) if head == "emoji-styles" else rest.partition(":"))
    bad_limit = bool(limit_text) and not limit_text.isdigit()
    if bad_limit or (head == "emoji-styles" and ":" in rest) or (head == "emoji" and not styles_text):
        raise DataError(f"{spec}: use emoji-styles[:N] or emoji:STYLES[:N] (STYLES from {','.join(STYLES)}; N concepts)")
    return EmojiStylesSource(parse_styles(styles_text) if styles_text else DEFAULT_STYLES, int(limit_text or 0))
