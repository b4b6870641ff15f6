"""Live inspection and steering: the inspect page and its JSON twins, served through the worker."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from app.db import DbDep
from app.deps import SaeDep, SettingsDep
from app.errors import InvalidParamError
from app.live_client import LiveClient, LiveError
from app.live_models import InspectPage, InspectView, SteerView
from app.render import page
from app.views.common import SaeCtx, list_saes
from app.views.live import MAX_LISTED, inspect_view, parse_cells, steer_view

router = APIRouter(tags=["live"])
ImageFile = Annotated[UploadFile | None, File(description="an image file (PNG, JPEG, WebP, GIF)")]
TextField = Annotated[str | None, Form(max_length=2000, description="text to inspect (text SAEs)")]
SampleField = Annotated[int | None, Form(ge=0, le=2**62, description="a dataset sample of this SAE")]


def _live(request: Request) -> LiveClient:
    return request.app.state.live


def _error_json(exc: LiveError) -> JSONResponse:
    headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
    return JSONResponse({"error": exc.title, "status": exc.status_code, "message": exc.message},
                        status_code=exc.status_code, headers=headers)


async def _input_form(settings, image: UploadFile | None, text: str | None, sample_id: int | None) -> tuple[dict, dict | None]:
    """The form fields and file the worker gets; exactly one input, an upload within the size cap."""
    given = [n for n, v in (("image", image), ("text", text), ("sample_id", sample_id)) if v not in (None, "")]
    if len(given) != 1:
        raise InvalidParamError("give exactly one input: an image file, a text, or a sample_id" +
                                (f" (got {', '.join(given)})" if given else ""))
    if image is not None:
        limit = int(settings.max_upload_mb * 2**20)
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise LiveError(f"the upload is over {settings.max_upload_mb:g} MB; choose a smaller image", 413)
        return {}, {"image": (image.filename or "upload", data, image.content_type or "application/octet-stream")}
    if text is not None:
        return {"text": text}, None
    return {"sample_id": str(sample_id)}, None


def _same_model(db, sae: SaeCtx, with_ids: str | None) -> list[str]:
    """This SAE, then the requested others; each must read the same model and dataset (one forward)."""
    ids = [sae.sae_id]
    for sid in (s.strip() for s in (with_ids or "").split(",")):
        if not sid or sid in ids:
            continue
        other = next((s for s in list_saes(db) if s.sae_id == sid), None)
        if other is None or other.model != sae.summary.model or other.dataset_id != sae.summary.dataset_id:
            raise InvalidParamError(f"SAE {sid!r} is not an SAE of the same model and dataset as {sae.sae_id!r}")
        ids.append(sid)
    return ids


@router.post("/sae/{sae_id}/inspect.json", response_model=InspectView,
             responses={413: {"description": "upload too large"}, 503: {"description": "worker off, down or busy"}})
async def inspect_json(request: Request, db: DbDep, sae: SaeDep, settings: SettingsDep, image: ImageFile = None,
                       text: TextField = None, sample_id: SampleField = None,
                       region: Annotated[str | None, Form(max_length=20000, description="grid cells to rank within, e.g. 0,1,4")] = None,
                       limit: Annotated[int, Form(ge=1, le=MAX_LISTED)] = 50,
                       with_saes: Annotated[str | None, Form(alias="with", max_length=2000)] = None):
    """Features of an uploaded image, a text or a dataset sample: ranked, with patch heatmaps."""
    try:
        form, files = await _input_form(settings, image, text, sample_id)
        cells = parse_cells(region, sae)
        ids = _same_model(db, sae, with_saes)
        response = await _threaded(_live(request).inspect, ids, form, files)
    except LiveError as e:
        return _error_json(e)
    return await _threaded(inspect_view, db, sae, response, cells, limit)


@router.post("/sae/{sae_id}/steer.json", response_model=SteerView,
             responses={413: {"description": "upload too large"}, 503: {"description": "worker off, down or busy"}})
async def steer_json(request: Request, db: DbDep, sae: SaeDep, settings: SettingsDep, image: ImageFile = None,
                     text: TextField = None, sample_id: SampleField = None,
                     edits: Annotated[str, Form(max_length=20000, description='JSON list [{"feature_id", "op", "value"}]')] = "[]",
                     units: Annotated[str, Form(pattern="^(max|raw)$")] = "max",
                     patches: Annotated[str | None, Form(max_length=20000, description="grid cells the edits apply to")] = None,
                     targets: Annotated[str | None, Form(max_length=200, description="comma-separated subset of classes, neighbors, features "
                                                         "(default: every target the model has)")] = None):
    """Edit features of the input and return the model's targets before and after. Also accepts a JSON body
    `{"sample_id", "edits", "units", "patches"}`."""
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await _json_body(request)
            sample_id, edits, units, patches = (body.get("sample_id"), json.dumps(body.get("edits", [])),
                                                body.get("units", "max"), ",".join(str(p) for p in body.get("patches") or []))
            targets = ",".join(body.get("targets") or []) or None
            text = body.get("text")
        form, files = await _input_form(settings, image, text, sample_id)
        cells = parse_cells(patches, sae, "patches")
        form.update({"edits": edits, "units": units, "patches": ",".join(map(str, cells or [])), "targets": targets or ""})
        response = await _threaded(_live(request).steer, sae.sae_id, form, files)
    except LiveError as e:
        return _error_json(e)
    return await _threaded(steer_view, db, sae, response)


def _page(request: Request, db, sae: SaeCtx, sample_id: int | None) -> InspectPage:
    same = [s for s in list_saes(db) if s.model == sae.summary.model and s.dataset_id == sae.summary.dataset_id
            and s.sae_id != sae.sae_id]
    return InspectPage(sae=sae.summary, live=_status(_live(request)), sample_id=sample_id, same_model=same,
                       max_upload_mb=request.app.state.settings.max_upload_mb)


SampleQuery = Annotated[int | None, Query(ge=0, le=2**62, description="start from this dataset sample")]


@router.get("/sae/{sae_id}/inspect.json", response_model=InspectPage)
def inspect_page_json(request: Request, db: DbDep, sae: SaeDep, sample_id: SampleQuery = None) -> InspectPage:
    return _page(request, db, sae, sample_id)


@router.get("/sae/{sae_id}/inspect", response_class=HTMLResponse)
def inspect_page(request: Request, db: DbDep, sae: SaeDep, sample_id: SampleQuery = None) -> HTMLResponse:
    """Drop an image (or pick a sample, or type text) and see which features fire where; steer them."""
    return page(request, "inspect.html", _page(request, db, sae, sample_id))


@router.get("/live/status.json")
def live_status(request: Request) -> dict:
    """Whether live inspection works now, in one line."""
    return _status(_live(request))


def _status(live: LiveClient) -> dict:
    try:
        health = live.health()
    except LiveError as e:
        return {"ok": False, "message": e.message}
    return {"ok": True, "message": f"live worker ready on {health.get('device', '?')}", "saes": health.get("saes", {})}


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidParamError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidParamError("the JSON body must be an object with sample_id (or text), edits, units")
    return body


async def _threaded(fn, *args):
    """Worker calls and index queries block: keep them off the event loop."""
    return await run_in_threadpool(fn, *args)
