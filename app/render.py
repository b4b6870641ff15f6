"""Jinja2 rendering: autoescaped templates and content-addressed static URLs."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from app import urls

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DPATH = ROOT / "templates"
STATIC_DPATH = ROOT / "static"


@lru_cache(maxsize=256)
def static_digest(name: str) -> str:
    """Short content hash; the URL changes when the file does, so it can be cached forever."""
    fpath = (STATIC_DPATH / name).resolve()
    if not fpath.is_relative_to(STATIC_DPATH) or not fpath.is_file():
        raise FileNotFoundError(name)
    return hashlib.sha256(fpath.read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/static/{static_digest(name)}/{name}"


def fmt_num(v: Any, digits: int = 3) -> str:
    """Compact numbers for stats tables; '–' for missing."""
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if v != v:  # NaN
        return "–"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{v:.{digits}f}" else f"{v}"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DPATH))
    env = templates.env
    env.autoescape = True  # every dataset string is escaped, whatever the template name
    env.globals["static_url"] = static_url
    env.globals["urls"] = urls  # every address from app.urls, never formatted by hand in a template
    env.filters["num"] = fmt_num
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.2f}%"
    return templates


def page(request: Request, template: str, view: BaseModel, **extra: Any) -> HTMLResponse:
    """Render the same model the JSON twin returns."""
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {"v": view, **extra})
