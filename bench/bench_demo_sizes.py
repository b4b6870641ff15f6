"""Size the demo's SAEs: in-sample vs held-out explained variance and dead latents at k = 16.

Trains one TopK SAE per `LATENTSxEPOCHSxBATCH` on an existing store (e.g. the stores that
`saescope demo --styles noto,google,twitter --no-serve --data-root /tmp/demo/x` wrote) and prints
a table. Held-out rows are the store's last 5% of samples, as `saescope train` holds them out
(for the multi-style emoji source: whole concepts in every style).

    OMP_NUM_THREADS=1 python bench/bench_demo_sizes.py STORE OUT 256x6x256 512x20x256
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_core import checkpoint
from sae_core.config import SAEConfig
from sae_core.metrics import MetricsAccumulator
from sae_core.store import ActivationStore
from sae_core.training import TrainConfig, train


def in_sample_metrics(sae, store: ActivationStore, n_train_rows: int, d_sae: int) -> dict:
    """Metrics over the rows the SAE trained on (train() reports only the held-out ones)."""
    acc = MetricsAccumulator(d_sae)
    with torch.no_grad():
        for _, x in store.iter_chunks(8192, end_row=n_train_rows):
            code = sae.encode_sparse(x)
            fired = torch.bincount(code.indices[code.values > 0], minlength=d_sae)
            acc.update_counts(x * sae.input_scale, sae.decode_sparse(*code) * sae.input_scale, fired)
    return acc.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="activation store folder")
    ap.add_argument("out", help="folder for the trained SAEs")
    ap.add_argument("configs", nargs="+", help="LATENTSxEPOCHSxBATCH, e.g. 256x6x256")
    args = ap.parse_args()
    store = ActivationStore(args.store)
    eval_fraction = TrainConfig.__dataclass_fields__["eval_fraction"].default
    n_train_rows = (store.n_samples - max(1, int(store.n_samples * eval_fraction))) * store.tokens_per_sample
    print(f"store {args.store}: {store.n_samples:,} samples x {store.tokens_per_sample} tokens")
    print("| latents | epochs | batch | in-sample EV | held-out EV | gap | dead (training counters) | held-out never fired | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for text in args.configs:
        d_sae, epochs, batch = int(text.split("x")[0]), float(text.split("x")[1]), int(text.split("x")[2])
        t0 = time.perf_counter()
        result = train(TrainConfig(store=args.store, out=args.out, name=f"size-{d_sae}", sae=SAEConfig(arch="topk", k=16, d_sae=d_sae),
                                   lr=1e-3, batch_size=batch, n_epochs=epochs, log_every=1000))
        inside, held = in_sample_metrics(checkpoint.load(result.run_dpath), store, n_train_rows, d_sae), result.metrics
        gap = inside["explained_variance"] - held["explained_variance"]
        print(f"| {d_sae} | {epochs:g} | {batch} | {inside['explained_variance']:.3f} | {held['explained_variance']:.3f} | {gap:.3f} | "
              f"{100 * held['dead_fraction']:.1f}% | {100 * held['heldout_never_fired']:.1f}% | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
