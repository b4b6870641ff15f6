"""Every page renders and its JSON twin carries the same numbers."""

from __future__ import annotations

import re

import pytest
from make_fixture_index import DEAD_FEATURE, IMG_DS, N_FEATURES, N_TOP, PATCH, POOLED, TEXT

from sae_core.contract import SCHEMA_VERSION


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body.pop("built_at").startswith("20")
    assert body == {"status": "ok", "schema_version": SCHEMA_VERSION, "n_saes": 3, "inputs_hash": "fixture-inputs",
                    "problem": None}


def test_home_lists_saes_with_metrics(client):
    body = client.get("/index.json").json()
    assert body["count"] == 3 and len(body["data"]) == 3
    pooled = next(s for s in body["data"] if s["sae_id"] == POOLED)
    assert pooled["d_sae"] == N_FEATURES and pooled["k"] == 8
    assert pooled["dead_pct"] == pytest.approx(100 / 64)
    assert pooled["is_patch"] is False
    patch = next(s for s in body["data"] if s["sae_id"] == PATCH)
    assert patch["is_patch"] and patch["grid_h"] == 4 and patch["k"] is None
    html = client.get("/").text
    for s in body["data"]:
        assert f'href="/sae/{s["sae_id"]}"' in html
    assert "Shapes pooled &lt;b&gt;" in html  # titles are escaped too


def test_feature_page_and_twin(client, index_path):
    import duckdb

    j = client.get(f"/sae/{POOLED}/feature/3.json").json()
    con = duckdb.connect(str(index_path), read_only=True)
    want = con.execute("SELECT sample_id, activation FROM feature_top WHERE sae_id = ? AND feature_id = 3 "
                       "ORDER BY rank", [POOLED]).fetchall()
    name, max_act = con.execute("SELECT name, max_act FROM features WHERE sae_id = ? AND feature_id = 3",
                                [POOLED]).fetchone()
    con.close()
    assert [t["sample_id"] for t in j["top"]] == [w[0] for w in want]
    assert [t["activation"] for t in j["top"]] == pytest.approx([w[1] for w in want])
    assert len(j["top"]) == N_TOP
    assert j["feature"]["name"] == name and j["feature"]["max_act"] == pytest.approx(max_act)
    assert all(t["heatmap"] is None for t in j["top"])  # pooled SAE
    assert j["top"][0]["thumb_url"] == f"/thumb/{IMG_DS}/{want[0][0]}.webp"
    assert len(j["neighbors"]) == 10 and j["neighbors"][0]["feature_id"] == 4
    assert len(j["hist"]["edges"]) == len(j["hist"]["counts"]) + 1
    # index_meta says 4 equal bins over (0, max_act]: all four listed with their bounds, bin 3 empty
    assert [q["bin"] for q in j["quantiles"]] == [0, 1, 2, 3]
    assert [q["lo"] for q in j["quantiles"]] == pytest.approx([max_act * b / 4 for b in range(4)])
    assert [q["hi"] for q in j["quantiles"]] == pytest.approx([max_act * (b + 1) / 4 for b in range(4)])
    assert [len(q["samples"]) for q in j["quantiles"]] == [2, 2, 2, 0]
    assert sum(lab["count"] for lab in j["labels"]) == N_TOP
    assert j["prev_url"].endswith("/feature/2") and j["next_url"].endswith("/feature/4")
    html = client.get(f"/sae/{POOLED}/feature/3").text
    assert f"#3</span> {name}" in html
    assert html.count('class="qrow"') == 4 and html.count("no sample activates this feature in this range") == 1
    # every top sample is a tile with an activation and alt text
    assert html.count('class="tile"') >= N_TOP
    assert f'{want[0][1]:.3f}'.rstrip("0") in html
    assert re.search(r'<img src="/thumb/[^"]+" alt="[^"]+"', html)


def test_patch_feature_heatmaps_decode(client, index_path):
    import duckdb

    j = client.get(f"/sae/{PATCH}/feature/2.json").json()
    con = duckdb.connect(str(index_path), read_only=True)
    blob, scale = con.execute("SELECT heatmap, heatmap_scale FROM feature_top WHERE sae_id = ? AND "
                              "feature_id = 2 AND rank = 0", [PATCH]).fetchone()
    con.close()
    h = j["top"][0]["heatmap"]
    assert len(h) == 16
    assert h == pytest.approx([b * scale / 255 for b in blob], abs=1e-4)
    assert max(h) == pytest.approx(j["top"][0]["activation"], rel=1e-5)  # 255 decodes to the activation
    html = client.get(f"/sae/{PATCH}/feature/2").text
    assert 'data-heat-toggle' in html and html.count('<canvas class="heat"') >= N_TOP


