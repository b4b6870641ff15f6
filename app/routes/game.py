"""'Guess the input image' game; answers are checked server-side from a signed token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.db import DbDep
from app.deps import SaeDep
from app.models import GameAnswer, GameView
from app.render import page
from app.views.game import game_answer, game_view

router = APIRouter(tags=["game"])
Seed = Annotated[int | None, Query(ge=0, le=2**32, description="fixes the hidden sample")]
Token = Annotated[str, Query(min_length=1, max_length=200)]
Pick = Annotated[int, Query(ge=0, le=2**62, description="the sample id guessed")]


def _secret(request: Request) -> str:
    return request.app.state.game_secret


@router.get("/sae/{sae_id}/game.json", response_model=GameView)
def game_json(request: Request, db: DbDep, sae: SaeDep, seed: Seed = None) -> GameView:
    return game_view(db, sae, _secret(request), seed)


@router.get("/sae/{sae_id}/game", response_class=HTMLResponse)
def game(request: Request, db: DbDep, sae: SaeDep, seed: Seed = None) -> HTMLResponse:
    return page(request, "game.html", game_view(db, sae, _secret(request), seed))


@router.get("/sae/{sae_id}/game/answer.json", response_model=GameAnswer)
def answer_json(request: Request, db: DbDep, sae: SaeDep, token: Token, pick: Pick) -> GameAnswer:
    return game_answer(db, sae, _secret(request), token, pick)


@router.get("/sae/{sae_id}/game/answer", response_class=HTMLResponse)
def answer(request: Request, db: DbDep, sae: SaeDep, token: Token, pick: Pick) -> HTMLResponse:
    return page(request, "game_answer.html", game_answer(db, sae, _secret(request), token, pick))
