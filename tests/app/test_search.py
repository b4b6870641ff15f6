"""Search matches whole words (prefixes only as a fallback), ranks all-word hits first,
understands ids as pages show them, and never serves a page past the end."""

from __future__ import annotations

import re
import shutil

import duckdb
import pytest
from fastapi.testclient import TestClient
from make_fixture_index import IMG_DS, N_FEATURES, POOLED, TEXT, TEXT_DS

from app.main import create_app
from app.settings import Settings
from precompute.search_index import build_search_terms


def sj(client, sae: str, q: str, **params):
    return client.get(f"/sae/{sae}/search.json", params={"q": q, **params}).json()


def all_hits(client, sae: str, q: str) -> list[dict]:
    """Every result of q, page after page."""
    first = sj(client, sae, q)
    hits = list(first["data"])
    for page in range(2, first["n_pages"] + 1):
        hits += sj(client, sae, q, page=page)["data"]
    assert len(hits) == first["count"]
    return hits


def ids(hits: list[dict]) -> list[int]:
    return [h["feature_id"] for h in hits]


# --- a plain-Python reference of the ranking, over the fixture's own rows ---------------------

def stem(w: str) -> str:
    """The documented plural rule (app.search_text), written independently of its SQL."""
    if len(w) <= 3:
        return w
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if re.search(r"(ss|sh|ch|x|z)es$", w):
        return w[:-2]
    if re.search(r"(ss|us|is)$", w) or not w.endswith("s"):
        return w
    return w[:-1]


def words(text: str | None) -> list[str]:
    raw = re.findall(r"\w+(?:'\w+)*", (text or "").lower().replace("’", "'"))
    return [stem(re.sub(r"'s$", "", w)) for w in raw]


def reference(index_path, sae: str, dataset: str, terms: list[str]) -> tuple[list[tuple], int]:
    """[(feature_id, score, matches)] in rank order, and how many match every term.

    Score per word: 10 x name_score when the name holds it, plus h x h / t, where h sums the top
    samples holding it, each weighted by its activation over the feature's top activation, and t
    sums that weight over all its top samples (so h / t is the share of its top that holds it)."""
    con = duckdb.connect(str(index_path), read_only=True)
    names = {fid: (name, ns) for fid, name, ns in con.execute(
        "SELECT feature_id, name, name_score FROM features WHERE sae_id = ?", [sae]).fetchall()}
    texts = {sid: words(c) + words(lab) for sid, c, lab in con.execute(
        "SELECT sample_id, caption, label FROM samples WHERE dataset_id = ?", [dataset]).fetchall()}
    top: dict[int, list[tuple[int, float]]] = {}
    for fid, sid, act in con.execute("SELECT feature_id, sample_id, activation FROM feature_top WHERE sae_id = ? "
                                     "ORDER BY feature_id, rank", [sae]).fetchall():
        top.setdefault(fid, []).append((sid, act))
    con.close()
    terms = [stem(t) for t in terms]
    vocab = {w for tops in top.values() for s, _ in tops for w in texts[s]} | {w for n, _ in names.values() for w in words(n)}
    whole = {t: t in vocab for t in terms}

    def hit(ws: list[str], t: str) -> bool:
        return any(w == t if whole[t] else w.startswith(t) for w in ws)

    rows = []
    for fid, (name, name_score) in names.items():
        tops = top.get(fid, [])
        peak = max((a for _, a in tops), default=1.0)
        total = sum(a / peak for _, a in tops)
        per_term = [(hit(words(name), t), sum(a / peak for s, a in tops if hit(texts[s], t))) for t in terms]
        per_term = [(n, h * h / total if total else 0.0) for n, h in per_term]
        n_terms = sum(1 for n, h in per_term if n or h)
        if n_terms:
            score = round(sum(10 * (name_score if name_score is not None else 1.0) * n + h for n, h in per_term), 4)
            matches = sum(any(hit(texts[s], t) for t in terms) for s, _ in tops)
            rows.append((n_terms, score, fid, matches))
    rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return [(fid, score, m) for _, score, fid, m in rows], sum(r[0] == len(terms) for r in rows)


def ranked(hits: list[dict]) -> list[tuple]:
    return [(h["feature_id"], round(h["score"], 4), h["matches"]) for h in hits]


# --- words, not substrings ------------------------------------------------------------------

