"""The worker's HTTP API (`saescope worker INDEX`): inspect and steer, plus health.

Bound to localhost by default: it runs models on uploads and has no authentication. The
explorer (`app/`) calls it with timeouts and shows one line when it is absent, busy or down.
Inputs arrive as multipart forms: `image` (a file), `text`, or `sample_id`; `concept_search`
takes a `text` and ranks a CLIP/SigLIP SAE's features by meaning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from precompute.concepts_joint import TEMPLATE
from precompute.live.batcher import Batcher, QueueFull
from precompute.live.engine import LiveEngine
from precompute.live.inputs import MAX_UPLOAD_BYTES, InputError, LiveInput, check_text, decode_image
from precompute.live.schema import ConceptSearchResponse, InspectResponse, SteerResponse, WorkerHealth
from precompute.live.steer import steer
from sae_core.errors import SaescopeError
from sae_core.steering import Edit

log = logging.getLogger("saescope.worker")
RETRY_AFTER_S = 2
REQUEST_TIMEOUT_S = 120.0
MAX_CONCEPT_HITS = 200


def create_worker_app(engine: LiveEngine, max_batch: int = 8, max_queue: int = 64,
                      max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    app = FastAPI(title="saescope worker", version="1", docs_url=None, redoc_url=None,
                  description="Live inspection and steering for the SAEs of one saescope index. "
                              "Inputs: multipart `image`, `text` or `sample_id`.")
    batcher = Batcher(max_batch, max_queue)
    app.state.engine, app.state.batcher = engine, batcher
    threading.Thread(target=engine.warm_joint, name="warm-joint", daemon=True).start()
    _install_errors(app)

    async def read_input(sae_id: str, image: UploadFile | None, text: str | None, sample_id: int | None) -> LiveInput:
        given = [n for n, v in (("image", image), ("text", text), ("sample_id", sample_id)) if v is not None]
        if len(given) != 1:
            raise InputError("give exactly one input: an image file, a text, or a sample_id" +
                             (f" (got {', '.join(given)})" if given else ""))
        if image is not None:
            data = await image.read(max_upload_bytes + 1)
            return LiveInput(decode_image(data, max_upload_bytes), "image")
        if text is not None:
            return LiveInput(check_text(text), "text")
        return await asyncio.to_thread(engine.sample, sae_id, sample_id)

    async def run(key, items, fn):
        try:
            fut = batcher.submit(key, items, fn)
        except QueueFull:
            raise _Busy() from None
        return await asyncio.wait_for(asyncio.wrap_future(fut), REQUEST_TIMEOUT_S)

    @app.get("/health", response_model=WorkerHealth)
    def health() -> dict:
        return {"status": "ok", "index": str(engine.index_fpath), "device": str(engine.device),
                "saes": {sid: {"model": s.model, "layer": s.layer, "token_selection": s.token_selection,
                               "grid": list(s.grid) if s.grid else None, "modality": s.modality, "live": s.live_problem is None,
                               "problem": s.live_problem} for sid, s in engine.specs.items()},
                "loaded": engine.loaded_models(), "queue": {"pending": batcher.pending, "max": max_queue},
                "batches": batcher.n_batches, "requests": batcher.n_jobs}

    @app.post("/inspect", response_model=InspectResponse)
    async def inspect(sae_id: Annotated[list[str], Form()], image: Annotated[UploadFile | None, File()] = None,
                      text: Annotated[str | None, Form()] = None, sample_id: Annotated[int | None, Form(ge=0)] = None) -> dict:
        """Features of one input for one or more SAEs (of the same model: one forward)."""
        ids = _split_ids(sae_id)
        for sid in ids:
            engine.spec(sid)
        item = await read_input(ids[0], image, text, sample_id)
        codes = (await run(("codes", tuple(ids)), [item], lambda items: engine.codes(ids, items)))[0]
        return {"input": _describe(item), "results": {sid: _code_json(engine, c) for sid, c in codes.items()}}

    @app.post("/steer", response_model=SteerResponse)
    async def steer_route(sae_id: Annotated[str, Form()], edits: Annotated[str, Form()] = "[]",
                          units: Annotated[str, Form()] = "max", patches: Annotated[str, Form()] = "",
                          targets: Annotated[str, Form()] = "", image: Annotated[UploadFile | None, File()] = None,
                          text: Annotated[str | None, Form()] = None, sample_id: Annotated[int | None, Form(ge=0)] = None) -> dict:
        """Edit features of one input; `before` and `after` for each target the model has."""
        engine.spec(sae_id)
        parsed = parse_edits(edits)
        cells = _parse_ints(patches, "patches")
        wanted = [t for t in targets.split(",") if t.strip()] or None
        item = await read_input(sae_id, image, text, sample_id)

        def go(items):
            acts = engine.activations([sae_id], items)[0][sae_id]
            kwargs = {"targets": wanted} if wanted else {}
            return [steer(engine, sae_id, acts, parsed, units, cells, **kwargs)]

        result = (await run(None, [item], go))[0]
        return {"input": _describe(item), "sae_id": sae_id, "units": units, "patches": cells, **result}

    @app.post("/concept_search", response_model=ConceptSearchResponse)
    async def concept_search(sae_id: Annotated[str, Form()], text: Annotated[str, Form()],
                             k: Annotated[int, Form(ge=1, le=MAX_CONCEPT_HITS)] = 24) -> dict:
        """Features of a CLIP/SigLIP SAE ranked by the cosine between their directions in the joint
        image-text space and the text's embedding (precompute.concepts_joint)."""
        engine.spec(sae_id)
        query = check_text(text)
        space, hits = (await run(None, [query], lambda items: [engine.concept_search(sae_id, items[0], k)]))[0]
        return {"sae_id": sae_id, "text": query, "space": space, "prompt": TEMPLATE.format(query),
                "features": [{"feature_id": f, "cosine": c} for f, c in hits]}

    return app


