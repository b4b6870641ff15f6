"""Steering: edit an input's SAE features and report what the model does with the result.

Targets, each before and after the edit: `classes` (the model's own classifier run from the
hooked layer: `precompute.heads`), `neighbors` (nearest dataset samples at that layer:
`precompute.live.retrieval`) and `features` (the edited features' activations when the steered
activation is encoded again). Edits keep the SAE error term (`sae_core.steering.apply_edits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sae_core.errors import ConfigError
from sae_core.steering import Edit, apply_edits, cells_mask, check_edits, resolve_units

TARGETS = ("classes", "neighbors", "features")


def steer(engine, sae_id: str, acts: torch.Tensor, edits: Sequence[Edit], units: str = "max",
          patches: Sequence[int] | None = None, targets: Sequence[str] | None = None, n_classes: int = 5,
          n_neighbors: int = 8) -> dict:
    """acts [tokens, d_in] of one input -> {edits (raw units), targets: {name: {before, after}}}.

    `targets` None: every target this model has; named targets it lacks are an error."""
    asked = targets is not None
    targets = list(targets) if asked else list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ConfigError(f"target {unknown[0]!r} is unknown; choose from {list(TARGETS)}")
    spec, sae = engine.spec(sae_id), engine.sae(sae_id)
    check_edits(edits, sae.cfg.d_sae)
    max_act = engine.max_acts(sae_id)
    raw = resolve_units(edits, units, {e.feature_id: float(max_act[e.feature_id]) for e in edits})
    mask = cells_mask(patches or None, acts.shape[0], spec.grid)
    steered = apply_edits(sae, acts.to(sae.W_enc.device), raw, mask).cpu()
    out = {"edits": [{"feature_id": e.feature_id, "op": e.op, "value": e.value} for e in raw], "targets": {}}
    if "classes" in targets:
        tail = engine.tail(sae_id)
        if tail is None:
            if asked:
                raise ConfigError(f"the model {spec.model} has no classifier after layer {spec.layer}, so there are no classes to show")
        else:
            out["targets"]["classes"] = _classes(tail, acts, steered, n_classes, engine.device)
    if "neighbors" in targets:
        r = engine.retrieval(sae_id)
        out["targets"]["neighbors"] = {"before": r.nearest(acts, n_neighbors), "after": r.nearest(steered, n_neighbors)}
    if "features" in targets:
        out["targets"]["features"] = _edited_features(sae, acts, steered, raw)
    return out


def _classes(tail, acts: torch.Tensor, steered: torch.Tensor, n: int, device: str) -> dict:
    """Top classes before and after, each side also scored on the other's classes (for bars)."""
    logits = tail.logits(torch.stack([acts, steered]).to(device)).cpu()
    probs = logits.softmax(-1)
    top = tail.top_classes(logits, n)
    shown = sorted({c["class_id"] for side in top for c in side}, key=lambda i: -float(probs[1, i]))
    return {"before": top[0], "after": top[1],
            "compare": [{"class_id": i, "name": tail.class_names[i], "before": float(probs[0, i]), "after": float(probs[1, i])}
                        for i in shown]}


def _edited_features(sae, acts: torch.Tensor, steered: torch.Tensor, edits: Sequence[Edit]) -> dict:
    """Each edited feature's score (max over tokens) in the original and the steered activation."""
    ids = sorted({e.feature_id for e in edits})
    with torch.no_grad():
        dev = sae.W_enc.device
        before = sae.encode(acts.to(dev)).amax(0)
        after = sae.encode(steered.to(dev)).amax(0)
    return {"before": [{"feature_id": f, "activation": float(before[f])} for f in ids],
            "after": [{"feature_id": f, "activation": float(after[f])} for f in ids]}
