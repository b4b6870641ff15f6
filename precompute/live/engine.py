"""Models and SAEs of an index, loaded lazily and kept resident; inputs -> activations -> codes.

SAEs whose stores came from the same model, input size and precision share one loaded model,
and SAEs on the same layer share its activations, so a request for several SAEs of one model
costs one forward per distinct layer.
"""

from __future__ import annotations

import contextlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from precompute.concepts_joint import TEMPLATE, JointSpace, NoJointSpace, decoder_directions, load_joint_spaces
from precompute.extractors import Extractor, build_extractors
from precompute.extractors.multi import MultiLayerExtractor
from precompute.heads import ClassifierTail, load_classifier_tail
from precompute.live.inputs import DatasetSamples, InputError, LiveInput
from precompute.live.retrieval import Retrieval
from precompute.live.specs import LiveSae, read_max_acts, read_specs
from sae_core import distributed
from sae_core.checkpoint import load
from sae_core.errors import ConfigError, SaescopeError
from sae_core.store import ActivationStore


class UnknownSaeError(InputError):
    def __init__(self, sae_id: str, known: list[str]):
        super().__init__(f"no SAE {sae_id!r} in this index; it has {', '.join(known) or 'none'}", status=404)


@dataclass
class SaeCode:
    """One input's activations at an SAE's layer and its sparse code."""

    sae_id: str
    acts: torch.Tensor
    """[tokens, d_in] float32 on the CPU: what the SAE saw (and what steering edits)."""
    token: np.ndarray
    feature: np.ndarray
    value: np.ndarray
    """Non-zero latents as (token, feature, value) entries."""

    def feature_scores(self) -> list[tuple[int, float, int]]:
        """(feature, score = max over tokens, the token where it peaks), highest score first;
        the index's per-sample score for patch SAEs is the same maximum."""
        best: dict[int, tuple[float, int]] = {}
        for t, f, v in zip(self.token.tolist(), self.feature.tolist(), self.value.tolist()):
            if f not in best or v > best[f][0]:
                best[f] = (v, t)
        return sorted(((f, v, t) for f, (v, t) in best.items()), key=lambda r: (-r[1], r[0]))


