"""What joint-space concept projection (`precompute.concepts_joint`) costs at the GPU target's SAE
size: 65,536 decoder directions carried into CLIP ViT-L/14's joint space (d_in 1024 -> 768) and
scored against the whole vocabulary (ImageNet prompts + the shipped word list), top 10 kept.
Random weights and unit text embeddings stand in for the model (the cost does not depend on the
values); embedding the vocabulary's prompts with the text tower is not included.

    python bench/bench_concepts_joint.py --d-sae 16384 65536 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, print_table  # noqa: E402
from precompute.concepts_joint import N_JOINT, JointSpace, top_cosines, vocabulary  # noqa: E402


def run(d_sae: int, d_in: int, d_joint: int, n_vocab: int, device: str) -> tuple[float, float, float]:
    """(wall seconds to project the decoder, to score and keep the top N_JOINT, process CPU seconds of
    both: on a shared machine CPU time / threads is the quiet-machine wall time), after one warm-up."""
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    space = JointSpace("CLIP", torch.randn(d_joint, d_in, generator=g) / d_in**0.5, None, None, device)
    text = torch.nn.functional.normalize(torch.randn(n_vocab, d_joint, generator=g), dim=-1).to(device)
    top_cosines(space.project(w_dec[:1024]), text, N_JOINT)  # warm-up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    c0, t0 = time.process_time(), time.perf_counter()
    emb = space.project(w_dec)
    sync()
    t1 = time.perf_counter()
    values, _ = top_cosines(emb, text, N_JOINT)
    sync()
    assert values.shape == (d_sae, N_JOINT)
    return t1 - t0, time.perf_counter() - t1, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--d-in", type=int, default=1024)
    p.add_argument("--d-joint", type=int, default=768)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    n_vocab = len(vocabulary())
    print(machine(), f"· torch threads {torch.get_num_threads()} · vocabulary {n_vocab:,}")
    rows = []
    for d_sae in args.d_sae:
        proj, score, cpu = run(d_sae, args.d_in, args.d_joint, n_vocab, args.device)
        rows.append([f"{d_sae:,}", f"{n_vocab:,}", f"{proj:.2f} s", f"{score:.2f} s", f"{proj + score:.2f} s", f"{cpu:.2f} s"])
    print_table(["features", "vocabulary", "project", "cosine + top 10", "total wall", "CPU time"], rows)


if __name__ == "__main__":
    main()
