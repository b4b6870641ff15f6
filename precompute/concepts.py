"""Concept projection: what a feature means to the model, in the model's own class names.

For classifiers (`precompute.heads.load_classifier_tail`) two measurements, one per SAE:
- `decoder`: when the hooked layer feeds the classes through a linear map (EfficientNet's pooled
  head), the feature's decoder direction goes through it. score = the logit change when the
  feature goes from 0 to its max activation, max_act x (W_dec[f] / input_scale) @ W^T (the vision
  analogue of Neuronpedia's top logits).
- `ablation`: otherwise (patch SAEs inside the network), the feature is set to 0 on its top
  samples' stored activations (`sae_core.steering.apply_edits`, error term kept) and the rest of
  the model is run. score = the mean over those samples of the logit drop, logits(x) - logits(x').

Per feature the N_CONCEPTS classes with the highest score are kept as `promotes` and the
N_CONCEPTS with the lowest as `suppresses`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_core.progress import progress

N_CONCEPTS = 5
"""Classes kept per feature and direction."""
ABLATION_SAMPLES = 8
"""Top samples per feature on which the ablation is measured."""


@dataclass
class ConceptRows:
    feature_id: list[int]
    rank: list[int]
    concept: list[str]
    score: list[float]
    kind: list[str]
    method: str


@torch.no_grad()
def decoder_logit_effects(sae, weight: torch.Tensor, max_act: np.ndarray) -> torch.Tensor:
    """[d_sae, n_classes] logit change from 0 to max activation through a linear classifier W [n_classes, d_in]."""
    w_dec = sae.W_dec.detach().float().cpu() / sae.input_scale.detach().float().cpu()
    return (w_dec @ weight.detach().float().cpu().T) * torch.as_tensor(max_act, dtype=torch.float32)[:, None]


ROWS_PER_CALL = 256
"""(feature, sample) pairs run through the rest of the model in one call."""


@torch.no_grad()
def ablation_logit_effects(sae, tail, store, top_ids: np.ndarray, n_samples: int = ABLATION_SAMPLES,
                           device: str = "cpu") -> torch.Tensor:
    """[d_sae, n_classes] mean logit drop over each feature's first `n_samples` top samples when the
    feature is set to 0 there (zero rows for features that never fired). Removing feature f from x
    is `apply_edits(sae, x, [Edit(f, "set", 0)])`: x - z_f(x) W_dec[f] / input_scale on every token,
    done here for many (feature, sample) pairs per call of the rest of the model."""
    T = store.tokens_per_sample
    pos_of = {int(s): p for p, s in enumerate(store.sample_ids())}
    sae = sae.to(device).eval()
    d_sae = top_ids.shape[1]
    pairs = [(f, int(s)) for f in range(d_sae) for s in top_ids[:n_samples, f] if s >= 0]
    effects = torch.zeros((d_sae, len(tail.class_names)))
    n_pairs = torch.zeros(d_sae)
    base: dict[int, torch.Tensor] = {}
    bar = progress(total=len(pairs), desc="concepts", unit="pair")
    for i in range(0, len(pairs), ROWS_PER_CALL):
        fs = torch.as_tensor([f for f, _ in pairs[i : i + ROWS_PER_CALL]])
        ss = [s for _, s in pairs[i : i + ROWS_PER_CALL]]
        rows = np.concatenate([np.arange(pos_of[s] * T, pos_of[s] * T + T) for s in ss])
        acts = store.rows(rows).to(device).float().view(len(ss), T, -1)
        new = sorted(set(ss) - base.keys())
        if new:
            first = {s: j for j, s in reversed(list(enumerate(ss)))}
            for s, lg in zip(new, tail.logits(acts[[first[s] for s in new]]).cpu()):
                base[s] = lg
        z = sae.encode(acts.reshape(-1, acts.shape[-1])).view(len(ss), T, -1)
        z_f = z[torch.arange(len(ss)), :, fs.to(device)]  # [pairs, T]
        ablated = acts - z_f[..., None] * (sae.W_dec[fs.to(device)] / sae.input_scale)[:, None, :]
        drop = torch.stack([base[s] for s in ss]) - tail.logits(ablated).cpu()
        effects.index_add_(0, fs, drop)
        n_pairs.index_add_(0, fs, torch.ones(len(ss)))
        bar.update(len(ss))
    bar.close()
    return effects / n_pairs.clamp_min(1)[:, None]


def top_concepts(effects: torch.Tensor, class_names: list[str], live: np.ndarray, method: str,
                 n: int = N_CONCEPTS) -> ConceptRows:
    """The n highest (`promotes`) and n lowest (`suppresses`) classes of each live feature."""
    out = ConceptRows([], [], [], [], [], method)
    k = min(n, effects.shape[1])
    hi_v, hi_i = effects.topk(k, dim=1)
    lo_v, lo_i = (-effects).topk(k, dim=1)
    for f in np.nonzero(live)[0].tolist():
        for kind, vals, idx in (("promotes", hi_v[f], hi_i[f]), ("suppresses", -lo_v[f], lo_i[f])):
            for r, (v, i) in enumerate(zip(vals.tolist(), idx.tolist())):
                out.feature_id.append(f)
                out.rank.append(r)
                out.concept.append(class_names[i])
                out.score.append(float(v))
                out.kind.append(kind)
    return out


def feature_concepts(sae, tail, store, top_ids: np.ndarray, max_act: np.ndarray, device: str = "cpu") -> ConceptRows:
    """Concept rows of every feature that fired: by the decoder direction when the tail is linear,
    else by ablation on the top samples."""
    live = max_act > 0
    if tail.linear is not None:
        effects, method = decoder_logit_effects(sae, tail.linear[0], max_act), "decoder"
    else:
        effects, method = ablation_logit_effects(sae, tail, store, top_ids, device=device), "ablation"
    return top_concepts(effects, tail.class_names, live, method)
