"""Thumbnails and static assets, with path-traversal checks and cache headers.

Both are served straight from the event loop: a thumbnail is a few KB read from the page cache
(microseconds), so a thread-pool hop would only make it wait behind feature pages being
rendered in the pool. The thumbnail folder of a dataset is looked up once per index (cached);
files over SMALL_FILE bytes still stream from a thread.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response

from app.db import DbDep, Index
from app.errors import NotFoundError
from app.render import STATIC_DPATH, static_digest

router = APIRouter(tags=["files"])
DATASET_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SMALL_FILE = 1 << 20
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".json": "application/json",
               ".svg": "image/svg+xml", ".png": "image/png", ".webp": "image/webp", ".txt": "text/plain; charset=utf-8",
               ".map": "application/json", ".wasm": "application/wasm", ".woff2": "font/woff2"}


def thumbs_dir(request: Request, db: Index, dataset_id: str) -> FsPath:
    """The dataset's thumbnail folder, resolved; one query per dataset for the life of the index."""
    def lookup() -> FsPath:
        row = db.one("SELECT modality, thumbs_dpath FROM datasets WHERE dataset_id = ?", [dataset_id])
        if row is None or not row["thumbs_dpath"]:
            raise NotFoundError(f"No thumbnails for dataset {dataset_id!r}.")
        dpath = FsPath(row["thumbs_dpath"])
        if not dpath.is_absolute():
            base = request.app.state.settings.thumbs_root or request.app.state.settings.index.parent
            dpath = FsPath(base) / dpath
        return dpath.resolve()
    return db.cached(("thumbs_dir", dataset_id), lookup)


def _file_response(request: Request, fpath: FsPath, media_type: str, headers: dict[str, str]) -> Response:
    """Small files as bytes with an ETag (no thread hop), 304 when the client has them; large ones
    streamed by FileResponse."""
    st = fpath.stat()
    if st.st_size > SMALL_FILE:
        return FileResponse(fpath, media_type=media_type, headers=headers, stat_result=st)
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    if etag in {t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return Response(fpath.read_bytes(), media_type=media_type, headers={**headers, "ETag": etag})


@router.get("/thumb/{dataset_id}/{sample_id}.webp", response_class=Response,
            responses={200: {"content": {"image/webp": {}}}})
async def thumb(
    request: Request, db: DbDep,
    dataset_id: Annotated[str, Path(pattern=DATASET_ID_RE)],
    sample_id: Annotated[int, Path(ge=0, le=2**62)],
) -> Response:
    root = thumbs_dir(request, db, dataset_id)
    fpath = (root / f"{sample_id}.webp").resolve()  # a link out of the folder is not followed
    if not fpath.is_relative_to(root) or not fpath.is_file():
        raise NotFoundError(f"No thumbnail for sample {sample_id}.")
    age = request.app.state.settings.thumb_max_age
    return _file_response(request, fpath, "image/webp", {"Cache-Control": f"public, max-age={age}"})


@lru_cache(maxsize=128)
def _static_bytes(name: str) -> tuple[bytes, str]:
    fpath = (STATIC_DPATH / name).resolve()
    data = fpath.read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


@router.get("/static/{digest}/{name:path}", response_class=Response, include_in_schema=False)
async def static(digest: str, name: str) -> Response:
    """Content-addressed: the digest must match the file, so the response never changes."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", name) or ".." in name.split("/"):
        raise NotFoundError("No such static file.")
    fpath = (STATIC_DPATH / name).resolve()
    if not fpath.is_relative_to(STATIC_DPATH) or not fpath.is_file():
        raise NotFoundError("No such static file.")
    media_type = MEDIA_TYPES.get(fpath.suffix, "application/octet-stream")
    if digest != static_digest(name):  # an old or hand-typed address: the current file, not cached
        return FileResponse(fpath, media_type=media_type, headers={"Cache-Control": "no-cache"})
    if fpath.stat().st_size > SMALL_FILE:
        return FileResponse(fpath, media_type=media_type, headers={"Cache-Control": "public, max-age=31536000, immutable"})
    data, etag = _static_bytes(name)
    return Response(data, media_type=media_type, headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": etag})
