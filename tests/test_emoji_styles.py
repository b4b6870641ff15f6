"""The multi-style emoji source: real Noto and npm images, a hand-built npm package, missing sets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from precompute import emoji_raster, sources_emoji
from precompute.sources import EmojiSource, open_source
from precompute.sources_emoji import EmojiStylesSource, style_missing
from sae_core.errors import DataError

INSTALLED = [s for s in sources_emoji.DEFAULT_STYLES if style_missing(s) is None]
"""What `emoji-styles` draws here: the demo's default styles that are installed."""


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two emoji styles installed (scripts/install.sh)")
def test_same_concept_shares_caption_across_styles_and_labels_carry_style():
    src = open_source("emoji-styles:12")
    assert src.styles == tuple(INSTALLED)
    by_key: dict[str, dict[str, tuple[str, str]]] = {}
    for r in src.records:
        style, key = r.source.split("/")
        by_key.setdefault(key, {})[style] = (r.caption, r.label)
    assert len(by_key) == 12
    keys_in_order = [r.source.split("/")[1] for r in src.records]
    runs = [k for i, k in enumerate(keys_in_order) if i == 0 or keys_in_order[i - 1] != k]
    assert len(runs) == 12  # a concept's drawings are adjacent, so a held-out tail holds whole concepts
    assert "1f600" in by_key and by_key["1f600"]["noto" if "noto" in INSTALLED else INSTALLED[0]][0] == "grinning face"
    for key, per_style in by_key.items():
        assert len({caption for caption, _ in per_style.values()}) == 1, key
        for style, (_, label) in per_style.items():
            assert label.startswith(f"{style} / Smileys & Emotion / "), label
    assert sum(len(v) == len(INSTALLED) for v in by_key.values()) >= 10  # most concepts drawn in every style
    pictures = {}
    for i, r in enumerate(src.records):
        if r.source.endswith("/1f600"):
            im = src.load(i)
            assert im.mode == "RGB" and min(im.size) >= 64
            assert im.getpixel((0, 0)) == (255, 255, 255)  # transparent corners composited on white
            arr = np.asarray(im.resize((64, 64)), dtype=np.float32)
            assert (arr < 200).any(axis=2).mean() > 0.2  # a face fills the picture
            pictures[r.source.split("/")[0]] = arr
    styles = sorted(pictures)
    assert len(styles) == len(INSTALLED)
    for a, b in zip(styles, styles[1:]):
        assert np.abs(pictures[a] - pictures[b]).mean() > 2  # different drawings of one concept


def _fake_package(root, version="1.0.0"):
    """A two-style-free npm package holding three entries: a known emoji, an unknown one, a swatch."""
    pkg = root / "node_modules" / "emoji-datasource-google"
    (pkg / "img" / "google" / "64").mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"version": version}))
    entries = [
        {"name": "GRINNING FACE", "unified": "1F600", "image": "1f600.png", "category": "Smileys & Emotion",
         "subcategory": "face-smiling", "sort_order": 1, "has_img_google": True},
        {"name": "MADE UP THING", "unified": "10FFF0-FE0F", "image": "10fff0.png", "category": "Objects",
         "subcategory": "tool", "sort_order": 2, "has_img_google": True},
        {"name": "SKIN SWATCH", "unified": "1F3FB", "image": "1f3fb.png", "category": "Component",
         "subcategory": "skin-tone", "sort_order": 3, "has_img_google": True},
        {"name": "NOT DRAWN", "unified": "1F601", "image": "1f601.png", "category": "Smileys & Emotion",
         "subcategory": "face-smiling", "sort_order": 4, "has_img_google": False},
    ]
    (pkg / "emoji.json").write_text(json.dumps(entries))
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((200, 30, 30, 255), (16, 16, 48, 48))
    for e in entries:
        rgba.save(pkg / "img" / "google" / "64" / e["image"])
    return pkg


def test_npm_package_entries_become_labelled_records(tmp_path, monkeypatch):
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path))
    pkg = _fake_package(tmp_path)
    src = open_source("emoji:google")
    assert sorted(r.source for r in src.records) == ["google/10fff0", "google/1f600"]
    known, unknown = sorted(src.records, key=lambda r: r.source != "google/1f600")
    if sources_emoji.EMOJI_TEST.exists():
        assert known.caption == "grinning face"  # Unicode's name, as the Noto set captions it
    assert unknown.caption == "made up thing" and unknown.label == "google / Objects / tool"
    im = src.load(src.records.index(unknown))
    assert im.size == (64, 64) and im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((32, 32)) == (200, 30, 30)
    before = src.fingerprint()
    (pkg / "package.json").write_text(json.dumps({"version": "2.0.0"}))
    assert open_source("emoji:google").fingerprint() != before


