"""Rendered responses kept per index, with ETags, so a repeated page costs no query and no render.

A route opts in with `cacheable(response)` when its body is a function of the index, the URL and
the code alone: feature pages, their JSON twins and cards, and search when no live worker is
configured (with one, results may add the worker's answers, which come and go). `CachedResponses`, a pure ASGI middleware, then:

- stores the 200 body under (path, query) in a bounded LRU that belongs to the Index being
  served: a replaced index (app.index_watch) brings a fresh, empty cache, and the old one is
  freed with the old Index, so nothing stale is ever served;
- answers a repeat straight from the event loop (no routing, thread hop, query or template);
- gives the response an ETag derived from the index file, the code, the settings and the URL, and answers a
  matching If-None-Match with 304 without doing any work: the tag is only ever sent on opted-in
  responses and names their URL, so a match proves the client holds the current body. Both
  workers of a server compute the same tags.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from pathlib import Path

from starlette.responses import Response

from app.db import Index

MARKER = b"x-saescope-cacheable"
"""Set by `cacheable`, removed by the middleware before the response leaves."""
MAX_BYTES = 32 << 20
"""Bodies kept per worker and index: ~700 feature pages (~45 KB) or ~1,500 JSON twins."""
MAX_ENTRY = 1 << 20
"""Larger bodies are served but not kept: a few would evict hundreds of pages."""
CODE_DPATHS = ("app", "templates", "static")
"""What a page's bytes depend on besides the index: a deploy of new code changes every ETag."""
ROOT = Path(__file__).resolve().parent.parent


def cacheable(response: Response) -> Response:
    """Mark a response whose body depends only on the index, the URL and the code."""
    response.headers[MARKER.decode()] = "1"
    return response


def code_digest(root: Path = ROOT) -> str:
    """Names, sizes and mtimes of the app's code, templates and static files (a stat per file, once per process)."""
    h = hashlib.sha256()
    for dname in CODE_DPATHS:
        for fpath in sorted((root / dname).rglob("*")):
            if fpath.is_file() and "__pycache__" not in fpath.parts:
                st = fpath.stat()
                h.update(f"{fpath.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class ResponseLru:
    """(path, query) -> (headers, body), least recently used first, bounded by body bytes.

    Only the event loop touches it (the middleware is async and never awaits mid-update): no lock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.n_bytes = max_bytes, 0
        self._items: OrderedDict[tuple[str, bytes], tuple[list[tuple[bytes, bytes]], bytes]] = OrderedDict()

    def get(self, key: tuple[str, bytes]) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[str, bytes], headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.n_bytes -= len(old[1])
        self._items[key] = (headers, body)
        self.n_bytes += len(body)
        while self.n_bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.n_bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


def _if_none_match(scope) -> set[str]:
    for k, v in scope["headers"]:
        if k == b"if-none-match":
            return {t.strip().removeprefix("W/") for t in v.decode("latin-1").split(",")}
    return set()


class CachedResponses:
    """Pure ASGI middleware: serves and stores `cacheable` GET responses; see the module docstring."""

    def __init__(self, app, max_bytes: int = MAX_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.code: str | None = None  # code digest + the page-shaping settings, on the first request (settings are on the app)
        self._caches: weakref.WeakKeyDictionary[Index, ResponseLru] = weakref.WeakKeyDictionary()

    def cache_for(self, index: Index) -> ResponseLru:
        cache = self._caches.get(index)
        if cache is None:
            cache = self._caches[index] = ResponseLru(self.max_bytes)
        return cache

    def etag(self, index: Index, key: tuple[str, bytes]) -> str:
        st = index.stamp
        ident = f"{self.code}|{index.inputs_hash}|{st.ino}:{st.size}:{st.mtime_ns}|{key[0]}?{key[1].decode('latin-1')}"
        return '"' + hashlib.blake2b(ident.encode(), digest_size=12).hexdigest() + '"'

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if self.code is None:  # pages differ with the settings (page size, worker on or off): part of every tag
            shown = state.settings.model_dump(mode="json", exclude={"secret"})
            self.code = f"{code_digest()}|{json.dumps(shown, sort_keys=True, default=str)}"
        index = state.watch.get()
        key = (scope["path"], scope["query_string"])
        tag = self.etag(index, key)
        if tag in _if_none_match(scope):
            await _send(send, 304, [(b"etag", tag.encode()), (b"cache-control", b"no-cache")], b"")
            return
        hit = self.cache_for(index).get(key)
        if hit is not None:
            await _send(send, 200, hit[0], hit[1])
            return
        await self.app(scope, receive, self._storing_send(send, index, key, tag))

    def _storing_send(self, send, index: Index, key: tuple[str, bytes], tag: str):
        """`send` that tags a marked 200 response and keeps its body once complete."""
        state: dict = {"keep": False, "headers": [], "parts": [], "size": 0}

        async def storing_send(message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if any(k == MARKER for k, _ in headers):
                    headers = [(k, v) for k, v in headers if k != MARKER]
                    if message["status"] == 200 and not any(k == b"set-cookie" for k, _ in headers):
                        headers += [(b"etag", tag.encode()), (b"cache-control", b"no-cache")]
                        state["keep"], state["headers"] = True, headers
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and state["keep"]:
                body = message.get("body", b"")
                state["size"] += len(body)
                state["parts"].append(body)
                if state["size"] > MAX_ENTRY:
                    state["keep"], state["parts"] = False, []
                elif not message.get("more_body"):
                    self.cache_for(index).put(key, state["headers"], b"".join(state["parts"]))
            await send(message)
        return storing_send


async def _send(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