def test_first_and_dead_feature(client):
    j = client.get(f"/sae/{POOLED}/feature/0.json").json()
    assert j["prev_url"] is None
    last = client.get(f"/sae/{POOLED}/feature/{DEAD_FEATURE}.json").json()
    assert last["next_url"] is None and last["top"] == [] and last["feature"]["title"] == f"feature {DEAD_FEATURE}"
    assert "never fired" in client.get(f"/sae/{POOLED}/feature/{DEAD_FEATURE}").text


def test_random_feature_redirects_to_a_firing_feature(client):
    r = client.get(f"/sae/{POOLED}/feature/random", params={"seed": 3})
    assert r.status_code == 307
    fid = int(r.headers["location"].rsplit("/", 1)[1])
    assert 0 <= fid < N_FEATURES and fid != DEAD_FEATURE


def test_text_dataset_shows_texts(client):
    j = client.get(f"/sae/{TEXT}/feature/1.json").json()
    assert all(t["thumb_url"] is None and t["caption"] for t in j["top"])
    html = client.get(f"/sae/{TEXT}/feature/1").text
    assert 'class="text-sample"' in html and "/thumb/" not in html


def test_explorer_page(client):
    j = client.get(f"/sae/{POOLED}.json").json()
    assert j["n_features"] == N_FEATURES and j["n_map_samples"] == 40
    assert [c["cluster_id"] for c in j["feature_clusters"]] == [0, 1, 2, 3]
    html = client.get(f"/sae/{POOLED}").text
    assert 'id="map"' in html and f'data-features-bin="/sae/{POOLED}/points/features.bin"' in html
    assert "cluster 0 of pooled-img" in html
    assert re.search(r'src="/static/[0-9a-f]{12}/map\.js"', html)


def test_dashboard(client, index_path):
    import duckdb

    j = client.get(f"/sae/{POOLED}/dashboard.json").json()
    con = duckdb.connect(str(index_path), read_only=True)
    n_live = con.execute("SELECT count(*) FROM features WHERE sae_id = ? AND density > 0", [POOLED]).fetchone()[0]
    con.close()
    assert sum(j["density_hist"]["counts"]) == n_live
    assert j["n_dead"] == N_FEATURES - n_live == 1
    assert len(j["scatter"]) == n_live and len(j["curve"]) == 20
    assert j["curve"][0]["step"] == 0 and j["curve"][-1]["step"] == 1900
    html = client.get(f"/sae/{POOLED}/dashboard").text
    assert html.count("<svg") >= 6 and html.count("<circle") == n_live


def test_sample_page(client):
    j = client.get(f"/sae/{PATCH}/sample/3.json").json()
    assert j["sample"]["sample_id"] == 3 and j["sample"]["label"] == "circle"
    acts = [f["activation"] for f in j["features"]]
    assert acts == sorted(acts, reverse=True) and len(acts) >= 1
    assert any(f["heatmap"] and len(f["heatmap"]) == 16 for f in j["features"])
    html = client.get(f"/sae/{PATCH}/sample/3").text
    assert "most active features" in html and "Every feature that fires on it" in html and j["features"][0]["url"] in html


def test_search_by_index_redirects(client):
    r = client.get(f"/sae/{POOLED}/search", params={"q": " 12 "})
    assert r.status_code == 303 and r.headers["location"] == f"/sae/{POOLED}/feature/12"
    j = client.get(f"/sae/{POOLED}/search.json", params={"q": "12"}).json()
    assert j["redirect"] == f"/sae/{POOLED}/feature/12" and j["data"][0]["feature_id"] == 12


def test_search_by_words_ranks_names_first(client):
    j = client.get(f"/sae/{POOLED}/search.json", params={"q": "triangle"}).json()
    assert j["count"] > 0
    scores = [h["score"] for h in j["data"]]
    assert scores == sorted(scores, reverse=True)
    named = [h for h in j["data"] if "triangle" in (h["name"] or "")]
    assert named and j["data"][0]["name"].startswith("triangle")
    assert all(h["score"] >= 10 * h["name_score"] for h in named)
    # caption-only matches: captions mention colours, names do not; each sample weighs its activation share
    j = client.get(f"/sae/{POOLED}/search.json", params={"q": "gold"}).json()
    assert j["count"] > 0 and all(h["matches"] > 0 and 0 < h["score"] <= h["matches"] for h in j["data"])


