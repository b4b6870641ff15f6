"""Feature pages say what their claims rest on: name scores, label entropy in bits, and both kinds
of neighbours, labelled."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pytest
from make_fixture_index import POOLED


def test_feature_page_shows_the_name_score_and_entropy_unit(client, index_path):
    j = client.get(f"/sae/{POOLED}/feature/3.json").json()
    con = duckdb.connect(str(index_path), read_only=True)
    score, coverage = con.execute("SELECT name_score, name_coverage FROM features WHERE sae_id = ? AND feature_id = 3", [POOLED]).fetchone()
    assert j["feature"]["name_score"] == pytest.approx(score) and j["feature"]["name_coverage"] == pytest.approx(coverage)
    html = client.get(f"/sae/{POOLED}/feature/3").text
    assert f"Name score {100 * score:.2f}%" in html
    assert re.search(r"label entropy</dt><dd>[0-9.]+ <small>bits</small>", html)


def test_weak_names_say_maybe(client, index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    fid, name = con.execute("SELECT feature_id, name FROM features WHERE sae_id = ? AND name_score < 0.5 AND name <> '' "
                            "ORDER BY feature_id LIMIT 1", [POOLED]).fetchone()
    j = client.get(f"/sae/{POOLED}/feature/{fid}.json").json()
    assert j["feature"]["name_weak"] and j["feature"]["title"] == f"maybe {name}"
    assert "weak: below 50%" in client.get(f"/sae/{POOLED}/feature/{fid}").text


def test_feature_page_lists_coactivation_and_decoder_neighbours_labelled(client, index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    want = con.execute("SELECT neighbor_id, jaccard, n_both FROM feature_coactivation WHERE sae_id = ? AND feature_id = 3 ORDER BY rank",
                       [POOLED]).fetchall()
    assert want  # the fixture's top lists overlap
    j = client.get(f"/sae/{POOLED}/feature/3.json").json()
    assert [(n["feature_id"], n["n_both"]) for n in j["coactivation"]] == [(g, n) for g, _, n in want]
    assert [n["jaccard"] for n in j["coactivation"]] == pytest.approx([w for _, w, _ in want])
    html = client.get(f"/sae/{POOLED}/feature/3").text
    co = html[html.index('data-neighbors="coactivation"'):html.index('data-neighbors="decoder"')]
    assert "Jaccard" in co and f'/sae/{POOLED}/feature/{want[0][0]}"' in co
    dec = html[html.index('data-neighbors="decoder"'):]
    assert "decoder cosine" in dec and dec.count("cos ") >= len(j["neighbors"])


def test_feature_page_shows_concepts_in_order_with_their_method(client, index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    want = con.execute("SELECT kind, concept, score, method FROM feature_concepts WHERE sae_id = ? AND feature_id = 4 ORDER BY kind, rank",
                       [POOLED]).fetchall()
    j = client.get(f"/sae/{POOLED}/feature/4.json").json()
    assert [(c["kind"], c["concept"], c["method"]) for c in j["concepts"]] == [(k, c, m) for k, c, _, m in want]
    html = client.get(f"/sae/{POOLED}/feature/4").text
    section = html[html.index('class="concepts"'):]
    promotes = section[section.index('data-kind="promotes"'):section.index('data-kind="suppresses"')]
    assert re.findall(r"<tr><td>([^<]+)</td>", promotes) == [c for k, c, _, _ in want if k == "promotes"]
    assert "+3.00" in promotes and "logit change" in section
    assert client.get(f"/sae/{POOLED}/feature/5.json").json()["concepts"] == []
    assert 'class="concepts"' not in client.get(f"/sae/{POOLED}/feature/5").text


def test_held_out_metrics_stand_beside_the_in_sample_ones(client):
    pooled = next(s for s in client.get("/index.json").json()["data"] if s["sae_id"] == POOLED)
    assert pooled["explained_variance"] == pytest.approx(0.83) and pooled["heldout_explained_variance"] == pytest.approx(0.47)
    assert pooled["heldout_never_fired"] == pytest.approx(0.62) and pooled["heldout_n_tokens"] == 68
    assert pooled["training_dead_fraction"] == 0.0
    others = [s for s in client.get("/index.json").json()["data"] if s["sae_id"] != POOLED]
    assert all(s["heldout_explained_variance"] is None for s in others)  # no held-out record: None, never a guess
    home = client.get("/").text
    row = home[home.index(f'data-sae="{POOLED}"'):]
    row = row[:row.index("</tr>")]
    assert "83.00%" in row and "47.00%" in row
    dash = client.get(f"/sae/{POOLED}/dashboard").text
    held = dash[dash.index('data-split="heldout"'):]
    held = held[:held.index("</tr>")]
    assert "68 held-out tokens" in held and "47.00%" in held and "62.00%" in held
    assert "training data included" in dash and "on any patch" not in dash
    assert "on any patch" in client.get("/sae/" + next(s["sae_id"] for s in others if s["is_patch"]) + "/dashboard").text
    assert client.get(f"/sae/{POOLED}/dashboard.json").json()["sae"]["heldout_fvu"] == pytest.approx(0.53)


def test_neuron_alignment_on_the_feature_page_and_dashboard(client, index_path):
    from make_fixture_index import PATCH

    con = duckdb.connect(str(index_path), read_only=True)
    raw, best = con.execute("SELECT cosines, best_neuron FROM feature_alignment WHERE sae_id = ? AND feature_id = 7", [PATCH]).fetchone()
    j = client.get(f"/sae/{PATCH}/feature/7.json").json()["alignment"]
    want = [b / 127 for b in np.frombuffer(raw, np.int8)]
    assert j["cosines"] == pytest.approx(want) and j["best_neuron"] == best and j["n_neurons"] == 12 and j["threshold"] == 0.5
    assert j["n_above"] == sum(c > 0.5 for c in want)
    html = client.get(f"/sae/{PATCH}/feature/7").text
    assert 'data-analysis="alignment"' in html and "<polyline" in html[html.index('data-analysis="alignment"'):]
    assert client.get(f"/sae/{POOLED}/feature/7.json").json()["alignment"] is None
    assert 'data-analysis="alignment"' not in client.get(f"/sae/{POOLED}/feature/7").text
    d = client.get(f"/sae/{PATCH}/dashboard.json").json()
    maxes = [r[0] for r in con.execute("SELECT max_cos FROM feature_alignment WHERE sae_id = ?", [PATCH]).fetchall()]
    assert sum(d["alignment"]["features"]) == len(maxes) and sum(d["alignment"]["random"]) == 100
    assert d["alignment"]["n_aligned"] == sum(m > 0.3 + 0.099 for m in maxes)
    assert d["low_density"] == {"size": 9, "gap_decades": 2.5, "mean_pairwise_cos": pytest.approx(0.97),
                                "feature_ids": [0, 1, 2, 3, 4, 5, 60, 61, 62]}
    dash = client.get(f"/sae/{PATCH}/dashboard").text
    assert "Ultra-low-density cluster" in dash and "nearly one direction" in dash and f'/sae/{PATCH}/feature/61"' in dash
    assert client.get(f"/sae/{POOLED}/dashboard.json").json()["low_density"] is None


def test_heatmaps_are_joined_to_their_own_samples(client, index_path):
    from make_fixture_index import PATCH

    from app.views.common import decode_heatmap

    con = duckdb.connect(str(index_path), read_only=True)
    j = client.get(f"/sae/{PATCH}/feature/3.json").json()
    top = {s: decode_heatmap(h, sc) for s, h, sc in con.execute(
        "SELECT sample_id, heatmap, heatmap_scale FROM feature_top WHERE sae_id = ? AND feature_id = 3", [PATCH]).fetchall()}
    assert j["top"] and all(t["heatmap"] == pytest.approx(top[t["sample_id"]]) for t in j["top"])
    quant = {(b, s): decode_heatmap(h, sc) for b, s, h, sc in con.execute(
        "SELECT bin, sample_id, heatmap, heatmap_scale FROM feature_quantiles WHERE sae_id = ? AND feature_id = 3", [PATCH]).fetchall()}
    shown = [(q["bin"], t) for q in j["quantiles"] for t in q["samples"]]
    assert shown and all(t["heatmap"] == pytest.approx(quant[(b, t["sample_id"])]) for b, t in shown)


def test_approximate_coactivation_counts_say_so(client, index_path, tmp_path):
    """An index whose pair counts hit the memory cap (index_meta coactivation_undercount > 0 for
    the SAE) says on the feature page that the counts may be low, and by how much; exact ones don't."""
    import json
    import shutil

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    assert client.get(f"/sae/{POOLED}/feature/3.json").json()["coactivation_undercount"] == 0
    assert "Approximate:" not in client.get(f"/sae/{POOLED}/feature/3").text
    copy = tmp_path / "approx.duckdb"
    shutil.copy(index_path, copy)
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM index_meta WHERE key = 'coactivation_undercount'")
    con.execute("INSERT INTO index_meta VALUES ('coactivation_undercount', ?)", [json.dumps({POOLED: 3, "other": 9})])
    con.close()
    with TestClient(create_app(Settings(index=copy, secret="test-secret"))) as approx:
        assert approx.get(f"/sae/{POOLED}/feature/3.json").json()["coactivation_undercount"] == 3
        html = approx.get(f"/sae/{POOLED}/feature/3").text
    assert 'data-undercount="3"' in html and "at most 3 samples were dropped" in html