def test_missing_set_is_one_line_notice_and_the_rest_goes_on(tmp_path, monkeypatch, caplog):
    if style_missing("noto"):
        pytest.skip("needs the Noto font (fonts-noto-color-emoji)")
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path / "nowhere"))
    src = open_source("emoji:noto,google,twitter:5")
    assert src.styles == ("noto",)
    assert sorted(r.source for r in src.records) == sorted(f"noto/{r.source[2:].lower()}" for r in EmojiSource(limit=5).records)
    notices = [r.message for r in caplog.records if r.name == "precompute.sources_emoji" and r.levelname == "WARNING"]
    assert len(notices) == 2
    for style, line in zip(("google", "twitter"), notices):
        assert line.startswith(f"emoji style {style} skipped: npm package emoji-datasource-{style} not found")
        assert "scripts/install.sh" in line
    with pytest.raises(DataError, match="no emoji style of google is installed"):
        open_source("emoji:google")


@pytest.mark.parametrize("spec", ["emoji:noto,bogus", "emoji:", "emoji:noto,noto", "emoji-styles:x", "emoji:noto:x"])
def test_bad_style_specs_are_one_line_errors(spec):
    with pytest.raises(DataError) as e:
        open_source(spec)
    assert "\n" not in str(e.value) and "emoji" in str(e.value)


def test_emoji_and_emoji_n_keep_their_meaning():
    if style_missing("noto"):
        pytest.skip("needs the Noto font (fonts-noto-color-emoji)")
    src = open_source("emoji:7")
    assert isinstance(src, EmojiSource) and not isinstance(src, EmojiStylesSource) and len(src.records) == 7
    assert src.records[0].label == "face-smiling"


SQUARE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
              '<rect x="18" y="18" width="36" height="36" fill="#c81e1e"/></svg>')


def _needs_raster_prerequisites():
    if not sources_emoji.EMOJI_TEST.exists():
        pytest.skip("needs Unicode's emoji list (unicode-data)")
    if emoji_raster.svg_renderer_missing():
        pytest.skip("needs resvg-py (scripts/install.sh)")


def _fake_raster_packages(root, version="17.0.0"):
    """OpenMoji, Fluent flat and Fluent 3D packages holding a grinning face, variants to skip and a broken file."""
    om = root / "node_modules" / "openmoji"
    (om / "data").mkdir(parents=True)
    (om / "color" / "svg").mkdir(parents=True)
    (om / "package.json").write_text(json.dumps({"version": version}))
    entries = [
        {"hexcode": "1F600", "group": "smileys-emotion", "skintone": ""},
        {"hexcode": "1F44D-1F3FB", "group": "people-body", "skintone": 1},  # a skin-tone variant
        {"hexcode": "E000", "group": "extras-openmoji", "skintone": ""},  # OpenMoji's own
        {"hexcode": "1F601", "group": "smileys-emotion", "skintone": ""},  # listed, file missing
        {"hexcode": "1F602", "group": "smileys-emotion", "skintone": ""},  # not an SVG at all
    ]
    (om / "data" / "openmoji.json").write_text(json.dumps(entries))
    for hexcode in ("1F600", "1F44D-1F3FB", "E000"):
        (om / "color" / "svg" / f"{hexcode}.svg").write_text(SQUARE_SVG)
    (om / "color" / "svg" / "1F602.svg").write_text("<svg this is broken")
    flat = root / "node_modules" / "fluentui-emoji" / "icons" / "flat"
    flat.mkdir(parents=True)
    (flat.parents[1] / "package.json").write_text(json.dumps({"version": "1.3.0"}))
    for name in ("grinning-face", "thumbs-up-default", "thumbs-up-light", "no-such-emoji-name"):
        (flat / f"{name}.svg").write_text(SQUARE_SVG)
    d3 = root / "node_modules" / "@lobehub" / "fluent-emoji-3d" / "assets"
    d3.mkdir(parents=True)
    (d3.parent / "package.json").write_text(json.dumps({"version": "1.1.0"}))
    big = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    big.paste((30, 30, 200, 255), (64, 64, 192, 192))
    for stem in ("1f600", "0023-fe0f-20e3", "1f44d-1f3fd"):
        big.save(d3 / f"{stem}.webp")
    return om


