"""The feature table: server-side sort, filters and pages equal the same query done by hand on the
fixture index; CSV has every matching row; selections of any size travel as ranges."""

from __future__ import annotations

import csv
import io

import duckdb
import pytest
from make_fixture_index import N_FEATURES, POOLED


def _features(index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    cols = ["feature_id", "name", "name_score", "density", "n_fired", "max_act", "label_entropy", "top_label", "cluster_id"]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM features WHERE sae_id = ?", [POOLED]).fetchall()
    return [dict(zip(cols, r)) for r in rows]


def test_sort_and_pages_cover_every_feature_once_in_order(client, index_path):
    feats = _features(index_path)
    want = [f["feature_id"] for f in sorted(feats, key=lambda f: (-f["max_act"], f["feature_id"]))]
    got, url = [], f"/sae/{POOLED}/features.json?sort=max_act&order=desc&limit=25"
    while url:
        j = client.get(url).json()
        assert j["count"] == N_FEATURES
        got += [f["feature_id"] for f in j["data"]]
        url = j["next_url"] and j["next_url"].replace("/features?", "/features.json?")
    assert got == want


def test_filters_match_a_hand_query(client, index_path):
    feats = _features(index_path)
    label = next(f["top_label"] for f in feats if f["top_label"])
    want = sorted((f for f in feats if f["top_label"] == label and f["density"] >= 0.3 and f["cluster_id"] == 1),
                  key=lambda f: (f["density"], f["feature_id"]))
    j = client.get(f"/sae/{POOLED}/features.json", params={"label": label, "min_density": 0.3, "cluster": 1,
                                                          "sort": "density"}).json()
    assert [f["feature_id"] for f in j["data"]] == [f["feature_id"] for f in want] and j["count"] == len(want)
    assert j["state"]["label"] == label and "label=" in j["query"] and "cluster=1" in j["query"]


def test_large_selections_travel_as_ranges_and_none_is_dropped(client):
    ids = ",".join(f"{i}-{i}" if i % 2 else str(i) for i in range(0, N_FEATURES, 2)) + ",40-63"
    want = sorted(set(range(0, N_FEATURES, 2)) | set(range(40, 64)))
    j = client.get(f"/sae/{POOLED}/features.json", params={"ids": ids, "limit": 500}).json()
    assert [f["feature_id"] for f in j["data"]] == want and j["count"] == len(want)
    html = client.get(f"/sae/{POOLED}/features", params={"ids": ids, "limit": 10}).text
    assert f'data-count="{len(want)}"' in html and "in the selection" in html
    r = client.get(f"/sae/{POOLED}/features.json", params={"ids": ",".join(str(i) for i in range(0, 4400, 2))})
    assert r.status_code == 422 and "at most 2000" in r.json()["message"]  # refused with a reason, never cut


def test_csv_export_has_all_matching_rows(client, index_path):
    r = client.get(f"/sae/{POOLED}/features.csv", params={"sort": "name_score", "order": "desc", "limit": 5})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == N_FEATURES  # the page size does not cut an export
    scores = [float(x["name_score"]) for x in rows]
    assert scores == sorted(scores, reverse=True)
    feats = {f["feature_id"]: f for f in _features(index_path)}
    assert all(float(x["density"]) == pytest.approx(feats[int(x["feature_id"])]["density"]) for x in rows)


def test_html_table_links_sort_and_refuses_bad_columns(client):
    html = client.get(f"/sae/{POOLED}/features", params={"sort": "density", "order": "asc"}).text
    assert 'aria-sort="ascending"' in html and "sort=density&amp;order=desc" in html
    assert html.count("<tr data-feature=") == min(100, N_FEATURES)
    r = client.get(f"/sae/{POOLED}/features.json", params={"sort": "evil; DROP"})
    assert r.status_code == 422 and "sort" in r.json()["message"]
    r = client.get(f"/sae/{POOLED}/features.json", params={"ids": "1," * 7000})
    assert r.status_code == 422 and "12000 characters" in r.json()["message"]


def test_csv_cells_never_run_as_spreadsheet_formulas():
    from app.views.feature_table import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("@x") == "'@x" and _cell("cat") == "cat"
    assert _cell(None) == "" and _cell(-1.5) == -1.5  # numbers stay numbers


def test_blank_number_fields_of_the_filter_form_mean_no_bound(client):
    """The table's filter form submits empty fields as `min_density=`; that is no filter, not a 422,
    while a real bad number is still refused."""
    plain = client.get(f"/sae/{POOLED}/features.json", params={"limit": 500}).json()
    blank = client.get(f"/sae/{POOLED}/features.json",
                       params={"limit": 500, "min_density": "", "max_density": " ", "cluster": ""})
    assert blank.status_code == 200
    assert [r["feature_id"] for r in blank.json()["data"]] == [r["feature_id"] for r in plain["data"]]
    assert client.get(f"/sae/{POOLED}/features", params={"min_density": ""}).status_code == 200
    assert client.get(f"/sae/{POOLED}/features.json", params={"min_density": "x"}).status_code == 422
    assert client.get(f"/sae/{POOLED}/features.json", params={"max_density": "2"}).status_code == 422
