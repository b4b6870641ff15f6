"""Train an SAE on an activation store: `train(TrainConfig(...))`.

The batch order is a pure function of (seed, step), and the resumable state holds everything
else that changes (weights, optimizer, dead-latent counters), so a killed run that resumes
ends with the same weights as an uninterrupted one: bit for bit on CPU; on CUDA up to float
summation order (its scatter-adds and sparse products add in a racy order). Under `torchrun`
every rank takes its slice of each global batch and DDP averages gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sae_core import distributed
from sae_core.checkpoint import CFG_FILE, check_outputs, read_cfg, save
from sae_core.config import SAEConfig
from sae_core.contract import atomic_write_bytes, canonical_json, folder_id
from sae_core.errors import ConfigError, DataError, FormatError
from sae_core.metrics import MetricsAccumulator, batch_fvu
from sae_core.model import SparseAutoencoder, check_finite
from sae_core.progress import progress
from sae_core.store import ActivationStore
from sae_core.validate import check_numbers, resolve_precision


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; the run folder is a hash of these (minus paths)."""

    store: str = field(default="", metadata={"help": "activation store folder to train on"})
    out: str = field(default="data/saes", metadata={"help": "folder that run folders are created in"})
    sae: SAEConfig = field(default_factory=SAEConfig, metadata={"help": "architecture"})
    lr: float = field(default=3e-4, metadata={"help": "peak AdamW learning rate"})
    batch_size: int = field(default=8192, metadata={"help": "tokens per optimizer step (global, across ranks)"})
    n_tokens: int = field(default=0, metadata={"help": "tokens to train on (0: n_epochs passes over the training split)"})
    n_epochs: float = field(default=1.0, metadata={"help": "passes over the training split when n_tokens is 0"})
    warmup_frac: float = field(default=0.05, metadata={"help": "fraction of steps of linear learning-rate warmup"})
    decay_start_frac: float = field(default=0.8, metadata={"help": "fraction of steps after which the lr decays linearly to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation and batch order"})
    eval_fraction: float = field(default=0.05, metadata={"help": "fraction of samples held out for final metrics"})
    dead_after_tokens: int = field(default=0, metadata={"help": "a latent silent this many tokens is dead (0: min(10M, one epoch))"})
    resample_every_tokens: int = field(default=0, metadata={"help": "resample dead latents of relu/jumprelu/gated SAEs this often (0: 4 times in the first half)"})
    b_dec_init: Literal["geometric_median", "mean", "zero"] = field(default="geometric_median", metadata={"help": "b_dec initialisation"})
    log_every: int = field(default=20, metadata={"help": "steps between metric log lines"})
    log: str = field(default="", metadata={"help": "also send the metric rows to wandb or tensorboard (imported only then)"})
    checkpoint_every_tokens: int = field(default=0, metadata={"help": "tokens between resumable checkpoints (0: 10 per run)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    precision: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata={
        "help": "forward pass under bfloat16 autocast (weights and optimizer stay float32) or float32; auto: bfloat16 on CUDA"})
    name: str = field(default="", metadata={"help": "readable prefix of the run folder name"})
    keep_state: bool = field(default=False, metadata={
        "help": "keep the resumable training state (optimizer, step) after the run finishes; by default it is removed"})

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be positive")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size={self.batch_size} must be positive")
        if self.n_tokens < 0 or self.n_epochs <= 0:
            raise ConfigError("n_tokens must be >= 0 and n_epochs > 0")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction={self.eval_fraction} must be in [0, 1)")
        if not 0 <= self.warmup_frac <= 1 or not 0 <= self.decay_start_frac <= 1:
            raise ConfigError("warmup_frac and decay_start_frac must be in [0, 1]")
        check_numbers(self, positive=("log_every",), non_negative=(
            "weight_decay", "grad_clip", "seed", "dead_after_tokens", "resample_every_tokens", "checkpoint_every_tokens"))
        resolve_precision(self.precision, "cpu")  # refuses unknown names early
        if self.log:
            from sae_core.log_sinks import check_available

            check_available(self.log)  # before any file is written

    def identity(self) -> dict:
        """What defines the run's result: everything but where files live and the device."""
        d = dataclasses.asdict(self)
        for key in ("out", "device", "log_every", "checkpoint_every_tokens", "name", "keep_state", "log"):
            d.pop(key)
        return d


