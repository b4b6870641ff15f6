"""Pages rendered by the app's own code, so a published page carries what the server shows.

Site-wide pages (home, maps, dashboards, search, game) go through the real app in-process (Starlette's
TestClient). The many feature and sample pages call the same view functions and `app.render.page`
the routes call, with a request built in place: a request each through the ASGI stack costs ~5x
more, which at 65,536 features is the difference between minutes and half an hour.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from starlette.requests import Request

from app.main import create_app
from app.models import FeatureCard, FeatureView, SampleView
from app.render import page
from app.settings import Settings
from app.views.common import SaeCtx, get_sae
from app.views.features import N_CARD_THUMBS, feature_view
from app.views.samples import sample_view
from sae_core.errors import DataError

THUMB_RE = re.compile(r"thumb/([A-Za-z0-9][A-Za-z0-9._-]*)/(\d+)\.webp")


class Renderer:
    """One app over the index; cheap to make once per worker process."""

    def __init__(self, index: Path, secret: str) -> None:
        self.app = create_app(Settings(index=index, secret=secret))
        self.db = self.app.state.index

    @cached_property
    def client(self):
        from fastapi.testclient import TestClient

        return TestClient(self.app, follow_redirects=False)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
        self.db.close()

    def get(self, url: str) -> bytes:
        """A page or file as the server answers it; anything but 200 is a bug in what we ask for."""
        resp = self.client.get(url)
        if resp.status_code != 200:
            raise DataError(f"the explorer answered {url} with {resp.status_code}; the index may be damaged")
        return resp.content

    def sae(self, sae_id: str) -> SaeCtx:
        return get_sae(self.db, sae_id)

    def _request(self, path: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                        "query_string": b"", "headers": [], "app": self.app, "root_path": "",
                        "scheme": "http", "server": ("localhost", 80)})

    def feature(self, ctx: SaeCtx, fid: int, n_top: int | None) -> tuple[bytes, bytes, bytes]:
        """(HTML, JSON twin, hover card JSON) of one feature page, top samples cut to n_top."""
        return self.feature_files(ctx, feature_view(self.db, ctx, fid), n_top)

    def feature_files(self, ctx: SaeCtx, full: FeatureView, n_top: int | None) -> tuple[bytes, bytes, bytes]:
        """`feature` from a view already built (publish_batch builds a chunk's views together)."""
        view = full.model_copy(update={"top": full.top[:n_top]}) if n_top is not None else full
        url = f"/sae/{ctx.sae_id}/feature/{full.feature.feature_id}"
        html = page(self._request(url), "feature.html", view).body
        return html, view.model_dump_json().encode(), card_of(full).model_dump_json().encode()

    def activations(self, sae_id: str, fid: int) -> bytes:
        from app.views.feature_map import feature_activations

        return feature_activations(self.db, sae_id, fid)

    def n_map_samples(self, sae_id: str) -> int:
        return int(self.db.scalar("SELECT count(*) FROM sample_map WHERE sae_id = ?", [sae_id]))

    def sample(self, ctx: SaeCtx, sample_id: int) -> tuple[bytes, bytes]:
        return self.sample_files(ctx, sample_view(self.db, ctx, sample_id))

    def sample_files(self, ctx: SaeCtx, view: SampleView) -> tuple[bytes, bytes]:
        html = page(self._request(f"/sae/{ctx.sae_id}/sample/{view.sample.sample_id}"), "sample.html", view).body
        return html, view.model_dump_json().encode()

    def message_page(self, url_path: str, ctx: SaeCtx | None, title: str, message: str) -> bytes:
        """A page in the explorer's frame that says something instead of showing data."""
        templates = self.app.state.templates
        resp = templates.TemplateResponse(self._request(url_path), "error.html", {
            "status": "", "title": title, "message": message, "v": {"sae": ctx.summary if ctx else None}})
        return resp.body

    def feature_ids(self, sae_id: str, subset: list[int] | None) -> list[int]:
        ids = [int(r["feature_id"]) for r in self.db.all(
            "SELECT feature_id FROM features WHERE sae_id = ? ORDER BY feature_id", [sae_id])]
        if subset is None:
            return ids
        keep = set(subset)
        return [f for f in ids if f in keep]

    def sample_ids(self, sae_id: str) -> list[int]:
        """Samples a page or the dataset map can link to: those with recorded features or a map point."""
        return [int(r["sample_id"]) for r in self.db.all(
            "SELECT sample_id FROM sample_top WHERE sae_id = ? UNION SELECT sample_id FROM sample_map "
            "WHERE sae_id = ? ORDER BY sample_id", [sae_id, sae_id])]

    def sae_ids(self) -> list[str]:
        return [r["sae_id"] for r in self.db.all("SELECT sae_id FROM saes ORDER BY sae_id")]

    def live_routes(self) -> list[str]:
        """App pages under /sae/{sae_id}/ that need the model at run time (inspection, steering)."""
        known = {"", "dashboard", "search", "game", "features", "points", "feature", "sample"}
        out = []
        for route in self.app.routes:
            path = getattr(route, "path", "")
            m = re.fullmatch(r"/sae/\{sae_id\}/([a-z][a-z_-]*)", path)
            if m and m.group(1) not in known and "GET" in getattr(route, "methods", ()):
                out.append(m.group(1))
        return sorted(set(out))


def card_of(view: FeatureView) -> FeatureCard:
    """The hover card (app.views.features.feature_card) from the page's view: the same summary and
    first top samples, without heatmaps, and without a second lookup of the feature's page."""
    top = [t.model_copy(update={"heatmap": None}) for t in view.top[:N_CARD_THUMBS]]
    return FeatureCard.model_construct(**dict(view.feature), top=top)


def thumb_refs(text: str) -> set[tuple[str, int]]:
    """Thumbnails a rendered page or JSON file points at."""
    return {(ds, int(sid)) for ds, sid in THUMB_RE.findall(text)}
