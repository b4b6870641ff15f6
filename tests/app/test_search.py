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

def words(text: str | None) -> list[str]:
    return re.findall(r"\w+", (text or "").lower())


def reference(index_path, sae: str, dataset: str, terms: list[str]) -> tuple[list[tuple], int]:
    """[(feature_id, score, matches)] in rank order, and how many match every term."""
    con = duckdb.connect(str(index_path), read_only=True)
    names = dict(con.execute("SELECT feature_id, name FROM features WHERE sae_id = ?", [sae]).fetchall())
    texts = {sid: words(c) + words(lab) for sid, c, lab in con.execute(
        "SELECT sample_id, caption, label FROM samples WHERE dataset_id = ?", [dataset]).fetchall()}
    top: dict[int, list[int]] = {}
    for fid, sid in con.execute("SELECT feature_id, sample_id FROM feature_top WHERE sae_id = ?", [sae]).fetchall():
        top.setdefault(fid, []).append(sid)
    con.close()
    vocab = {w for ws in texts.values() for w in ws} | {w for n in names.values() for w in words(n)}
    whole = {t: any(w in (t, t + "s", t + "es") for w in vocab) for t in terms}

    def hit(ws: list[str], t: str) -> bool:
        return any(w in (t, t + "s", t + "es") if whole[t] else w.startswith(t) for w in ws)

    rows = []
    for fid, name in names.items():
        per_term = [(hit(words(name), t), sum(hit(texts[s], t) for s in top.get(fid, []))) for t in terms]
        n_terms = sum(1 for n, h in per_term if n or h)
        if n_terms:
            score = sum(10 * n + h for n, h in per_term)
            matches = sum(any(hit(texts[s], t) for t in terms) for s in top.get(fid, []))
            rows.append((n_terms, score, fid, matches))
    rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return [(fid, score, m) for _, score, fid, m in rows], sum(r[0] == len(terms) for r in rows)


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
    assert [(h["feature_id"], h["score"], h["matches"]) for h in hits] == want
    named = [h for h in hits if h["name"] and "triangle" in h["name"]]
    assert named and hits[:len(named)] == named  # a name hit (10) beats any caption-only feature here
    assert all(h["score"] >= 10 for h in named)


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
    assert [(h["feature_id"], h["score"], h["matches"]) for h in hits] == want
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
        assert [(h["feature_id"], h["score"], h["matches"]) for h in all_hits(client, TEXT, q)] == want


# --- car, cars, card: an index whose names hold those words -----------------------------------

CAR_NAMES = {10: "car, vehicle", 11: "cars, road", 12: "file, office, card", 13: "sidecar, motorbike",
             14: "carpet, rug", 15: "Car’s wheel"}


@pytest.fixture(scope="module")
def car_client(index_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("cars") / "cars.duckdb"
    shutil.copy(index_path, path)
    con = duckdb.connect(str(path))
    for fid, name in {**CAR_NAMES, 16: "eine Straße in Köln", 17: "İstanbul ferry"}.items():
        con.execute("UPDATE features SET name = ? WHERE sae_id = ? AND feature_id = ?", [name, POOLED, fid])
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
    assert ids(j["data"]) == [10, 11, 15] and all(h["score"] == 10 for h in j["data"])
    assert ids(sj(car_client, POOLED, "card")["data"]) == [12]
    assert ids(sj(car_client, POOLED, "cars")["data"]) == [11]
    assert ids(sj(car_client, POOLED, "carp")["data"]) == [14]  # no whole word 'carp': prefix of 'carpet'
    assert ids(sj(car_client, POOLED, "sidecar")["data"]) == [13]
    html = car_client.get(f"/sae/{POOLED}/search", params={"q": "car"}).text
    assert "card" not in html and "sidecar" not in html and "3 features match" in html


def test_car_with_a_caption_word(car_client):
    """'car red': car features with a red top sample come first; card/sidecar/carpet only on 'red'."""
    hits = all_hits(car_client, POOLED, "car red")
    both = {h["feature_id"] for h in hits if h["feature_id"] in (10, 11, 15) and h["matches"] > 0}
    assert both and set(ids(hits[:len(both)])) == both
    assert all(h["score"] == h["matches"] for h in hits if h["feature_id"] in (12, 13, 14))


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