@pytest.mark.parametrize("sae, q, inside", [
    (POOLED, "angle", "triangle"), (POOLED, "tar", "star"), (POOLED, "ircle", "circle"),
    (TEXT, "ore", "forest"), (TEXT, "rchard", "orchard"),
])
def test_substrings_inside_words_never_match(client, sae, q, inside):
    j = sj(client, sae, q)
    assert j["count"] == 0 and j["data"] == []
    # the word containing q is there: a substring search would have found it
    assert sj(client, sae, inside)["count"] > 0
    html = client.get(f"/sae/{sae}/search", params={"q": q}).text
    assert "No feature matches" in html and "whole words" in html


def test_whole_word_ranks_names_and_counts_samples(client, index_path):
    hits = all_hits(client, POOLED, "triangle")
    want, _ = reference(index_path, POOLED, IMG_DS, ["triangle"])
    assert ranked(hits) == want
    named = [h for h in hits if h["name"] and "triangle" in h["name"]]
    assert named and all(h["score"] >= 10 * h["name_score"] for h in named)


def test_prefix_is_the_fallback_when_no_whole_word_exists(client):
    """'tri' is nowhere a whole word, so it matches the words starting with it: 'triangle'."""
    tri, full = sj(client, POOLED, "tri"), sj(client, POOLED, "triangle")
    assert tri["count"] == full["count"] > 0
    assert [(h["feature_id"], h["score"]) for h in tri["data"]] == [(h["feature_id"], h["score"]) for h in full["data"]]
    assert sj(client, TEXT, "orch")["count"] == sj(client, TEXT, "orchard")["count"] > 0


def test_case_and_punctuation(client):
    base = ids(sj(client, POOLED, "red triangle")["data"])
    assert ids(sj(client, POOLED, "RED, Triangle!")["data"]) == base
    assert ids(sj(client, POOLED, "red-triangle")["data"]) == base
    assert ids(sj(client, POOLED, "triangle's")["data"]) == ids(sj(client, POOLED, "triangle")["data"])


# --- several words: all of them first ---------------------------------------------------------

def test_all_words_rank_before_some(client, index_path):
    hits = all_hits(client, POOLED, "red triangle")
    want, n_all = reference(index_path, POOLED, IMG_DS, ["red", "triangle"])
    assert ranked(hits) == want
    assert 0 < n_all < len(hits)
    # the reference's partial hits can outscore full ones; rank still puts every full hit first
    red, tri = set(ids(all_hits(client, POOLED, "red"))), set(ids(all_hits(client, POOLED, "triangle")))
    assert set(ids(hits[:n_all])) == red & tri and set(ids(hits[n_all:])) == (red | tri) - (red & tri)
    html = " ".join(client.get(f"/sae/{POOLED}/search", params={"q": "red triangle"}).text.split())
    assert f"{n_all} features match all of “red triangle”; {len(hits) - n_all} more match some" in html
    j = sj(client, POOLED, "red triangle")  # the JSON twin carries the same split
    assert (j["n_terms"], j["n_all"]) == (2, n_all)
    assert [h["terms_matched"] for h in hits] == [2] * n_all + [1] * (len(hits) - n_all)


