"""Security headers on every response (pure ASGI middleware).

The Content-Security-Policy fits the pages as they are: scripts and styles only from our own
/static (no inline script, so nothing from the data can run; JSON data blocks are not scripts),
style attributes allowed (bar widths), images from us plus data: and blob: URLs (canvas
exports, live-inspection uploads), fetch/XHR to the same origin only, no plugins, frames or
foreign form targets.
"""

from __future__ import annotations

CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "style-src-attr 'unsafe-inline'",
    "img-src 'self' data: blob:", "connect-src 'self'", "font-src 'self'", "worker-src 'self' blob:",
    "media-src 'self' blob:", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'",
])
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", CSP.encode()),
           (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


class SecurityHeaders:
    """Adds HEADERS to every HTTP response that does not set them itself."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