@dataclass(frozen=True)
class TrainResult:
    run_dpath: Path
    metrics: dict
    reused: bool


MAX_FVU = 100.0
"""A reconstruction this many times worse than predicting the mean is a diverged run, not a bad SAE
(a fresh SAE starts near 1): such a run stops instead of saving a checkpoint."""


def run_identity(cfg: TrainConfig, store: ActivationStore) -> dict:
    """What the run folder's name hashes, and what a resumed training state must match."""
    return cfg.identity() | {"store": store.store_id, "store_n_tokens": store.n_tokens, "precision": resolved_precision(cfg)}


def run_dpath_for(cfg: TrainConfig, store: ActivationStore) -> Path:
    slug = cfg.name or f"{store.manifest.get('layer', 'sae')}-{cfg.sae.arch}"
    return Path(cfg.out) / folder_id(slug, run_identity(cfg, store), "sae")


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume, or reuse) the run described by cfg; returns its folder and metrics."""
    if not cfg.store:
        raise ConfigError("no activation store given; pass --store PATH (see `saescope extract`)")
    store = ActivationStore(cfg.store)
    run_dpath = run_dpath_for(cfg, store)
    if (run_dpath / CFG_FILE).exists():
        done = read_cfg(run_dpath)
        problem = check_outputs(run_dpath, done)
        main_rank = int(os.environ.get("RANK", "0")) == 0  # no process group yet: torchrun's own numbering
        if done.get("metrics") and problem is None:
            if not cfg.keep_state and main_rank:
                shutil.rmtree(run_dpath / STATE_DIR, ignore_errors=True)
            return TrainResult(run_dpath, done["metrics"], reused=True)
        if problem is not None and main_rank:
            logging.getLogger(__name__).warning(f"saescope train: {problem}; training the run again")
            (run_dpath / CFG_FILE).unlink(missing_ok=True)  # no longer marks a finished run
    check_memory(cfg.sae.resolved(store.d_in), cfg.batch_size, _pick_device(cfg.device))
    with distributed.session():
        return _Trainer(cfg, store, run_dpath).run()


STATE_DIR = "state"


def memory_needed(sae_cfg: SAEConfig, batch_size: int) -> int:
    """Bytes a training step needs, roughly: float32 weights, gradients and two Adam moments, plus
    a few dense [batch, d_sae] activation tensors (pre-activations, latents and their gradients)."""
    n_params = 2 * sae_cfg.d_in * sae_cfg.d_sae + 4 * sae_cfg.d_sae + sae_cfg.d_in
    return 4 * (4 * n_params + 4 * batch_size * sae_cfg.d_sae)


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with its fused kernel (CPU and CUDA): one pass over each parameter per step instead
    of a dozen elementwise ops (on the 2-core CPU 1.4 -> 0.65 ms a step at demo patches; on a GPU
    it also keeps the step counters on the device, so no host sync). bench_train.py gives both
    libraries this optimizer."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, fused=True)


def check_memory(sae_cfg: SAEConfig, batch_size: int, device: torch.device) -> None:
    """Refuse, before anything is written, a size the device could never hold (`--expansion 100000`)."""
    need, have = memory_needed(sae_cfg, batch_size), _device_memory(device)
    if have and need > have:
        raise ConfigError(f"d_sae={sae_cfg.d_sae:,} (d_in={sae_cfg.d_in}) with batch_size={batch_size} needs about "
                          f"{need / 2**30:,.1f} GiB but {device} has {have / 2**30:,.1f} GiB; lower --expansion/--d-sae or --batch-size")


def _device_memory(device: torch.device) -> int:
    """Total memory of the device (RAM for the CPU); 0 when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class _Trainer:
    def __init__(self, cfg: TrainConfig, store: ActivationStore, run_dpath: Path):
        self.cfg, self.store, self.run_dpath = cfg, store, run_dpath
        self.dist = distributed.current()
        self.device = _pick_device(cfg.device)
        self.sae_cfg = cfg.sae.resolved(store.d_in)
        n_eval_samples = int(store.n_samples * cfg.eval_fraction)
        if cfg.eval_fraction > 0 and store.n_samples > 1:
            n_eval_samples = max(1, n_eval_samples)
        self.n_train_rows = (store.n_samples - n_eval_samples) * store.tokens_per_sample
        if self.n_train_rows < 1:
            raise ConfigError(f"{store.dpath}: too few samples ({store.n_samples}) to train on")
        self.n_tokens_total = cfg.n_tokens or int(cfg.n_epochs * self.n_train_rows)
        self.n_steps = max(1, math.ceil(self.n_tokens_total / cfg.batch_size))
        self.dead_after = cfg.dead_after_tokens or min(10_000_000, self.n_train_rows)
        ckpt_every = cfg.checkpoint_every_tokens or max(cfg.batch_size, self.n_tokens_total // 10)
        self.ckpt_every_steps = max(1, ckpt_every // cfg.batch_size)
        self._perm_cache: tuple[int, torch.Tensor] | None = None

        torch.manual_seed(cfg.seed)
        self.sae = SparseAutoencoder(self.sae_cfg).to(self.device)
        self.opt = make_optimizer(self.sae.parameters(), cfg.lr, cfg.weight_decay)
        self.tokens_since_fired = torch.zeros(self.sae_cfg.d_sae, dtype=torch.long, device=self.device)
        self.step = 0
        if not self._load_state():
            self._init_from_data()
        self.model = self.sae
        if self.dist.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(self.sae, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ---- data -------------------------------------------------------------------------------
    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perm_cache = (epoch, torch.randperm(self.n_train_rows, generator=gen))
        return self._perm_cache[1]

    def batch_rows(self, step: int) -> np.ndarray:
        """Training-row indices of global batch `step` (a pure function of seed and step)."""
        start = step * self.cfg.batch_size
        positions = np.arange(start, start + self.cfg.batch_size, dtype=np.int64)
        epochs = positions // self.n_train_rows
        rows = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            rows[sel] = self._epoch_perm(int(epoch))[positions[sel] % self.n_train_rows].numpy()
        return rows[self.dist.rank :: self.dist.world]

    def _init_from_data(self) -> None:
        gen = np.random.default_rng(self.cfg.seed)
        n = min(self.n_train_rows, 32768)
        sample = self.store.rows(np.sort(gen.choice(self.n_train_rows, size=n, replace=False)))
        check_finite(sample, f"{self.store.dpath}")
        self.sae.init_from_data(sample.to(self.device), self.cfg.b_dec_init)

    # ---- state ------------------------------------------------------------------------------
    @property
    def _state_fpath(self) -> Path:
        return self.run_dpath / STATE_DIR / "state.pt"

    def _save_state(self) -> None:
        self._check_diverged(0.0)  # weights only; ranks hold the same weights, so all of them stop
        if self.dist.rank != 0:
            return
        buf = io.BytesIO()
        torch.save(
            {"step": self.step, "sae": self.sae.state_dict(), "opt": self.opt.state_dict(),
             "tokens_since_fired": self.tokens_since_fired.cpu(), "identity": run_identity(self.cfg, self.store)},
            buf,
        )
        atomic_write_bytes(self._state_fpath, buf.getvalue())

    def _load_state(self) -> bool:
        if not self._state_fpath.exists():
            return False
        try:
            # On the CPU first: load_state_dict moves tensors to the parameters' device (fused
            # AdamW's `step` counters too; unfused ones stay on the CPU, sparing host syncs).
            state = torch.load(self._state_fpath, map_location="cpu", weights_only=True)
        except Exception as e:  # damaged files raise RuntimeError, EOFError, UnpicklingError, KeyError, ...
            raise FormatError(f"{self._state_fpath}: corrupt training state ({e}); delete it to restart") from None
        fix = f"delete {self._state_fpath.parent} to restart the run"
        if not isinstance(state, dict) or not isinstance(state.get("identity"), dict):
            raise FormatError(f"{self._state_fpath}: training state without the run's identity; {fix}")
        mine, saved = run_identity(self.cfg, self.store), state["identity"]
        differ = sorted(k for k in mine.keys() & saved.keys() if canonical_json(mine[k]) != canonical_json(saved[k]))
        if differ:
            raise FormatError(f"{self._state_fpath}: training state of another run (differs in {', '.join(differ)}); {fix}")
        try:
            self.sae.load_state_dict(state["sae"])
            self.opt.load_state_dict(state["opt"])
            self.tokens_since_fired = state["tokens_since_fired"].to(self.device)
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise FormatError(f"{self._state_fpath}: training state does not fit this run ({str(e).splitlines()[0]}); {fix}") from None
        return True

    # ---- loop -------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        warmup = max(1, int(self.cfg.warmup_frac * self.n_steps))
        decay_start = int(self.cfg.decay_start_frac * self.n_steps)
        scale = min(1.0, (step + 1) / warmup)
        if step >= decay_start and self.n_steps > decay_start:
            scale *= max(0.0, (self.n_steps - step) / (self.n_steps - decay_start))
        return self.cfg.lr * scale

    def run(self) -> TrainResult:
        log_fpath = self.run_dpath / "metrics.jsonl"
        if self.dist.rank == 0:
            self.run_dpath.mkdir(parents=True, exist_ok=True)
            _truncate_log(log_fpath, self.step)
        bar = progress(total=self.n_steps * self.cfg.batch_size, initial=self.step * self.cfg.batch_size,
                       desc="train", unit="tok", disable=self.dist.rank != 0)
        from sae_core.log_sinks import open_sink

        self.sink = open_sink(self.cfg.log if self.dist.rank == 0 else "", self.run_dpath, dataclasses.asdict(self.cfg))
        batches = _Prefetcher(self._load_batch, self.step, self.n_steps, threaded=self.device.type == "cuda")
        try:
            self._steps(batches, bar, log_fpath)
        finally:
            batches.close()
            bar.close()
            self.sink.close()
        self._save_state()
        metrics = self.evaluate()
        self._check_diverged(0.0, metrics.get("fvu"))
        if self.dist.rank == 0:
            save(self.sae, self.run_dpath, train_cfg=self.cfg, store=self.store.summary(),
                 n_tokens_trained=self.n_steps * self.cfg.batch_size, metrics=metrics)
            if not self.cfg.keep_state:  # the run is finished: its resumable state is dead weight
                shutil.rmtree(self.run_dpath / STATE_DIR, ignore_errors=True)
        if self.dist.enabled:
            torch.distributed.barrier()
        return TrainResult(self.run_dpath, metrics, reused=False)

    def _steps(self, batches: _Prefetcher, bar, log_fpath: Path) -> None:
        autocast = self._autocast()
        t_last, tok_last = time.perf_counter(), self.step * self.cfg.batch_size
        while self.step < self.n_steps:
            x = batches.next().to(self.device, non_blocking=True).float()
            check_finite(x, f"{self.store.dpath} (batch {self.step})")
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            dead_mask = self.tokens_since_fired >= self.dead_after
            with autocast:
                out = self.model(x, dead_mask if self.sae_cfg.is_topk_family else None)
            out.loss.backward()
            self.sae.remove_parallel_grad()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.sae.normalize_decoder()
            self._update_dead(out.fired)
            self._maybe_resample(x, dead_mask)
            self.step += 1
            bar.update(self.cfg.batch_size)
            if self.step % self.cfg.log_every == 0 or self.step == self.n_steps:
                now = time.perf_counter()
                rate = (self.step * self.cfg.batch_size - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, self.step * self.cfg.batch_size
                row = self._log_row(out, x, rate)
                bar.set_postfix(loss=f"{row['loss']:.4f}", fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}", dead=f"{100 * row['dead_fraction']:.1f}%")
                if self.dist.rank == 0:
                    with open(log_fpath, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    self.sink.log(row, self.step)
            if self.step % self.ckpt_every_steps == 0 and self.step < self.n_steps:
                self._save_state()

    def _load_batch(self, step: int) -> torch.Tensor:
        """The step's rows, gathered from the memory-mapped shards; for a GPU in the stored dtype
        and in pinned memory, so the copy is asynchronous and the device converts."""
        if self.device.type != "cuda":
            return self.store.rows(self.batch_rows(step))
        return self.store.rows(self.batch_rows(step), stored_dtype=True).pin_memory()

    def _autocast(self):
        """bfloat16 autocast on CUDA by default; `precision=bfloat16` also runs it on CPU, which is
        how the tests exercise the GPU's mixed-precision code paths."""
        if resolved_precision(self.cfg) == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _check_diverged(self, loss: float, fvu: float | None = None) -> None:
        """A NaN/inf loss or weight, or a finite but exploded reconstruction (FVU > MAX_FVU), never
        becomes a checkpoint: stop with what to change."""
        finite = math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in self.sae.parameters())
        if not finite:
            raise DataError(f"training diverged at step {self.step} (loss {loss}, or weights NaN/inf); "
                            f"lower --lr (now {self.cfg.lr:g}) or check the activations")
        if fvu is not None and fvu > MAX_FVU:  # NaN: data without variance, where FVU means nothing
            raise DataError(f"training diverged at step {self.step} (loss {loss:.3g}, FVU {fvu:.3g}: the reconstruction "
                            f"is over {MAX_FVU:g}x worse than the mean); lower --lr (now {self.cfg.lr:g})")

    def _log_row(self, out, x: torch.Tensor, rate: float) -> dict:
        fvu = batch_fvu(x, out.x_hat.detach())
        spread = float((x - x.mean(0)).pow(2).sum())  # a batch of (nearly) equal rows has no FVU worth judging
        self._check_diverged(float(out.loss.detach()), fvu if spread > 1e-6 * float(x.pow(2).sum()) else None)
        return {
            "step": self.step, "n_tokens": self.step * self.cfg.batch_size,
            "loss": float(out.loss.detach()), "mse": float(out.recon.detach()), "fvu": fvu,
            "l0": float(out.l0.mean()), "dead_fraction": float((self.tokens_since_fired >= self.dead_after).float().mean()),
            "lr": self.lr_at(self.step - 1), "tokens_per_s": rate,
        }

    def _update_dead(self, fired: torch.Tensor) -> None:
        fired = fired.to(torch.int32)
        if self.dist.enabled:
            torch.distributed.all_reduce(fired, op=torch.distributed.ReduceOp.MAX)
        self.tokens_since_fired += self.cfg.batch_size
        self.tokens_since_fired[fired.bool()] = 0

    def _maybe_resample(self, x: torch.Tensor, dead_mask: torch.Tensor) -> None:
        """ReLU-family SAEs: re-seed dead latents towards badly reconstructed inputs."""
        if self.sae_cfg.is_topk_family or self.step >= self.n_steps // 2:
            return
        every = self.cfg.resample_every_tokens or max(self.cfg.batch_size, self.n_tokens_total // 8)
        every_steps = max(1, every // self.cfg.batch_size)
        if (self.step + 1) % every_steps or not dead_mask.any():
            return
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed * 7919 + self.step)
        resample_dead(self.sae, self.opt, x, dead_mask, gen)
        if self.dist.enabled:  # ranks resampled from different slices: rank 0's choice wins everywhere
            import torch.distributed as dist

            for param in self.sae.parameters():
                dist.broadcast(param.data, src=0)
                for value in self.opt.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.dim() > 0:
                        dist.broadcast(value, src=0)
        self.tokens_since_fired[dead_mask] = 0

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out metrics (or training rows when nothing is held out)."""
        self.sae.eval()
        start = self.n_train_rows if self.n_train_rows < self.store.n_tokens else 0
        acc = MetricsAccumulator(self.sae_cfg.d_sae)
        for _, x in self.store.iter_chunks(8192, start_row=start):
            x = x.to(self.device)
            check_finite(x, f"{self.store.dpath} (held-out rows)")
            if self.sae_cfg.arch == "topk":  # sparse: no dense [rows, d_sae] decode
                code = self.sae.encode_sparse(x)
                fired = torch.bincount(code.indices[code.values > 0], minlength=self.sae_cfg.d_sae)
                acc.update_counts(x * self.sae.input_scale, self.sae.decode_sparse(*code) * self.sae.input_scale, fired)
            else:
                z = self.sae.encode(x)
                acc.update(x * self.sae.input_scale, self.sae.decode(z) * self.sae.input_scale, z)
        self.sae.train()
        result = acc.result()
        # Few held-out tokens cannot show that a latent is dead; use the training-time counters.
        result["heldout_never_fired"] = result["dead_fraction"]
        result["dead_fraction"] = float((self.tokens_since_fired >= self.dead_after).float().mean())
        return result


@torch.no_grad()
def resample_dead(sae: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, dead_mask: torch.Tensor, gen: torch.Generator) -> None:
    """Point dead latents at inputs sampled by squared reconstruction error (Anthropic, 2023)."""
    dead = dead_mask.nonzero().squeeze(-1)
    x_n = x.float() * sae.input_scale
    err = x_n - (sae.decode(sae.encode(x)) * sae.input_scale)
    weights = err.pow(2).sum(-1).cpu()
    if float(weights.sum()) <= 0:
        return
    picks = torch.multinomial(weights, len(dead), replacement=True, generator=gen).to(x.device)
    directions = err[picks]
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead_mask
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0, device=x.device)
    sae.W_dec[dead] = directions
    sae.W_enc[:, dead] = directions.T * enc_norm * 0.2
    sae.b_enc[dead] = 0.0
    reset = [(sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))]
    if sae.cfg.arch == "jumprelu":  # the threshold that silenced them would silence them again
        sae.log_threshold[dead] = float(torch.tensor(sae.cfg.jumprelu_init_threshold).log())
        reset.append((sae.log_threshold, (dead,)))
    if sae.cfg.arch == "gated":
        sae.r_mag[dead], sae.b_mag[dead] = 0.0, 0.0
        reset += [(sae.r_mag, (dead,)), (sae.b_mag, (dead,))]
    for param, index in reset:
        state = opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][index] = 0.0


def _truncate_log(fpath: Path, step: int) -> None:
    """On resume, drop log lines written after the state we resume from."""
    if not fpath.exists():
        return
    keep = []
    for ln in fpath.read_text().splitlines():
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by a kill mid-write
    atomic_write_bytes(fpath, "".join(ln + "\n" for ln in keep).encode())  # a kill here keeps the old log whole


class _Prefetcher:
    """Loads batch step+1 on a thread while step runs (GPU training): the random gather from the
    mapped store (numpy copies release the GIL) overlaps the device's work instead of stalling
    it. On a CPU the two would share the same cores, so batches load in line there."""

    def __init__(self, load, first: int, stop: int, threaded: bool):
        self._load, self._next, self._stop = load, first, stop
        self._pool, self._future = None, None
        if threaded:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="saescope-batches")
            self._submit()

    def _submit(self) -> None:
        self._future = self._pool.submit(self._load, self._next) if self._next < self._stop else None
        self._next += 1

    def next(self) -> torch.Tensor:
        if self._pool is None:
            self._next += 1
            return self._load(self._next - 1)
        batch = self._future.result()
        self._submit()
        return batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def resolved_precision(cfg: TrainConfig) -> str:
    """The run's precision with `auto` resolved; part of the run's identity, so a run begun in
    one precision is never resumed in the other."""
    return resolve_precision(cfg.precision, distributed.pick_device(cfg.device))


def _pick_device(name: str) -> torch.device:
    device = torch.device(distributed.pick_device(name))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA GPU is available; use --device cpu")
        torch.cuda.set_device(device)
    return device
