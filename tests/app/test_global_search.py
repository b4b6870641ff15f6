"""Search across every SAE: groups agree with each SAE's own search, arch and model pick the SAEs
(checked against the fixture's saes table, read independently), and bad filters are one-line errors."""

from __future__ import annotations

import re

import duckdb
import pytest
from make_fixture_index import N_FEATURES, PATCH, POOLED, TEXT

from app import urls
from app.views.global_search import PER_SAE


def gj(client, **params):
    r = client.get("/search.json", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def saes_table(index_path) -> list[dict]:
    with duckdb.connect(str(index_path), read_only=True) as con:
        rows = con.execute("SELECT sae_id, arch, model FROM saes").fetchall()
    return [{"sae_id": s, "arch": a, "model": m} for s, a, m in rows]


def group_ids(view: dict) -> list[str]:
    return [g["sae"]["sae_id"] for g in view["groups"]]


def test_each_group_is_its_saes_own_first_results(client):
    view = gj(client, q="detector")
    assert sorted(group_ids(view)) == sorted([POOLED, PATCH, TEXT])  # every fixture feature name says "detector"
    for g in view["groups"]:
        own = client.get(f"/sae/{g['sae']['sae_id']}/search.json", params={"q": "detector"}).json()
        assert g["count"] == own["count"] and g["n_all"] == own["n_all"]
        assert [h["feature_id"] for h in g["data"]] == [h["feature_id"] for h in own["data"][:PER_SAE]]
        assert [h["score"] for h in g["data"]] == [h["score"] for h in own["data"][:PER_SAE]]
        assert g["more_url"] == urls.search_url(g["sae"]["sae_id"], "detector")
    assert view["count"] == sum(g["count"] for g in view["groups"])
    assert view["n_saes"] == view["n_saes_all"] == 3


def test_arch_filter_keeps_exactly_the_saes_of_that_arch(client, index_path):
    table = saes_table(index_path)
    assert {s["arch"] for s in table} == {"topk", "relu"}
    for arch in ("topk", "relu"):
        view = gj(client, q="detector", arch=arch)
        want = sorted(s["sae_id"] for s in table if s["arch"] == arch)
        assert sorted(group_ids(view)) == want and view["n_saes"] == len(want)
        assert all(g["sae"]["arch"] == arch for g in view["groups"])
        assert view["filters"] == {"arch": arch}
    assert PATCH not in group_ids(gj(client, q="detector", arch="topk"))  # relu SAE excluded
    assert gj(client, q="detector")["archs"] == ["relu", "topk"]


def test_model_filter_and_words_only_one_sae_holds(client, index_path):
    table = saes_table(index_path)
    view = gj(client, q="detector", model="minilm")
    assert group_ids(view) == [s["sae_id"] for s in table if s["model"] == "minilm"] == [TEXT]
    assert group_ids(gj(client, q="apple")) == [TEXT]  # only the text dataset has apples
    assert gj(client, q="apple", arch="relu")["groups"] == []
    both = gj(client, q="detector", arch="topk", model="efficientnet-lite0")
    assert group_ids(both) == [POOLED]


def test_density_label_and_sort_apply_within_each_group(client, index_path):
    view = gj(client, q="circle", max_density=0.5, sort="density", label="circle")
    assert view["filters"] == {"max_density": 0.5, "label": "circle", "sort": "density"}
    with duckdb.connect(str(index_path), read_only=True) as con:
        for g in view["groups"]:
            sid = g["sae"]["sae_id"]
            dens = [h["density"] for h in g["data"]]
            assert dens == sorted(dens, reverse=True) and all(d <= 0.5 for d in dens)
            assert all(h["top_label"] == "circle" for h in g["data"])
            want = con.execute("SELECT count(*) FROM features WHERE sae_id = ? AND density <= 0.5 AND top_label = 'circle' "
                               "AND feature_id IN (SELECT feature_id FROM search_terms WHERE sae_id = ? AND term = 'circle')",
                               [sid, sid]).fetchone()[0]
            assert g["count"] == want
    assert group_ids(view) and TEXT not in group_ids(view)


def test_a_feature_id_lists_that_feature_in_each_sae_that_has_it(client):
    view = gj(client, q="#12")
    assert sorted(group_ids(view)) == sorted([POOLED, PATCH, TEXT])
    assert all([h["feature_id"] for h in g["data"]] == [12] for g in view["groups"])
    assert view["n_terms"] == 0
    past_text = gj(client, q=str(N_FEATURES - 2))  # the text SAE has 16 features
    assert sorted(group_ids(past_text)) == sorted([POOLED, PATCH])


@pytest.mark.parametrize("params, names", [
    ({"arch": "gated"}, "arch: no SAE in this index has arch 'gated'; choose one of: relu, topk"),
    ({"model": "resnet"}, "model: no SAE in this index has model 'resnet'"),
])
def test_a_filter_no_sae_has_is_a_one_line_422(client, params, names):
    r = client.get("/search.json", params={"q": "circle", **params})
    assert r.status_code == 422 and r.json()["message"].startswith(names) and "\n" not in r.json()["message"]
    page = client.get("/search", params={"q": "circle", **params})
    assert page.status_code == 422
    msg = re.search(r'<p class="error-message" role="alert">([^<]*)</p>', page.text)
    assert msg and msg.group(1).startswith(names.replace("'", "&#39;"))
    assert 'name="arch"' in page.text and "<option>relu</option>" in page.text  # the form stays, with its choices


@pytest.mark.parametrize("params, field", [({"sort": "loudest"}, "sort"), ({"min_density": "2"}, "min_density"),
                                           ({"max_density": "abc"}, "max_density"), ({"arch": "x" * 101}, "arch")])
def test_bad_filter_values_are_one_line_errors(client, params, field):
    r = client.get("/search.json", params={"q": "circle", **params})
    assert r.status_code == 422 and r.json()["message"].startswith(f"{field}:")
    page = client.get("/search", params={"q": "circle", **params})
    assert page.status_code == 422 and "Traceback" not in page.text
    msg = re.search(r'<p class="error-message">([^<]*)</p>', page.text)
    assert msg and msg.group(1).startswith(f"{field}:") and "\n" not in msg.group(1)


def test_page_groups_results_by_sae_with_filters_in_the_url(client):
    html = client.get("/search", params={"q": "detector", "arch": "topk", "sort": "id"}).text
    sections = re.findall(r'<section class="search-group" data-sae="([^"]+)"', html)
    assert sorted(sections) == sorted([POOLED, TEXT])
    assert '<option selected>topk</option>' in html and "<option selected>id</option>" in html
    more = urls.search_url(POOLED, "detector", 1, {"sort": "id"}).replace("&", "&amp;")
    assert f'href="{more}"' in html  # the group's link keeps the sort
    ids = [int(i) for i in re.findall(r'<li data-feature="(\d+)"', html.split(f'data-sae="{POOLED}"')[1].split("</section>")[0])]
    assert ids == sorted(ids) and len(ids) == PER_SAE


def test_home_search_box_and_openapi(client):
    home = client.get("/").text
    assert f'action="{urls.url("global_search")}"' in home
    paths = client.get("/openapi.json").json()["paths"]
    assert "/search.json" in paths and "/search" in paths
    names = {p["name"] for p in paths["/search.json"]["get"]["parameters"]}
    assert {"q", "arch", "model", "min_density", "max_density", "label", "sort"} <= names
    assert "cluster" not in names  # cluster ids are per SAE
    assert urls.global_search_url("red car", {"arch": "topk"}) == "/search?q=red+car&arch=topk"


def test_a_submitted_form_with_blank_fields_means_no_filter(client):
    """Browsers send every field of the filter form, blanks as `x=`: that is no bound, not a bad number."""
    blank = {"model": "", "min_density": "", "max_density": "", "label": "", "sort": "relevance"}
    view = gj(client, q="detector", arch="relu", **blank)
    assert group_ids(view) == [PATCH] and view["filters"] == {"arch": "relu"}
    r = client.get(f"/sae/{PATCH}/search.json", params={"q": "detector", "cluster": " ", **blank})
    assert r.status_code == 200 and r.json()["count"] == gj(client, q="detector", arch="relu")["groups"][0]["count"]
    assert client.get(f"/sae/{PATCH}/search.json", params={"q": "detector", "cluster": "-2"}).status_code == 422


def test_an_sae_search_links_to_the_same_words_in_every_sae(client):
    html = client.get(f"/sae/{POOLED}/search", params={"q": "red car"}).text
    assert f'href="{urls.global_search_url("red car")}"' in html
