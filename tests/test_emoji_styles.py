"""The multi-style emoji source: real Noto and npm images, a hand-built npm package, missing sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from precompute import sources_emoji
from precompute.sources import EmojiSource, open_source
from precompute.sources_emoji import EmojiStylesSource, style_missing
from sae_core.errors import DataError

INSTALLED = [s for s in sources_emoji.STYLES if style_missing(s) is None]


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


def test_missing_set_is_one_line_notice_and_the_rest_goes_on(tmp_path, monkeypatch, capsys):
    if style_missing("noto"):
        pytest.skip("needs the Noto font (fonts-noto-color-emoji)")
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path / "nowhere"))
    src = open_source("emoji:noto,google,twitter:5")
    assert src.styles == ("noto",)
    assert sorted(r.source for r in src.records) == sorted(f"noto/{r.source[2:].lower()}" for r in EmojiSource(limit=5).records)
    notices = capsys.readouterr().err.strip().splitlines()
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