def test_search_pagination(client, app):
    size = app.state.settings.page_size
    j1 = client.get(f"/sae/{POOLED}/search.json", params={"q": "detector"}).json()
    assert j1["count"] == N_FEATURES - 2  # all named but the dead one and the XSS one
    assert len(j1["data"]) == size and j1["n_pages"] == -(-j1["count"] // size)
    j2 = client.get(f"/sae/{POOLED}/search.json", params={"q": "detector", "page": 2}).json()
    ids1 = {h["feature_id"] for h in j1["data"]}
    assert ids1.isdisjoint(h["feature_id"] for h in j2["data"])
    far = client.get(f"/sae/{POOLED}/search.json", params={"q": "detector", "page": 99}).json()
    assert far["data"] == [] and far["count"] == j1["count"]
    html = client.get(f"/sae/{POOLED}/search", params={"q": "detector"}).text
    assert 'rel="next"' in html and f"{j1['count']} features match" in html


def test_search_wildcards_are_literal(client):
    assert client.get(f"/sae/{POOLED}/search.json", params={"q": "%"}).json()["count"] == 0
    assert client.get(f"/sae/{POOLED}/search.json", params={"q": "___"}).json()["count"] == 0


def test_feature_list_by_ids(client):
    j = client.get(f"/sae/{POOLED}/features.json", params={"ids": "1,3-5,999"}).json()
    assert [f["feature_id"] for f in j["data"]] == [1, 3, 4, 5] and j["count"] == 4


def test_game_round_trip(client):
    g = client.get(f"/sae/{POOLED}/game.json", params={"seed": 7}).json()
    cands = [c["sample_id"] for c in g["candidates"]]
    assert len(cands) == 4 and len(set(cands)) == 4 and 1 <= len(g["clues"]) <= 5
    results = {pick: client.get(f"/sae/{POOLED}/game/answer.json",
                                params={"token": g["token"], "pick": pick}).json() for pick in cands}
    right = [p for p, a in results.items() if a["correct"]]
    assert len(right) == 1 and results[right[0]]["answer"]["sample_id"] == right[0]
    assert str(right[0]) not in g["token"].split(".")[1:2]  # the token does not show the answer
    # the hidden sample is not among the clue thumbnails
    assert all(t["sample_id"] != right[0] for c in g["clues"] for t in c["top"])
    html = client.get(f"/sae/{POOLED}/game/answer", params={"token": g["token"], "pick": right[0]}).text
    assert "Right!" in html
    forged = g["token"][:-1] + ("0" if g["token"][-1] != "0" else "1")
    r = client.get(f"/sae/{POOLED}/game/answer.json", params={"token": forged, "pick": right[0]})
    assert r.status_code == 422 and "token" in r.json()["message"]
    html = client.get(f"/sae/{POOLED}/game", params={"seed": 7}).text
    assert html.count('name="pick"') == 4


def test_thumbnails_and_cache_headers(client):
    r = client.get(f"/thumb/{IMG_DS}/5.webp")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WEBP"
    assert "max-age=604800" in r.headers["cache-control"]
    html = client.get("/").text
    css = re.search(r'href="(/static/[0-9a-f]{12}/app\.css)"', html).group(1)
    r = client.get(css)
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    stale = client.get("/static/000000000000/app.css")
    assert "immutable" not in stale.headers["cache-control"]


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ["/sae/{sae_id}/feature/{fid}.json", "/sae/{sae_id}/feature/{fid}", "/sae/{sae_id}/search.json",
              "/thumb/{dataset_id}/{sample_id}.webp", "/health", "/index.json"]:
        assert p in paths
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN: not offline
    assert 'href="/openapi.json"' in client.get("/").text


def test_head_requests_answer_like_get_without_a_body(client):
    for url in ["/", f"/sae/{POOLED}", f"/sae/{POOLED}/feature/1", f"/sae/{POOLED}/feature/1.json"]:
        get, head = client.get(url), client.head(url)
        assert head.status_code == get.status_code == 200, url
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], url
    assert client.head(f"/sae/{POOLED}/feature/999999").status_code == 404


def test_error_pages_speak_plainly_and_link_back_to_their_sae(client):
    html = client.get(f"/sae/{POOLED}/feature/-3").text
    assert "feature id: input should be greater than or equal to 0" in html and "fid:" not in html
    assert f'href="/sae/{POOLED}"' in html and f'href="/sae/{POOLED}/feature/random"' in html
    assert 'href="/sae/nope"' not in client.get("/sae/nope/feature/1").text