def sparse_code(sae, acts: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SAE's positive latents of acts [tokens, d_in] as (token, feature, value) arrays."""
    with torch.no_grad():
        x = acts.to(sae.W_enc.device, sae.W_enc.dtype)
        if sae.cfg.arch == "topk":
            code = sae.encode_sparse(x)
            tok = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(code.indices)
            keep = code.values > 0
            return tok[keep].cpu().numpy(), code.indices[keep].cpu().numpy(), code.values[keep].float().cpu().numpy()
        z = sae.encode(x)
        tok, feat = torch.nonzero(z > 0, as_tuple=True)
        return tok.cpu().numpy(), feat.cpu().numpy(), z[tok, feat].float().cpu().numpy()


class LiveEngine:
    """Everything the worker runs; not thread-safe for forwards (the batcher serialises them)."""

    def __init__(self, index_fpath: str | Path | None, device: str = "auto", specs: dict[str, LiveSae] | None = None):
        """`index_fpath` None: SAEs given as `specs` (from checkpoints), without max activations."""
        self.index_fpath = Path(index_fpath) if index_fpath else None
        self.device = distributed.pick_device(device)
        self.specs: dict[str, LiveSae] = specs if specs is not None else read_specs(self.index_fpath)
        self._saes: dict[str, object] = {}
        self._extractors: dict[tuple, Extractor] = {}
        self._tails: dict[str, ClassifierTail | None] = {}
        self._max_acts: dict[str, np.ndarray] = {}
        self._datasets: dict[str, DatasetSamples | None] = {}
        self._retrieval: dict[str, Retrieval] = {}
        self._stores: dict[Path, tuple[ActivationStore, dict[int, int]]] = {}
        self._joint: dict[str, tuple[JointSpace, torch.Tensor]] = {}
        self._joint_spaces: dict[tuple, dict[str, JointSpace] | NoJointSpace] = {}  # per (model, modality): its layers
        self._load_lock = threading.RLock()

    # ---- what is served ------------------------------------------------------------------
    def spec(self, sae_id: str) -> LiveSae:
        if sae_id not in self.specs:
            raise UnknownSaeError(sae_id, sorted(self.specs))
        problem = self.specs[sae_id].live_problem
        if problem:
            raise InputError(f"SAE {sae_id}: {problem}", status=422)
        return self.specs[sae_id]

    def loaded_models(self) -> list[str]:
        return sorted({f"{k[0]} · {k[-2]}" for k in self._extractors})

    # ---- lazily loaded parts -------------------------------------------------------------
    def sae(self, sae_id: str):
        with self._load_lock:
            if sae_id not in self._saes:
                spec = self.spec(sae_id)
                sae = load(spec.checkpoint).to(self.device).eval()
                if sae.cfg.d_in != spec.d_in:
                    raise ConfigError(f"checkpoint {spec.checkpoint} has d_in={sae.cfg.d_in}, the index says {spec.d_in}")
                self._saes[sae_id] = sae
            return self._saes[sae_id]

    def extractor(self, spec: LiveSae) -> Extractor:
        """The extractor of this SAE's layer; every layer of its model is built at once, sharing the
        loaded model, so several layers can come from one forward pass."""
        with self._load_lock:
            if spec.layer_key not in self._extractors:
                same = [s for s in self.specs.values() if s.model_key == spec.model_key and s.live_problem is None]
                layers = list(dict.fromkeys([(spec.layer, spec.token_selection)] + [(s.layer, s.token_selection) for s in same]))
                with contextlib.redirect_stdout(io.StringIO()):  # some model packages print on load
                    built = build_extractors(spec.model, layers, device=self.device, image_size=spec.image_size,
                                             modality=spec.modality, dtype=getattr(torch, spec.model_dtype),
                                             pretrained=spec.pretrained)
                for (layer, tokens), ext in zip(layers, built):
                    self._extractors.setdefault((*spec.model_key, layer, tokens), ext)
            return self._extractors[spec.layer_key]

    def tail(self, sae_id: str) -> ClassifierTail | None:
        """The classifier after this SAE's layer, or None (a model without classes)."""
        with self._load_lock:
            if sae_id not in self._tails:
                spec = self.spec(sae_id)
                module = getattr(self.extractor(spec), "model", None)
                self._tails[sae_id] = load_classifier_tail(spec.model, spec.layer, spec.token_selection, self.device, module)
            return self._tails[sae_id]

    def max_acts(self, sae_id: str) -> np.ndarray:
        with self._load_lock:
            if sae_id not in self._max_acts:
                spec = self.spec(sae_id)
                if self.index_fpath is None:  # no index: no max activations (max units are refused)
                    self._max_acts[sae_id] = np.zeros(spec.d_sae)
                else:
                    self._max_acts[sae_id] = read_max_acts(self.index_fpath, sae_id, spec.d_sae)
            return self._max_acts[sae_id]

    def retrieval(self, sae_id: str) -> Retrieval:
        """Nearest-sample search over this SAE's store (vectors loaded on first use)."""
        with self._load_lock:
            if sae_id not in self._retrieval:
                self._retrieval[sae_id] = Retrieval(self.spec(sae_id).store)
            return self._retrieval[sae_id]

    def joint(self, sae_id: str) -> tuple[JointSpace, torch.Tensor]:
        """The SAE's joint image-text space and its features' unit directions there [d_sae, d_joint]
        (`precompute.concepts_joint`), loaded on first use."""
        with self._load_lock:
            if sae_id not in self._joint:
                spec = self.spec(sae_id)
                key = (spec.model, spec.modality)
                if key not in self._joint_spaces:  # every layer of this model at once: one text tower, not one per SAE
                    layers = [s.layer for s in self.specs.values() if (s.model, s.modality) == key]
                    try:
                        self._joint_spaces[key] = load_joint_spaces(spec.model, layers, None, str(self.device), spec.modality)
                    except NoJointSpace as e:
                        self._joint_spaces[key] = e
                spaces = self._joint_spaces[key]
                if isinstance(spaces, NoJointSpace):
                    raise InputError(f"SAE {sae_id}: search by meaning needs a CLIP or SigLIP image SAE whose checkpoint "
                                     f"has its text tower ({spaces})", status=422) from None
                space = spaces[spec.layer]
                self._joint[sae_id] = (space, space.project(decoder_directions(self.sae(sae_id))))
            return self._joint[sae_id]

    def warm_joint(self) -> None:
        """Load the joint spaces of the SAEs the index projected (method `joint`) ahead of the first search,
        whose caller waits only seconds; run in a background thread at start-up. Failures wait for a request."""
        if self.index_fpath is None:
            return
        import duckdb

        try:
            with duckdb.connect(str(self.index_fpath), read_only=True) as con:
                ids = [r[0] for r in con.execute("SELECT DISTINCT sae_id FROM feature_concepts WHERE method = 'joint'").fetchall()]
        except duckdb.Error:  # an index without concepts
            return
        for sae_id in ids:
            with contextlib.suppress(SaescopeError, OSError):
                self.joint(sae_id)

    def concept_search(self, sae_id: str, text: str, k: int) -> tuple[str, list[tuple[int, float]]]:
        """(space name, the k features nearest the text in the joint space as (feature, cosine), highest
        first); the text is embedded in the vocabulary's prompt TEMPLATE, features that never fired are left out."""
        space, directions = self.joint(sae_id)
        query = space.embed_text([TEMPLATE.format(text)])[0].to(directions.device)
        cos = (directions @ query).cpu()
        if self.index_fpath is not None:
            cos[torch.as_tensor(self.max_acts(sae_id) <= 0)] = float("-inf")
        values, ids = cos.topk(min(k, cos.shape[0]))
        return space.family, [(int(f), float(v)) for f, v in zip(ids.tolist(), values.tolist()) if v != float("-inf")]

    def sample(self, sae_id: str, sample_id: int) -> LiveInput:
        """A dataset sample, loaded from its original source as extraction loaded it; when that source
        is not on this machine (a copied data folder), its stored activations stand in (kind `stored`)."""
        spec = self.spec(sae_id)
        with self._load_lock:
            if spec.dataset_id not in self._datasets:
                try:
                    self._datasets[spec.dataset_id] = _open_dataset(spec)
                except InputError:
                    self._datasets[spec.dataset_id] = None
        samples = self._datasets[spec.dataset_id]
        if samples is not None:
            try:
                return LiveInput(samples.load(sample_id), "sample", sample_id)
            except OSError:  # the source file moved or vanished since extraction
                pass
        self._stored_rows(spec, sample_id)  # raises for an unknown sample
        return LiveInput(None, "stored", sample_id)

    def _stored_rows(self, spec: LiveSae, sample_id: int) -> torch.Tensor:
        """The store's activations of one sample [tokens, d_in] (exactly what the index scanned)."""
        with self._load_lock:
            if spec.store not in self._stores:
                store = ActivationStore(spec.store)
                self._stores[spec.store] = (store, {int(s): i for i, s in enumerate(store.sample_ids())})
        store, position = self._stores[spec.store]
        if sample_id not in position:
            raise InputError(f"sample {sample_id} is not in this SAE's activation store", status=404)
        first = position[sample_id] * store.tokens_per_sample
        return store.rows(np.arange(first, first + store.tokens_per_sample))

    # ---- forwards --------------------------------------------------------------------------
    def activations(self, sae_ids: list[str], inputs: list[LiveInput]) -> list[dict[str, torch.Tensor]]:
        """Per input, per SAE, its layer's activations [tokens, d_in]: one forward per distinct layer."""
        specs = [self.spec(s) for s in sae_ids]
        for spec in specs:
            want = "text" if spec.modality == "text" else "image"
            bad = [i for i in inputs if (i.kind == "text") != (want == "text") and i.kind not in ("sample", "stored")]
            if bad:
                raise InputError(f"SAE {spec.sae_id} reads {want} inputs, not {'text' if want == 'image' else 'images'}", status=422)
        run = [i for i in inputs if i.kind != "stored"]
        by_layer: dict[tuple, torch.Tensor] = {}
        for model_key in dict.fromkeys(s.model_key for s in specs) if run else ():
            layer_specs = list({s.layer_key: s for s in specs if s.model_key == model_key}.values())
            multi = MultiLayerExtractor([self.extractor(s) for s in layer_specs])  # one forward for all its layers
            for s, acts in zip(layer_specs, multi.activations(multi.prepare([i.value for i in run]))):
                by_layer[s.layer_key] = acts.float().cpu()
        out, row = [], 0
        for item in inputs:
            if item.kind == "stored":
                out.append({s.sae_id: self._stored_rows(s, item.sample_id) for s in specs})
            else:
                out.append({s.sae_id: by_layer[s.layer_key][row] for s in specs})
                row += 1
        return out

    def codes(self, sae_ids: list[str], inputs: list[LiveInput]) -> list[dict[str, SaeCode]]:
        out = []
        for per_sae in self.activations(sae_ids, inputs):
            out.append({sid: SaeCode(sid, acts, *sparse_code(self.sae(sid), acts)) for sid, acts in per_sae.items()})
        return out


def _open_dataset(spec: LiveSae) -> DatasetSamples:
    import json

    try:
        manifest = json.loads((spec.dataset_dpath / "manifest.json").read_text())
        return DatasetSamples(spec.dataset_dpath, manifest["source"])
    except (OSError, KeyError, ValueError, SaescopeError) as e:  # a source that cannot be reopened here (moved, hf: cache gone)
        raise InputError(f"the samples of dataset {spec.dataset_id} cannot be loaded on the worker's machine ({e}); "
                         "upload the image instead", status=422) from None
