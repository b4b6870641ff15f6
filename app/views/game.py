"""'Guess the input image': clues are a hidden sample's top features; the answer is checked server-side.

The token carries the hidden sample id masked by a keyed hash of a nonce and signed with HMAC,
so the page does not reveal the answer and a forged token is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets

from app.db import Index
from app.errors import InvalidParamError, NotFoundError
from app.models import FeatureCard, GameAnswer, GameView
from app.views.common import FEATURE_COLS, SaeCtx, feature_summary, sample_refs, top_thumbs

N_CANDIDATES = 4
N_CLUES = 5


def _mac(secret: str, msg: str) -> bytes:
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()


def make_token(secret: str, sae_id: str, sample_id: int) -> str:
    nonce = secrets.token_hex(8)
    mask = int.from_bytes(_mac(secret, f"mask:{nonce}")[:8], "big")
    sig = _mac(secret, f"{sae_id}:{nonce}:{sample_id}").hex()[:24]
    return f"{nonce}.{sample_id ^ mask:x}.{sig}"


def read_token(secret: str, sae_id: str, token: str) -> int:
    parts = token.split(".")
    try:
        nonce, enc, sig = parts
        sample_id = int(enc, 16) ^ int.from_bytes(_mac(secret, f"mask:{nonce}")[:8], "big")
    except ValueError:
        raise InvalidParamError("token: not a game token") from None
    want = _mac(secret, f"{sae_id}:{nonce}:{sample_id}").hex()[:24]
    if not hmac.compare_digest(want, sig):
        raise InvalidParamError("token: not a valid game token for this SAE")
    return sample_id


def _nth_sample(db: Index, sae_id: str, n: int) -> int:
    return int(db.scalar("SELECT sample_id FROM (SELECT DISTINCT sample_id FROM sample_top WHERE sae_id = ?) "
                         "ORDER BY sample_id LIMIT 1 OFFSET ?", [sae_id, n]))


def game_view(db: Index, ctx: SaeCtx, secret: str, seed: int | None) -> GameView:
    n = int(db.scalar("SELECT count(DISTINCT sample_id) FROM sample_top WHERE sae_id = ?", [ctx.sae_id]))
    if n < 2:
        raise NotFoundError(f"SAE {ctx.sae_id!r} has too few samples with features for a game.")
    rng = random.Random(seed)
    picks = rng.sample(range(n), min(N_CANDIDATES, n))
    ids = [_nth_sample(db, ctx.sae_id, p) for p in picks]
    hidden = ids[0]
    rng.shuffle(ids)
    frows = db.all(f"SELECT {', '.join('f.' + c.strip() for c in FEATURE_COLS.split(','))} "
                   "FROM sample_top t JOIN features f ON f.sae_id = t.sae_id AND f.feature_id = t.feature_id "
                   "WHERE t.sae_id = ? AND t.sample_id = ? ORDER BY t.rank LIMIT ?",
                   [ctx.sae_id, hidden, N_CLUES])
    thumbs = top_thumbs(db, ctx, [int(r["feature_id"]) for r in frows], 4)
    clues = []
    for r in frows:
        shown = [t for t in thumbs.get(int(r["feature_id"]), []) if t.sample_id != hidden][:3]
        clues.append(FeatureCard(**feature_summary(ctx.sae_id, r).model_dump(), top=shown))
    cands = sample_refs(db, ctx, [{"sample_id": i} for i in ids])
    return GameView(sae=ctx.summary, token=make_token(secret, ctx.sae_id, hidden), clues=clues,
                    candidates=cands)


def game_answer(db: Index, ctx: SaeCtx, secret: str, token: str, pick: int) -> GameAnswer:
    hidden = read_token(secret, ctx.sae_id, token)
    answer = sample_refs(db, ctx, [{"sample_id": hidden}])[0]
    return GameAnswer(sae=ctx.summary, correct=pick == hidden, pick=pick, answer=answer,
                      next_url=f"/sae/{ctx.sae_id}/game")
