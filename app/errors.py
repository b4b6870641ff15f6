"""Known errors become 4xx pages (HTML or JSON by route suffix / Accept); the rest one generic 500.

Messages shown to users are written here or by the code that raises; exception text from
libraries is never echoed, so no traceback or SQL ever reaches a client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.security import HEADERS as SECURITY_HEADERS

log = logging.getLogger("saescope.app")


class IndexSchemaError(RuntimeError):
    """The index file is missing, unreadable or of a schema version this app does not know."""


class AppError(Exception):
    """An error with a status code and a message that is safe to show."""

    status_code = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(AppError):
    status_code = 404
    title = "Not found"


class InvalidParamError(AppError):
    status_code = 422
    title = "Invalid parameter"


class IndexUnavailableError(AppError):
    """The index file failed a read (rewritten in place, or damaged): retry, do not report a bug."""

    status_code = 503
    title = "Index unavailable"


def wants_json(request: Request) -> bool:
    """JSON for `.json`/`.bin` routes and API clients; HTML for browsers."""
    path = request.url.path
    if path.endswith((".json", ".bin")):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: Request, status: int, title: str, message: str,
                   detail: list | None = None) -> Response:
    if wants_json(request):
        body: dict = {"error": title, "status": status, "message": message}
        if detail:
            body["detail"] = detail
        return JSONResponse(body, status_code=status)
    templates = request.app.state.templates
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "title": title, "message": message, "v": {"sae": _sae_of(request)}},
        status_code=status)


def _sae_of(request: Request):
    """The SAE an /sae/<id>/... address names, when it exists, so the error page links back to it."""
    from app.views.common import get_sae  # the views import this module

    parts = request.url.path.split("/")
    if len(parts) < 3 or parts[1] != "sae":
        return None
    try:
        return get_sae(request.app.state.index, parts[2].removesuffix(".json")).summary
    except Exception:  # unknown SAE or unreadable index: an error page must never fail itself
        return None


PARAM_NAMES = {"fid": "feature id", "sae_id": "SAE id", "sample_id": "sample id", "dataset_id": "dataset id",
               "q": "search text", "seed": "seed", "pick": "guessed sample", "token": "game token"}
"""How people call the path and query parameters in error pages (the JSON keeps code names)."""


def _validation_message(exc: RequestValidationError) -> tuple[str, list]:
    detail = []
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body"))
        msg = str(err.get("msg", "invalid value"))
        detail.append({"loc": loc, "msg": msg})
        name = PARAM_NAMES.get(loc, loc)
        parts.append(f"{name}: {msg[:1].lower()}{msg[1:]}" if loc else msg)
    return "; ".join(parts) or "invalid request", detail


def install_error_handlers(app: FastAPI) -> None:
    """One place that maps every exception type to a response."""

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        return error_response(request, exc.status_code, exc.title, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, detail = _validation_message(exc)
        return error_response(request, 422, "Invalid parameter", message, detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(request, 404, "Not found", "No page at this address.")
        if exc.status_code == 405:
            return error_response(request, 405, "Method not allowed", "This address does not accept that method.")
        title = "Error"
        return error_response(request, exc.status_code, title, "The request could not be served.")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        # this response leaves through Starlette's outermost middleware, past SecurityHeaders
        headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
        if wants_json(request):
            return JSONResponse({"error": "Internal error", "status": 500,
                                 "message": "Something went wrong on our side."}, status_code=500, headers=headers)
        return HTMLResponse(
            "<!doctype html><title>500 Internal error</title><h1>Internal error</h1>"
            "<p>Something went wrong on our side.</p><p><a href=\"/\">Home</a></p>", status_code=500, headers=headers)
