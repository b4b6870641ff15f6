"""Thumbnails and static assets, with path-traversal checks and cache headers."""

from __future__ import annotations

import re
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse

from app.db import DbDep
from app.errors import NotFoundError
from app.render import STATIC_DPATH, static_digest

router = APIRouter(tags=["files"])
DATASET_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def thumbs_dir(request: Request, db: DbDep, dataset_id: str) -> FsPath:
    row = db.one("SELECT modality, thumbs_dpath FROM datasets WHERE dataset_id = ?", [dataset_id])
    if row is None or not row["thumbs_dpath"]:
        raise NotFoundError(f"No thumbnails for dataset {dataset_id!r}.")
    dpath = FsPath(row["thumbs_dpath"])
    if not dpath.is_absolute():
        base = request.app.state.settings.thumbs_root or request.app.state.settings.index.parent
        dpath = FsPath(base) / dpath
    return dpath.resolve()


@router.get("/thumb/{dataset_id}/{sample_id}.webp", response_class=FileResponse,
            responses={200: {"content": {"image/webp": {}}}})
def thumb(
    request: Request, db: DbDep,
    dataset_id: Annotated[str, Path(pattern=DATASET_ID_RE)],
    sample_id: Annotated[int, Path(ge=0, le=2**62)],
) -> FileResponse:
    root = thumbs_dir(request, db, dataset_id)
    fpath = (root / f"{sample_id}.webp").resolve()
    if not fpath.is_relative_to(root) or not fpath.is_file():
        raise NotFoundError(f"No thumbnail for sample {sample_id}.")
    age = request.app.state.settings.thumb_max_age
    return FileResponse(fpath, media_type="image/webp", headers={"Cache-Control": f"public, max-age={age}"})


@router.get("/static/{digest}/{name:path}", response_class=FileResponse, include_in_schema=False)
def static(digest: str, name: str) -> FileResponse:
    """Content-addressed: the digest must match the file, so the response never changes."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", name) or ".." in name.split("/"):
        raise NotFoundError("No such static file.")
    fpath = (STATIC_DPATH / name).resolve()
    if not fpath.is_relative_to(STATIC_DPATH) or not fpath.is_file():
        raise NotFoundError("No such static file.")
    cache = "public, max-age=31536000, immutable" if digest == static_digest(name) else "no-cache"
    return FileResponse(fpath, headers={"Cache-Control": cache})