def test_every_page_has_copy_link_and_json_twin(client):
    for url in ["/", f"/sae/{POOLED}", f"/sae/{POOLED}/feature/1", f"/sae/{POOLED}/dashboard",
                f"/sae/{POOLED}/search?q=star", f"/sae/{POOLED}/sample/2", f"/sae/{POOLED}/game"]:
        html = client.get(url).text
        assert "data-copy-link" in html, url
        twin = re.search(r'<link rel="alternate" type="application/json" href="([^"]+)"', html).group(1)
        twin = twin.replace("&amp;", "&")
        assert client.get(twin).status_code == 200, twin


def test_app_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, app.main; sys.exit('torch' in sys.modules or 'sae_core' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(__import__("conftest").REPO)).returncode == 0


def test_histogram_starts_at_the_first_bin_with_samples(client, index_path):
    import duckdb

    con = duckdb.connect(str(index_path), read_only=True)
    for fid in range(12):
        edges, counts = con.execute("SELECT edges, counts FROM feature_hist WHERE sae_id = ? AND feature_id = ?", [POOLED, fid]).fetchone()
        j = client.get(f"/sae/{POOLED}/feature/{fid}.json").json()["hist"]
        first = next((i for i, c in enumerate(counts) if c), 0)
        assert j["counts"] == counts[first:] and j["edges"] == pytest.approx(edges[first:]), fid
        assert not j["counts"] or j["counts"][0] > 0


def test_unclustered_features_say_so(client):
    html = client.get(f"/sae/{POOLED}/feature/8").text  # the fixture leaves every 9th feature unclustered
    cluster = re.search(r"<dt>cluster</dt><dd>(.*?)</dd>", html).group(1)
    assert "-1" not in cluster and "none" in cluster


def test_home_shows_label_pure_features_from_different_clusters(client, index_path):
    import duckdb

    j = client.get("/index.json").json()
    con = duckdb.connect(str(index_path), read_only=True)
    for sae_id, cards in j["examples"].items():
        assert 0 < len(cards) <= 6
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT feature_id, label_entropy, cluster_id, n_fired FROM features WHERE sae_id = ?", [sae_id]).fetchall()}
        clusters = [rows[c["feature_id"]][1] for c in cards]
        assert len([c for c in clusters if c >= 0]) == len({c for c in clusters if c >= 0})  # one per cluster
        assert all(rows[c["feature_id"]][2] >= 4 for c in cards)  # enough samples to show
        labels = [c["top_label"] for c in cards if c["top_label"] is not None]
        assert len(labels) == len(set(labels))  # and one per top label
        counts: dict[int, dict[str, int]] = {}
        for f, lab in con.execute("SELECT t.feature_id, s.label FROM feature_top t JOIN saes a USING (sae_id) JOIN samples s "
                                  "ON s.dataset_id = a.dataset_id AND s.sample_id = t.sample_id "
                                  "WHERE t.sae_id = ? AND t.rank < 16 AND s.label IS NOT NULL", [sae_id]).fetchall():
            counts.setdefault(f, {}).setdefault(lab, 0)
            counts[f][lab] += 1
        purity = {f: max(c.values()) / sum(c.values()) for f, c in counts.items()}
        if purity:  # the stated rule: one label on at least half the 16 top samples, purest first
            got = [purity[c["feature_id"]] for c in cards]
            assert got == sorted(got, reverse=True) and min(got) >= 0.5
            assert [c["top_label_fraction"] for c in cards] == pytest.approx(got)
            assert got[0] == max(p for f, p in purity.items() if rows[f][2] >= 4)  # the purest comes first
        assert all(len(c["top"]) <= 4 for c in cards)
    html = client.get("/").text
    first = j["examples"][POOLED][0]
    assert f'href="{first["url"]}"' in html and "A first look" in html
    # the text SAE's dataset has no labels: its examples are its strongest features, and it says so
    text = j["examples"][TEXT]
    assert all(c["label_entropy"] is None for c in text)
    keys = [(c["name_score"], c["max_act"]) for c in text]
    assert keys == sorted(keys, reverse=True)  # best-scored names first, then the strongest
    section = html[html.index(f"A first look: {j['data'][[s['sae_id'] for s in j['data']].index(TEXT)]['title']}"):]
    assert "best-scored names, then the strongest activations" in section.split("</section>")[0]


def test_dashboard_scatter_points_open_their_feature(client):
    html = client.get(f"/sae/{POOLED}/dashboard").text
    links = re.findall(rf'<a href="/sae/{POOLED}/feature/(\d+)"><circle', html)
    titles = re.findall(r"<circle[^>]*>\s*<title>#(\d+):", html)
    assert links and links == titles  # every dot links to the feature its tooltip names