class _Busy(Exception):
    pass


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(SaescopeError)
    async def user_error(request: Request, exc: SaescopeError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(_Busy)
    async def busy(request: Request, exc: _Busy):
        return JSONResponse({"detail": "the worker is busy; retry in a moment"}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(TimeoutError)
    async def timeout(request: Request, exc: TimeoutError):
        return JSONResponse({"detail": f"the worker took over {REQUEST_TIMEOUT_S:.0f} s"}, status_code=504)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse({"detail": f"internal error in the worker ({type(exc).__name__}); see its log"}, status_code=500)


def parse_edits(text: str) -> list[Edit]:
    """`[{"feature_id": 12, "op": "add", "value": 3}, ...]` -> edits, with one-line errors."""
    try:
        raw = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise InputError("edits must be a JSON list of {feature_id, op, value}") from None
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise InputError("edits must be a JSON list of {feature_id, op, value}")
    out = []
    for e in raw:
        value = e.get("value")
        if isinstance(value, str):  # JSON has no NaN/inf literals; strings are how they arrive
            raise InputError(f"edit of feature {e.get('feature_id')}: value {value!r} is not a finite number")
        out.append(Edit(e.get("feature_id"), e.get("op", "add"), value))
    return out


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, e.g. 0,1,5") from None


def _split_ids(values: list[str]) -> list[str]:
    ids = [s.strip() for v in values for s in v.split(",") if s.strip()]
    if not ids:
        raise InputError("name at least one sae_id")
    return list(dict.fromkeys(ids))


def _describe(item: LiveInput) -> dict:
    if item.kind == "text":
        return {"kind": "text", "text": item.value}
    out = {"kind": item.kind, "sample_id": item.sample_id}
    if hasattr(item.value, "size"):
        out["width"], out["height"] = item.value.size
    return out


def _code_json(engine: LiveEngine, code) -> dict:
    spec = engine.specs[code.sae_id]
    return {"grid": list(spec.grid) if spec.grid else None, "n_tokens": int(code.acts.shape[0]),
            "features": [{"feature_id": f, "activation": v, "token": t} for f, v, t in code.feature_scores()],
            "entries": {"token": code.token.tolist(), "feature": code.feature.tolist(), "value": code.value.tolist()}}


def serve_worker(index: str | Path, host: str = "127.0.0.1", port: int = 8001, uds: str | None = None, device: str = "auto",
                 max_batch: int = 8, max_queue: int = 64) -> None:
    """Run the worker with uvicorn until interrupted."""
    import uvicorn

    engine = LiveEngine(index, device)
    app = create_worker_app(engine, max_batch, max_queue)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if uds:
        uvicorn.run(app, uds=uds, log_level="warning")
    else:
        uvicorn.run(app, host=host, port=port, log_level="warning")
