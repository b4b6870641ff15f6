"""The explorer's side of live inspection: HTTP calls to the worker, with timeouts.

The app never imports torch; everything that runs a model happens in `saescope worker`. When
the worker is not configured, down, busy or failing, the caller gets a `LiveError` with one
line to show, and every other page keeps working.
"""

from __future__ import annotations

import time

import httpx

from app.errors import AppError


class LiveError(AppError):
    """Live inspection cannot answer; `status` is what the explorer returns."""

    def __init__(self, message: str, status: int = 503, retry_after: str | None = None):
        super().__init__(message)
        self.status_code = status
        self.title = TITLES.get(status, "Bad request")
        self.retry_after = retry_after


TITLES = {503: "Live worker unavailable", 504: "Live worker timed out", 502: "Live worker failed", 413: "Upload too large",
          404: "Not found", 422: "Invalid input"}


class LiveClient:
    def __init__(self, url: str | None, timeout_s: float = 60.0, connect_grace_s: float = 15.0):
        self.url = url
        self.timeout_s = timeout_s
        self.connect_grace_s = connect_grace_s
        self._client: httpx.Client | None = None

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def _http(self) -> httpx.Client:
        if self._client is None:
            if self.url.startswith("unix:"):
                transport = httpx.HTTPTransport(uds=self.url[5:])
                self._client = httpx.Client(transport=transport, base_url="http://worker", timeout=self.timeout_s)
            else:
                self._client = httpx.Client(base_url=self.url, timeout=self.timeout_s)
        return self._client

    def _call(self, method: str, path: str, timeout: float | None = None, grace: float | None = None, **kwargs) -> dict:
        if not self.configured:
            raise LiveError("live inspection is off: start the explorer with `saescope serve INDEX` (it starts a worker) "
                            "or point it at one with --live-url")
        try:
            r = self._request(method, path, timeout or self.timeout_s, self.connect_grace_s if grace is None else grace, kwargs)
        except httpx.TimeoutException:
            raise LiveError(f"the live worker did not answer within {timeout or self.timeout_s:.0f} s; try again", 504) from None
        except httpx.TransportError:
            raise LiveError(f"the live worker at {self.url} is not reachable; it may still be starting, "
                            "or start one with `saescope worker INDEX`") from None
        if r.status_code == 503:
            raise LiveError("the live worker is busy; try again in a moment", 503, r.headers.get("retry-after", "2"))
        detail = _detail(r)
        if 400 <= r.status_code < 500:
            raise LiveError(detail, r.status_code)
        if r.status_code >= 500:
            raise LiveError(f"the live worker failed: {detail}", 502)
        return r.json()

    def _request(self, method: str, path: str, timeout: float, grace: float, kwargs: dict) -> httpx.Response:
        """One request; refused connections are retried for a few seconds (a worker that `serve`
        just started is still importing torch)."""
        deadline = time.monotonic() + grace
        while True:
            try:
                return self._http().request(method, path, timeout=timeout, **kwargs)
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def health(self) -> dict:
        return self._call("GET", "/health", timeout=min(self.timeout_s, 3.0), grace=0.0)

    def inspect(self, sae_ids: list[str], form: dict, files: dict | None) -> dict:
        return self._call("POST", "/inspect", data={**form, "sae_id": ",".join(sae_ids)}, files=files)

    def steer(self, sae_id: str, form: dict, files: dict | None) -> dict:
        return self._call("POST", "/steer", data={**form, "sae_id": sae_id}, files=files)

    def concept_search(self, sae_id: str, text: str, k: int, timeout: float) -> dict:
        """Features of a CLIP/SigLIP SAE nearest `text` in the joint space; no start-up grace (search
        pages do not wait for a worker that is still starting)."""
        return self._call("POST", "/concept_search", timeout=timeout, grace=0.0, data={"sae_id": sae_id, "text": text, "k": str(k)})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: name the first field
        first = detail[0] if detail else {}
        loc = ".".join(str(x) for x in first.get("loc", [])[1:]) or "request"
        return f"{loc}: {first.get('msg', 'invalid')}"
    return str(detail or f"HTTP {r.status_code}")[:300]