def test_raster_sets_draw_base_emoji_once_into_a_cache(tmp_path, monkeypatch):
    _needs_raster_prerequisites()
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path))
    om = _fake_raster_packages(tmp_path)
    src = open_source("emoji:openmoji,fluentflat,fluent3d")
    assert sorted(r.source for r in src.records) == [
        "fluent3d/1f600", "fluent3d/23-20e3", "fluentflat/1f44d", "fluentflat/1f600", "openmoji/1f600"]
    by_source = {r.source: r for r in src.records}
    assert by_source["fluentflat/1f44d"].caption == "thumbs up"  # matched by Unicode name
    assert by_source["fluent3d/23-20e3"].caption == "keycap: #"
    assert by_source["openmoji/1f600"].label == "openmoji / Smileys & Emotion / face-smiling"
    for source, colour in (("openmoji/1f600", (200, 30, 30)), ("fluent3d/1f600", (30, 30, 200))):
        im = src.load(src.records.index(by_source[source]))
        assert im.mode == "RGB" and im.size == (emoji_raster.RASTER_PX,) * 2
        assert im.getpixel((2, 2)) == (255, 255, 255)  # transparent background composited on white
        assert all(abs(a - b) <= 2 for a, b in zip(im.getpixel((64, 64)), colour))
        assert im.getpixel((20, 20)) == (255, 255, 255)  # the square spans the middle half only
    cache = tmp_path / "raster" / "openmoji-17.0.0-128px"
    done = json.loads((cache / "complete.json").read_text())
    assert done["n_drawings"] == 2 and done["failed"] == [str(om / "color" / "svg" / "1F602.svg")]
    stamp = (cache / "1f600.png").stat().st_mtime_ns
    assert open_source("emoji:openmoji").records[0].source == "openmoji/1f600"
    assert (cache / "1f600.png").stat().st_mtime_ns == stamp  # a second run draws nothing
    before = open_source("emoji:openmoji").fingerprint()
    (om / "package.json").write_text(json.dumps({"version": "18.0.0"}))
    assert open_source("emoji:openmoji").fingerprint() != before
    assert (tmp_path / "raster" / "openmoji-18.0.0-128px" / "1f600.png").is_file()  # a new release is drawn anew


def test_parallel_drawing_matches_serial(tmp_path):
    _needs_raster_prerequisites()
    svgs = []
    for i in range(3):
        f = tmp_path / f"{i}.svg"
        f.write_text(SQUARE_SVG.replace('x="18"', f'x="{6 * i}"'))
        svgs.append((f"k{i}", f))
    serial = emoji_raster.ensure_cache(tmp_path / "serial", svgs, num_workers=0)
    parallel = emoji_raster.ensure_cache(tmp_path / "parallel", svgs, num_workers=2)
    assert sorted(serial) == sorted(parallel) == ["k0", "k1", "k2"]
    for key in serial:
        assert serial[key].read_bytes() == parallel[key].read_bytes()
    assert serial["k0"].read_bytes() != serial["k1"].read_bytes()


def test_missing_svg_renderer_is_a_one_line_notice(tmp_path, monkeypatch):
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path))
    _fake_raster_packages(tmp_path)
    monkeypatch.setitem(sys.modules, "resvg_py", None)  # as if resvg-py were not installed
    why = style_missing("openmoji")
    assert why is not None and "\n" not in why and "pip install resvg-py" in why
    assert style_missing("fluent3d") is None  # WebP needs no SVG renderer


@pytest.mark.skipif(len(INSTALLED) < len(sources_emoji.DEFAULT_STYLES), reason="needs every default style (scripts/install.sh)")
def test_default_styles_give_the_demo_8000_images_of_shared_concepts():
    src = open_source("emoji-styles")
    per_style: dict[str, set[str]] = {}
    for r in src.records:
        style, key = r.source.split("/")
        per_style.setdefault(style, set()).add(key)
    assert len(src.records) >= 8000 and set(per_style) == set(sources_emoji.DEFAULT_STYLES)
    assert all(len(keys) >= 1300 for keys in per_style.values())
    shared = set.intersection(*per_style.values())
    assert len(shared) >= 1000  # concepts every style draws: content features can span styles
    assert not any(set(k.split("-")) & emoji_raster.SKIN_TONES for keys in per_style.values() for k in keys)