def test_partial_hits_are_marked_after_the_full_ones(client, index_path):
    _, n_all = reference(index_path, POOLED, IMG_DS, ["red", "triangle"])
    j = sj(client, POOLED, "red triangle", page=n_all // 24 + 1)
    html = client.get(f"/sae/{POOLED}/search", params={"q": "red triangle", "page": j["page"]}).text
    marked = [int(f) for f in re.findall(r'<li data-feature="(\d+)" data-partial>', html)]
    first = (j["page"] - 1) * j["page_size"]
    assert marked and marked == ids(j["data"])[n_all - first:]


def test_all_words_on_text_dataset(client, index_path):
    """Text samples have no labels: captions alone decide."""
    for q in ("apple ocean", "forest night", "pie"):
        want, _ = reference(index_path, TEXT, TEXT_DS, q.split())
        assert ranked(all_hits(client, TEXT, q)) == want


# --- car, cars, card: an index whose names hold those words -----------------------------------

CAR_NAMES = {10: "car, vehicle", 11: "cars, road", 12: "file, office, card", 13: "sidecar, motorbike",
             14: "carpet, rug", 15: "Car’s wheel"}
CAR_NAME_SCORES = {15: 0.6}  # a weak name: its hit counts 6, not 10


@pytest.fixture(scope="module")
def car_client(index_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("cars") / "cars.duckdb"
    shutil.copy(index_path, path)
    con = duckdb.connect(str(path))
    for fid, name in {**CAR_NAMES, 16: "eine Straße in Köln", 17: "İstanbul ferry"}.items():
        con.execute("UPDATE features SET name = ?, name_score = ? WHERE sae_id = ? AND feature_id = ?",
                    [name, CAR_NAME_SCORES.get(fid, 1.0), POOLED, fid])
    con.execute("DELETE FROM search_terms")  # names changed: rebuild the search index as `index` would
    build_search_terms(con)
    con.close()
    app = create_app(Settings(index=path, secret="cars"))
    with TestClient(app, follow_redirects=False) as c:
        yield c
    app.state.index.close()


def test_car_with_stop_words_and_non_ascii_names(car_client):
    """'the car' means 'car' (stop words would match every caption); words are matched as typed,
    so 'Straße' and 'İstanbul' (whose case folds differ in length) still find themselves."""
    assert ids(sj(car_client, POOLED, "the car")["data"]) == ids(sj(car_client, POOLED, "car")["data"]) == [10, 11, 15]
    assert sj(car_client, POOLED, "the car")["n_terms"] == 1
    assert sj(car_client, POOLED, "the")["n_terms"] == 1  # a query of stop words alone still searches them
    for q, want in (("Straße", [16]), ("straße", [16]), ("Köln", [16]), ("İstanbul", [17])):
        assert ids(sj(car_client, POOLED, q)["data"]) == want, q


def test_car_finds_car_and_cars_not_card(car_client):
    j = sj(car_client, POOLED, "car")
    assert [(h["feature_id"], h["score"]) for h in j["data"]] == [(10, 10), (11, 10), (15, 6)]
    assert ids(sj(car_client, POOLED, "card")["data"]) == [12]
    for q in ("cars", "CARS", "Car’s", "car's"):  # plural, case and possessive forms find the same features
        assert sj(car_client, POOLED, q)["data"] == j["data"], q
    assert ids(sj(car_client, POOLED, "carp")["data"]) == [14]  # no whole word 'carp': prefix of 'carpet'
    assert ids(sj(car_client, POOLED, "sidecar")["data"]) == [13]
    html = car_client.get(f"/sae/{POOLED}/search", params={"q": "car"}).text
    assert "card" not in html and "sidecar" not in html and "3 features match" in html


def test_car_with_a_caption_word(car_client):
    """'car red': car features with a red top sample come first; card/sidecar/carpet only on 'red'."""
    hits = all_hits(car_client, POOLED, "car red")
    both = {h["feature_id"] for h in hits if h["feature_id"] in (10, 11, 15) and h["matches"] > 0}
    assert both and set(ids(hits[:len(both)])) == both
    # card/sidecar/carpet: no name hit, only activation-weighted red samples (each weight <= 1)
    assert all(0 < h["score"] <= h["matches"] for h in hits if h["feature_id"] in (12, 13, 14))


# --- ids as pages show them --------------------------------------------------------------------

@pytest.mark.parametrize("q", ["12", " 12 ", "#12", "# 12", "f12", "F12", "feature 12", "Feature #12", "feat 12"])
def test_id_forms_open_the_feature(client, q):
    r = client.get(f"/sae/{POOLED}/search", params={"q": q})
    assert r.status_code == 303 and r.headers["location"] == f"/sae/{POOLED}/feature/12"
    j = sj(client, POOLED, q)
    assert j["redirect"] == f"/sae/{POOLED}/feature/12" and ids(j["data"]) == [12]


@pytest.mark.parametrize("sae, q, fid, last", [
    (POOLED, "99999", 99999, N_FEATURES - 1), (POOLED, "#64", 64, N_FEATURES - 1),
    (POOLED, "feature 64", 64, N_FEATURES - 1), (TEXT, "f16", 16, 15), (POOLED, "9" * 40, int("9" * 40), 63),
])
def test_missing_id_says_which_ids_exist(client, sae, q, fid, last):
    msg = f"No feature {fid}; feature ids are 0–{last}."
    r = client.get(f"/sae/{sae}/search.json", params={"q": q})
    assert r.status_code == 404 and r.json()["message"] == msg
    r = client.get(f"/sae/{sae}/search", params={"q": q})
    assert r.status_code == 404 and msg in r.text
    assert f'value="{q}"' in r.text  # the search box keeps what was typed
    assert "features match" not in r.text


# --- pages past the end -------------------------------------------------------------------------

def test_page_past_the_end_goes_to_the_last(client, app):
    size = app.state.settings.page_size
    count = sj(client, POOLED, "detector")["count"]
    last = -(-count // size)
    assert last >= 2
    r = client.get(f"/sae/{POOLED}/search", params={"q": "detector", "page": 999})
    assert r.status_code == 303 and r.headers["location"] == f"/sae/{POOLED}/search?q=detector&page={last}"
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and f"page {last} of {last}" in page.text and 'rel="next"' not in page.text
    j = sj(client, POOLED, "detector", page=999)
    assert j["redirect"] == r.headers["location"] and j["data"] == []
    assert j["count"] == count and j["n_pages"] == last
    at_last = sj(client, POOLED, "detector", page=last)
    assert at_last["redirect"] is None and len(at_last["data"]) == count - (last - 1) * size


def test_page_past_the_end_of_nothing_goes_to_page_one(client):
    r = client.get(f"/sae/{POOLED}/search", params={"q": "angle", "page": 3})
    assert r.status_code == 303 and r.headers["location"] == f"/sae/{POOLED}/search?q=angle"
    r = client.get(f"/sae/{POOLED}/search", params={"q": "angle & ircle", "page": 9})
    assert r.status_code == 303 and r.headers["location"] == f"/sae/{POOLED}/search?q=angle+%26+ircle"
    assert sj(client, POOLED, "", page=2)["redirect"] == f"/sae/{POOLED}/search?q="
    assert client.get(f"/sae/{POOLED}/search", params={"q": "angle", "page": 1}).status_code == 200


# --- hostile or odd input -------------------------------------------------------------------------

@pytest.mark.parametrize("q", ["'", "\\", "''; DROP TABLE features; --", r"\b(", "[", "(?i).*", "a|b", "$1", "%_%",
                               "²", "ñandú", "🙂", "’s", "#", "feature", "f", "-12", "1e3", "12 13", "x" * 100])
def test_odd_queries_answer_without_error(client, q):
    for sae in (POOLED, TEXT):
        r = client.get(f"/sae/{sae}/search.json", params={"q": q})
        assert r.status_code == 200, (q, r.text)
        j = r.json()
        assert j["count"] == len(j["data"]) or j["n_pages"] > 1
        html = client.get(f"/sae/{sae}/search", params={"q": q})
        assert html.status_code == 200


def test_regex_metacharacters_are_literal(client):
    """Regex and LIKE syntax is not interpreted: only the words in it are searched."""
    assert sj(client, POOLED, "(?i).*")["count"] == sj(client, POOLED, "i")["count"] == 0
    assert sj(client, POOLED, "%a%")["data"] == sj(client, POOLED, "a")["data"]
    dotted = sj(client, POOLED, "tri.ngle")  # the words 'tri' and 'ngle', not a regex
    assert dotted["data"] == sj(client, POOLED, "tri ngle")["data"] and dotted["count"] > 0
    html = client.get(f"/sae/{POOLED}/search", params={"q": "tri.ngle"}).text
    assert "No feature matches all of" in html
    assert sj(client, POOLED, "triangle|circle")["count"] == len(all_hits(client, POOLED, "triangle circle"))


def test_too_long_word_is_a_clear_422(client):
    r = client.get(f"/sae/{POOLED}/search.json", params={"q": "x" * 150})
    assert r.status_code == 422 and "100 characters" in r.json()["message"]


def test_empty_query_explains_itself(client):
    j = sj(client, POOLED, "")
    assert j["count"] == 0 and j["redirect"] is None
    html = client.get(f"/sae/{POOLED}/search", params={"q": "  "}).text
    assert "Type a feature id" in html and f"Feature ids are 0–{N_FEATURES - 1}" in html


def test_hits_carry_their_first_top_samples(client, index_path):
    """Results are judged by their images: each hit shows its first top samples, in rank order."""
    con = duckdb.connect(str(index_path), read_only=True)
    j = sj(client, POOLED, "triangle")
    assert j["data"]
    for h in j["data"]:
        want = [r[0] for r in con.execute("SELECT sample_id FROM feature_top WHERE sae_id = ? AND feature_id = ? AND rank < 4 "
                                          "ORDER BY rank", [POOLED, h["feature_id"]]).fetchall()]
        assert [t["sample_id"] for t in h["top"]] == want and all(t["thumb_url"] for t in h["top"])
    html = client.get(f"/sae/{POOLED}/search", params={"q": "triangle"}).text
    first = j["data"][0]["top"][0]["thumb_url"]
    assert f'src="{first}"' in html


# --- phrases, plurals, the length cap, filters and sort (issue 14) --------------------------------

def phrase_features(index_path, sae: str, dataset: str, phrase: str) -> set[int]:
    """Features with a top sample whose caption or label holds the phrase's words in order, or whose name does."""
    want = words(phrase)
    con = duckdb.connect(str(index_path), read_only=True)
    texts = {sid: (words(c), words(lab)) for sid, c, lab in con.execute(
        "SELECT sample_id, caption, label FROM samples WHERE dataset_id = ?", [dataset]).fetchall()}
    tops = con.execute("SELECT feature_id, sample_id FROM feature_top WHERE sae_id = ?", [sae]).fetchall()
    names = con.execute("SELECT feature_id, name FROM features WHERE sae_id = ?", [sae]).fetchall()
    con.close()

    def holds(ws: list[str]) -> bool:
        return any(ws[i:i + len(want)] == want for i in range(len(ws)))

    return {f for f, s in tops if any(holds(ws) for ws in texts[s])} | {f for f, n in names if holds(words(n))}


@pytest.mark.parametrize("sae, dataset, phrase", [(TEXT, TEXT_DS, "apple pie"), (POOLED, IMG_DS, "red triangle"),
                                                  (POOLED, IMG_DS, "Triangle Detectors")])
def test_quoted_phrase_needs_its_words_together(client, index_path, sae, dataset, phrase):
    hits = all_hits(client, sae, f'"{phrase}"')
    want = phrase_features(index_path, sae, dataset, phrase)
    assert want and set(ids(hits)) == want
    loose = set(ids(all_hits(client, sae, phrase)))
    assert want <= loose  # the words anywhere find more
    assert sj(client, sae, f'"{phrase}"')["n_terms"] == 1  # a phrase is one term
    reversed_words = " ".join(reversed(phrase.split()))
    assert sj(client, sae, f'"{reversed_words}"')["count"] == 0  # order matters: no text holds it reversed


def test_plural_and_singular_find_the_same_features(client):
    for a, b in (("triangle", "triangles"), ("circle", "Circles"), ("detector", "DETECTORS"), ("ocean", "oceans")):
        for sae in (POOLED, TEXT):
            assert sj(client, sae, a)["data"] == sj(client, sae, b)["data"], (a, b)
    assert sj(client, POOLED, "triangles")["count"] > 0


def test_query_length_is_capped_with_a_clear_message(client):
    long = "triangle " * 30  # 270 characters
    r = client.get(f"/sae/{POOLED}/search.json", params={"q": long})
    assert r.status_code == 422 and "search text" in r.json()["message"] and "200 characters" in r.json()["message"]
    html = client.get(f"/sae/{POOLED}/search", params={"q": long})
    assert html.status_code == 422 and "200 characters" in html.text and long.strip() not in html.text


def test_filters_and_sort_narrow_and_order_results(client):
    everything = all_hits(client, POOLED, "detector")

    def filtered(**f) -> list[dict]:
        first = sj(client, POOLED, "detector", **f)
        hits = list(first["data"])
        for page in range(2, first["n_pages"] + 1):
            hits += sj(client, POOLED, "detector", page=page, **f)["data"]
        assert first["filters"] == {k: v for k, v in f.items() if k != "sort" or v != "relevance"}
        return hits

    in_c2 = filtered(cluster=2)
    assert in_c2 and ids(in_c2) == [h["feature_id"] for h in everything if h["cluster_id"] == 2]
    dense = filtered(min_density=0.5, max_density=0.9)
    assert dense and ids(dense) == [h["feature_id"] for h in everything if 0.5 <= h["density"] <= 0.9]
    circles = filtered(label="Circle")
    assert circles and all(h["top_label"] == "circle" for h in circles)
    by_density = filtered(sort="density")
    assert sorted(ids(by_density)) == sorted(ids(everything))
    assert [h["density"] for h in by_density] == sorted((h["density"] for h in everything), reverse=True)
    assert ids(filtered(sort="id")) == sorted(ids(everything))
    r = client.get(f"/sae/{POOLED}/search.json", params={"q": "detector", "sort": "bogus"})
    assert r.status_code == 422
    r = client.get(f"/sae/{POOLED}/search.json", params={"q": "detector", "min_density": 2})
    assert r.status_code == 422


def test_filters_stay_in_the_pager_links(client, app):
    j = sj(client, POOLED, "detector", sort="density")
    assert j["n_pages"] >= 2
    html = client.get(f"/sae/{POOLED}/search", params={"q": "detector", "sort": "density"}).text
    assert f'href="/sae/{POOLED}/search?q=detector&amp;sort=density&amp;page=2"' in html
    assert '<option selected>density</option>' in html
