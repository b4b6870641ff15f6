"""`saescope publish`: a static site from the fixture index, checked against the served app."""

from __future__ import annotations

import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import duckdb
import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "app"))

from make_fixture_index import IMG_DS, LABELS, N_FEATURES, PATCH, POOLED, TEXT, build_fixture_index  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from precompute.cli import main  # noqa: E402
from precompute.publish import PublishConfig, publish  # noqa: E402
from precompute.publish_cli import parse_feature_list  # noqa: E402
from precompute.publish_hub import parse_target, plan_upload, upload  # noqa: E402
from precompute.publish_site import MANIFEST_NAME  # noqa: E402
from sae_core.errors import ConfigError  # noqa: E402

ABS_ATTR_RE = re.compile(r'\s(?:href|src|action|data-[\w-]+)="/(?!/)')


@pytest.fixture(scope="module")
def index_path(tmp_path_factory) -> Path:
    return build_fixture_index(tmp_path_factory.mktemp("pub-index"))


@pytest.fixture(scope="module")
def site(index_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pub") / "site"
    publish(PublishConfig(index=index_path, out=out, workers=1, game_rounds=3))
    return out


@pytest.fixture(scope="module")
def client(index_path):
    app = create_app(Settings(index=index_path, secret="s"))
    with TestClient(app, follow_redirects=False) as c:
        yield c


class Page(HTMLParser):
    """Visible text and link targets, in document order (the static head block excluded)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.base: str | None = None
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "base":
            self.base = a["href"]
        elif tag in ("script", "style"):
            self._skip += 1
        for k in ("href", "src", "action"):
            if a.get(k) and not a[k].startswith("data:") and not (tag == "base" or (tag == "script" and "publish-search" in a[k])):
                self.links.append(a[k])

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(data.strip())


def served_as_static(url: str) -> str:
    """Where a served absolute link lands in the site: folder form for pages, static files pooled."""
    path, _, query = url.partition("?")
    if re.match(r"/static/[0-9a-f]{12}/", path):
        return "static/*/" + path.split("/", 3)[3]
    last = path.rsplit("/", 1)[-1]
    if path != "/" and "." not in last:
        path += "/"
    return path.lstrip("/") + ("?" + query if query else "")


def resolved(site_url: str, page_dir: str, base: str, href: str) -> str:
    base_abs = urljoin(site_url + page_dir, base)
    out = urljoin(base_abs, href)
    assert out.startswith(site_url), f"{href} leaves the site"
    out = out[len(site_url):]
    return re.sub(r"^static/[0-9a-f]{12}/", "static/*/", out)


@pytest.mark.parametrize("url", ["/", f"/sae/{POOLED}", f"/sae/{POOLED}/dashboard", f"/sae/{POOLED}/feature/5",
                                 f"/sae/{PATCH}/feature/12", f"/sae/{PATCH}/sample/7", f"/sae/{TEXT}/feature/1",
                                 f"/sae/{POOLED}/features"])
def test_published_page_carries_the_served_content(site, client, url):
    served = Page(client.get(url).text)
    rel = url.strip("/")
    published = Page((site / rel / "index.html" if rel else site / "index.html").read_text())
    assert published.text == served.text
    site_url = "http://host/deep/base/"
    page_dir = rel + "/" if rel else ""
    got = [resolved(site_url, page_dir, published.base, h) for h in published.links]
    assert got == [served_as_static(h) for h in served.links]


def test_pages_load_from_the_trailing_slash_and_bare_forms(site):
    html = (site / f"sae/{POOLED}/feature/3/index.html").read_text()
    assert f'<meta name="saescope-static" content="sae/{POOLED}/feature/3/">' in html
    assert '<base href="../../../../">' in html
    assert "document.querySelector('base').href='../../../'" in html  # served at .../feature/3 (no slash)


def test_no_url_leaves_the_site(site):
    for fpath in site.rglob("*.html"):
        assert not ABS_ATTR_RE.search(fpath.read_text()), fpath
    for fpath in site.rglob("*.json"):
        text = fpath.read_text()
        assert not re.search(r'"\w*(url|_bin)":"/', text), fpath
    for fpath in (site / "static").rglob("*.js"):
        assert not re.search(r"""[`'"]/(sae|thumb|static)/""", fpath.read_text()), fpath


def test_json_twins_are_the_served_ones_with_site_relative_urls(site, client):
    for url in [f"/sae/{POOLED}/feature/5.json", f"/sae/{PATCH}/sample/7.json", f"/sae/{POOLED}/feature/5/card.json",
                f"/sae/{PATCH}/feature/12/card.json", f"/sae/{PATCH}/feature/12.json",
                "/index.json", f"/sae/{POOLED}.json"]:
        served = client.get(url).text
        want = re.sub(r'"(\w*url|features_bin|samples_bin)":"/([^"]*)"', lambda m: f'"{m.group(1)}":"{served_as_static("/" + m.group(2)) or "./"}"', served)
        assert json.loads((site / url.lstrip("/")).read_text()) == json.loads(want)


def test_binary_points_and_thumbnails_are_the_served_bytes(site, client):
    for url in [f"/sae/{PATCH}/points/features.bin", f"/sae/{PATCH}/points/samples.bin",
                f"/sae/{PATCH}/feature/12/activations.bin", f"/sae/{PATCH}/features.csv"]:
        assert (site / url.lstrip("/")).read_bytes() == client.get(url).content
    thumbs = sorted((site / "thumb" / IMG_DS).iterdir())
    assert len(thumbs) == 40  # every sample is some page's tile
    assert thumbs[0].read_bytes() == client.get(f"/thumb/{IMG_DS}/{thumbs[0].name}").content
    assert not (site / "thumb" / "words-0123456789ab").exists()  # text samples have no images


def test_every_feature_and_sample_page_is_written(site, client):
    for sae, n in ((POOLED, N_FEATURES), (PATCH, N_FEATURES), (TEXT, 16)):
        feats = sorted(int(p.name) for p in (site / "sae" / sae / "feature").iterdir() if p.name.isdigit())
        assert feats == list(range(n))
        assert all((site / "sae" / sae / "feature" / f"{f}.json").is_file() for f in feats)
    samples = {int(p.name) for p in (site / "sae" / POOLED / "sample").iterdir() if p.name.isdigit()}
    assert samples == set(range(40))


def test_search_index_knows_each_features_circle_samples(site, index_path):
    """Hidden truth: labels are LABELS[(i // 4) % 4], so which top ranks hold 'circle' is known
    without the index's tokeniser; names are '<top label> detector <id>'."""
    shard = json.loads((site / f"sae/{POOLED}/search/words-c.json").read_text())
    flat = shard["circle"]
    rows = [flat[i:i + 6] for i in range(0, len(flat), 6)]
    got_ranks = {r[0]: (r[3] << 32) | r[4] for r in rows if r[3] or r[4]}
    got_named = {r[0] for r in rows if r[1] > 0}
    con = duckdb.connect(str(index_path), read_only=True)
    want_ranks: dict[int, int] = {}
    for fid, rank, sid in con.execute("SELECT feature_id, rank, sample_id FROM feature_top WHERE sae_id = ?",
                                      [POOLED]).fetchall():
        if LABELS[(sid // 4) % 4] == "circle":
            want_ranks[fid] = want_ranks.get(fid, 0) | (1 << rank)
    named = {f for f, n in con.execute("SELECT feature_id, name FROM features WHERE sae_id = ?", [POOLED]).fetchall()
             if n and n.startswith("circle detector")}
    con.close()
    assert got_ranks == want_ranks and got_named == named and named
    assert "circles" not in shard  # plurals are folded to the singular the query is folded to
    idx = json.loads((site / f"sae/{POOLED}/search/features.json").read_text())
    assert idx["ids"] == list(range(N_FEATURES)) and idx["names"][5] == "evil <script>alert(1)</script> feature"
    served = client_titles(index_path)  # the browser titles features as the server does ('maybe ...')
    assert idx["titles"] == [served[f] for f in idx["ids"]]


def client_titles(index_path) -> dict[int, str]:
    """Feature id -> the title the served feature list gives it."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(index=index_path, secret="test-secret"))) as client:
        rows = client.get(f"/sae/{POOLED}/features.json", params={"limit": 500}).json()["data"]
    return {r["feature_id"]: r["title"] for r in rows}


def test_table_columns_are_the_index_values(site, index_path):
    """table.json: parallel to features.json's ids, each column the index's value (10 digits), labels by index."""
    idx = json.loads((site / f"sae/{POOLED}/search/features.json").read_text())
    tab = json.loads((site / f"sae/{POOLED}/search/table.json").read_text())
    cols = tab["columns"]
    con = duckdb.connect(str(index_path), read_only=True)
    rows = con.execute("SELECT feature_id, density, max_act, name_score, label_entropy, n_fired, cluster_id, top_label "
                       "FROM features WHERE sae_id = ? ORDER BY feature_id", [POOLED]).fetchall()
    con.close()
    assert idx["ids"] == [r[0] for r in rows]
    assert sorted(tab["labels"]) == tab["labels"] == sorted({r[7] for r in rows if r[7]})
    for i, (_fid, dens, mx, ns, ent, nf, cl, lab) in enumerate(rows):
        assert cols["density"][i] == pytest.approx(dens, rel=1e-9) and cols["max_act"][i] == pytest.approx(mx, rel=1e-9)
        assert cols["name_score"][i] == pytest.approx(ns, rel=1e-9)
        assert (cols["label_entropy"][i] is None) == (ent is None)
        assert cols["n_fired"][i] == nf and cols["cluster_id"][i] == cl
        assert (tab["labels"][cols["top_label"][i]] if cols["top_label"][i] >= 0 else None) == lab


def test_404_page_finds_the_site_root(site, index_path, tmp_path):
    html = (site / "404.html").read_text()
    assert "404 · Not found" in html and not ABS_ATTR_RE.search(html) and 'rel="alternate"' not in html
    probe = re.search(r"d\+'(static/[0-9a-f]{12}/app\.css)'", html).group(1)
    assert (site / probe).is_file()  # what the walk up looks for is in the site root
    out = tmp_path / "abs"
    publish(PublishConfig(index=index_path, out=out, saes=(TEXT,), game_rounds=0, workers=1,
                          base_url="https://me.github.io/explorer"))
    html = (out / "404.html").read_text()
    assert '<base href="https://me.github.io/explorer/">' in html and "XMLHttpRequest" not in html


def test_game_rounds_and_their_answers(site):
    game = site / f"sae/{POOLED}/game"
    assert json.loads((game / "pool.json").read_text()) == {"n_rounds": 3}
    for i in range(3):
        html = (game / "round" / str(i) / "index.html").read_text()
        assert f'name="token" value="r{i}"' in html and 'action="sae/pooled-img/game/answer/"' in html
        picks = re.findall(r'data-sample="(\d+)"', html)
        results = [re.search(r'data-game-result="(\w+)"', (game / "answer" / f"r{i}" / p / "index.html").read_text())[1]
                   for p in picks]
        assert sorted(results) == ["right"] + ["wrong"] * (len(picks) - 1)


def test_republishing_rewrites_nothing(index_path, tmp_path):
    """Back to back (peers edit the app in this checkout): everything rendered again, nothing written."""
    out = tmp_path / "site"
    first = publish(PublishConfig(index=index_path, out=out, saes=(PATCH,), workers=1, game_rounds=2))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    assert len(mtimes) == first.n_files > 200
    # in worker processes this time, with an option that changes no page: rendered, compared, kept
    again = publish(PublishConfig(index=index_path, out=out, saes=(PATCH,), workers=2, game_rounds=2, size_limit=10**12))
    assert not again.skipped and again.written == [] and again.removed == [] and again.n_files == first.n_files
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_unchanged_inputs_skip_rendering(index_path, tmp_path, monkeypatch):
    """Same index, options and code (the key, fixed here: peers edit the app while tests run): no rendering."""
    import precompute.publish as pub

    monkeypatch.setattr(pub, "inputs_key", lambda cfg, static: "same")
    cfg = PublishConfig(index=index_path, out=tmp_path / "s", saes=(TEXT,), workers=1, game_rounds=0)
    first = publish(cfg)
    monkeypatch.setattr(pub, "Renderer", None)  # rendering now would fail
    again = publish(cfg)
    assert again.skipped and again.written == [] and again.n_files == first.n_files > 50
    (tmp_path / "s" / "index.html").unlink()  # a file gone: render again, write just that one
    monkeypatch.undo()
    monkeypatch.setattr(pub, "inputs_key", lambda cfg, static: "same")
    assert publish(cfg).written == ["index.html"]


def test_changed_index_rewrites_what_changed(index_path, tmp_path):
    idx = tmp_path / "idx" / "fixture.duckdb"
    shutil.copytree(index_path.parent, idx.parent)
    out = tmp_path / "site"
    cfg = PublishConfig(index=idx, out=out, saes=(POOLED,), workers=1, game_rounds=0)
    publish(cfg)
    con = duckdb.connect(str(idx))
    # rename feature 20 where the explorer reads names: its row and the page documents that show it
    con.execute("UPDATE features SET name = replace(name, 'detector 20', 'zebra crossing 20') "
                "WHERE sae_id = ? AND feature_id = 20", [POOLED])
    con.execute("UPDATE feature_page SET page = replace(page, 'detector 20\"', 'zebra crossing 20\"') WHERE sae_id = ?",
                [POOLED])
    con.close()
    res = publish(cfg)
    w = set(res.written)
    f = f"sae/{POOLED}/feature/"
    assert {f + "20/index.html", f + "20.json", f + "20/card.json", f"sae/{POOLED}/search/features.json"} <= w
    assert f + "15/index.html" in w  # 20 is among 15's neighbours, shown by name
    assert f + "40/index.html" not in w and f + "40.json" not in w
    assert len(w) < 0.3 * res.n_files


def test_options_bound_the_site(index_path, tmp_path):
    out = tmp_path / "small"
    (out).mkdir()
    res = publish(PublishConfig(index=index_path, out=out, saes=(PATCH,), features=tuple(range(10)), top_samples=2,
                                thumb_size=16, game_rounds=0, workers=1, size_limit=1000))
    assert sorted(p.name for p in (out / "sae").iterdir()) == [PATCH, f"{PATCH}.json"]
    assert sorted(int(p.name) for p in (out / "sae" / PATCH / "feature").iterdir() if p.name.isdigit()) == list(range(10))
    assert len(json.loads((out / f"sae/{PATCH}/feature/3.json").read_text())["top"]) == 2
    from PIL import Image

    assert max(Image.open(next((out / "thumb" / IMG_DS).iterdir())).size) <= 16
    assert any("above 1.0 KB" in w and "GitHub Pages" in w for w in res.warnings)
    (out / "CNAME").write_text("me.example.org")
    res = publish(PublishConfig(index=index_path, out=out, saes=(PATCH,), features=(1, 2), game_rounds=0, workers=1))
    assert f"sae/{PATCH}/feature/9/index.html" in res.removed and not (out / f"sae/{PATCH}/feature/9").exists()
    assert (out / "CNAME").read_text() == "me.example.org"  # never ours: left alone


def test_live_pages_say_they_need_a_server(index_path):
    from precompute.publish_pages import PageSet, sae_pages
    from precompute.publish_render import Renderer

    r = Renderer(index_path, "s")
    r.app.add_api_route("/sae/{sae_id}/inspect", lambda sae_id: {"live": sae_id})
    try:
        assert r.live_routes() == ["inspect"]
        ps = PageSet(r, "static/x/", None)
        sae_pages(ps, POOLED, 0, "demo.duckdb")
    finally:
        r.close()
    html = ps.files[f"sae/{POOLED}/inspect/index.html"].decode()
    assert "needs a running saescope" in html and "saescope serve demo.duckdb" in html
    assert f"http://127.0.0.1:8000/sae/{POOLED}/inspect" in html


def test_hub_upload_plan_is_built_offline(site, tmp_path, monkeypatch):
    t = parse_target("hf://spaces/me/explorer")
    assert (t.repo_type, t.repo_id) == ("space", "me/explorer")
    plan = plan_upload(site, t)
    assert "index.html" in plan.files and MANIFEST_NAME in plan.files and "sdk: static" in plan.card
    assert plan_upload(site, parse_target("hf://datasets/me/x")).card is None
    for bad in ("hf://models/me/x", "s3://b/x", "hf://spaces/me"):
        with pytest.raises(ConfigError, match="expected hf://spaces"):
            parse_target(bad)
    with pytest.raises(ConfigError, match="no published site"):
        plan_upload(tmp_path, t)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        upload(site, t)


def test_feature_lists():
    assert parse_feature_list("3, 1,7-9") == (1, 3, 7, 8, 9)
    for bad in ("x", "9-7", ""):
        with pytest.raises(ConfigError, match="--features"):
            parse_feature_list(bad)


def test_cli_publish_and_its_errors(index_path, tmp_path, capsys):
    out = tmp_path / "cli-site"
    assert main(["publish", str(index_path), str(out), "--sae", TEXT, "--game-rounds", "2", "--workers", "1"]) == 0
    line = capsys.readouterr().out
    assert re.search(r"site .*cli-site: [\d,]+ files, [\d.]+ [KM]B \([\d,]+ files written, 0 removed\)", line)
    assert main(["publish", str(index_path), str(out), "--sae", TEXT, "--game-rounds", "2"]) == 0
    assert "(unchanged)" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    for argv, msg in [([str(tmp_path / "none.duckdb"), str(tmp_path / "s2")], "no such index"),
                      ([str(index_path), str(tmp_path / "other")], "holds no saescope site"),
                      ([str(index_path), str(tmp_path / "s3"), "--sae", "nope"], "not in the index"),
                      ([str(index_path), str(tmp_path / "s4"), "--features", "a-b"], "not a feature id"),
                      ([str(index_path), str(tmp_path / "s5"), "--to", "hf://nowhere"], "expected hf://")]:
        assert main(["publish", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
