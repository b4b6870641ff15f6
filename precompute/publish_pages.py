"""Site-wide pages of a published site: home, maps, dashboards, search, game pool, live-only pages.

What the server decides per request becomes a file or a few lines of browser code
(static/publish-search.js): the search page and the random feature are shells the browser fills;
the game is a pool of rounds rendered by the app with fixed seeds, whose answers are pages too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from precompute.publish_render import Renderer
from precompute.publish_rewrite import page_file, rewrite_html, rewrite_json, rewrite_not_found, site_path

TOKEN_RE = re.compile(r'name="token" value="([^"]+)"')
PICK_RE = re.compile(r'data-sample="(\d+)"')


class PageSet:
    """Rewritten files keyed by site path; HTML pages by URL path."""

    def __init__(self, r: Renderer, static_prefix: str, base_url: str | None) -> None:
        self.r, self.static_prefix, self.base_url = r, static_prefix, base_url
        self.files: dict[str, bytes] = {}

    def html(self, url_path: str, body: bytes) -> None:
        self.files[page_file(url_path)] = rewrite_html(body.decode(), url_path, self.static_prefix,
                                                       self.base_url).encode()

    def json(self, url_path: str, body: bytes) -> None:
        self.files[site_path(url_path)] = rewrite_json(body.decode()).encode()

    def raw(self, url_path: str, body: bytes) -> None:
        self.files[site_path(url_path)] = body

    def served(self, url_path: str, kind: Callable[[str, bytes], None] | None = None) -> None:
        (kind or self.html)(url_path, self.r.get(url_path))


def home_pages(ps: PageSet) -> None:
    ps.served("/")
    ps.served("/index.json", ps.json)
    ps.served("/openapi.json", ps.raw)
    missing = ps.r.client.get("/404")  # the server's own "no page at this address", in the site's frame
    ps.files["404.html"] = rewrite_not_found(missing.text, ps.static_prefix, ps.base_url).encode()
    ps.html("/search", ps.r.message_page("/search", None, "Search all SAEs", (  # the home page's search box
        "Searching every SAE at once needs a running saescope (saescope serve); each SAE's own search "
        "works here: open an SAE, then use its search box.")))


def sae_pages(ps: PageSet, sae_id: str, n_rounds: int, index_name: str) -> None:
    """The map, its point columns, the dashboard, the search shell, random, the game, live pages."""
    base = f"/sae/{sae_id}"
    ctx = ps.r.sae(sae_id)
    ps.served(base)
    ps.served(base + ".json", ps.json)
    ps.served(base + "/dashboard")
    ps.served(base + "/dashboard.json", ps.json)
    ps.served(base + "/points/features.bin", ps.raw)
    ps.served(base + "/points/samples.bin", ps.raw)
    ps.served(base + "/search")
    ps.served(base + "/features")  # the table's first page; static/publish-table.js sorts, filters and pages it
    ps.served(base + "/features.csv", ps.raw)
    ps.html(base + "/feature/random", ps.r.message_page(
        base + "/feature/random", ctx, "Random feature", "Opening a random feature…"))
    if n_rounds:
        game_pages(ps, sae_id, n_rounds)
    for name in ps.r.live_routes():
        url = f"{base}/{name}"
        ps.html(url, ps.r.message_page(url, ctx, "needs a running saescope", (
            f"This page runs the model live, which a static site cannot do. Run `saescope serve {index_name}` "
            f"and open http://127.0.0.1:8000{url} there.")))


def game_pages(ps: PageSet, sae_id: str, n_rounds: int) -> None:
    """Rounds with seeds 0..n-1 and every answer to them; tokens become `r<round>` so output is stable.

    The pool is public (a static site keeps no secret): a curious player can read the answers.
    """
    base = f"/sae/{sae_id}/game"
    resp = ps.r.client.get(f"{base}?seed=0")
    if resp.status_code == 404:  # too few samples for a game: the server says so, and so does the site
        ps.html(base, resp.content)
        return
    rounds = []
    for i in range(n_rounds):
        html = ps.r.get(f"{base}?seed={i}").decode()
        token = TOKEN_RE.search(html).group(1)
        rounds.append((token, html))
        for pick in sorted(set(PICK_RE.findall(html))):
            answer = ps.r.get(f"{base}/answer?token={token}&pick={pick}").decode()
            ps.html(f"{base}/answer/r{i}/{pick}", answer.replace(token, f"r{i}").encode())
    for i, (token, html) in enumerate(rounds):
        ps.html(f"{base}/round/{i}", html.replace(token, f"r{i}").encode())
    ps.html(base, rounds[0][1].replace(rounds[0][0], "r0").encode())
    ps.html(base + "/answer", ps.r.message_page(base + "/answer", ps.r.sae(sae_id), "Guess the input",
                                                "Checking your answer…"))
    ps.files[site_path(base + "/pool.json")] = f'{{"n_rounds":{n_rounds}}}'.encode()
