"""Checks shared by every job's config, so `--lr nan`, `--log-every 0` or `--precision half` is a
one-line error at construction instead of a traceback (or a silently useless run) later."""

from __future__ import annotations

import dataclasses
import math

import torch

from sae_core.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(value: str, device: torch.device | str, name: str = "precision") -> str:
    """Check a precision choice and resolve `auto`: bfloat16 on CUDA (fp32 wastes its tensor
    cores), float32 elsewhere. `device` is the one the job runs on (already picked)."""
    if value not in PRECISIONS:
        raise ConfigError(f"{name}={value!r}; choose one of {', '.join(PRECISIONS)}")
    if value != "auto":
        return value
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


def is_count(value, low: int = 0) -> bool:
    """An int (not a bool, which JSON and Python also count as one) of at least `low`: how the
    readers check the integers of hand-editable manifests."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def short_repr(value) -> str:
    """A found value for an error line, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"port={port} must be between 1 and 65535")
    return port


def check_numbers(cfg, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Every float field of the dataclass `cfg` finite; `positive` fields > 0, `non_negative` >= 0."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value} must be a finite number")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be positive")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must not be negative")


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers {workers}: pass 1 or more (uvicorn worker processes)")
    return workers


def check_host(host: str) -> str:
    """An address (or host name) of this machine that a server can listen on: a bad `--host` is one
    line naming the value and what to pass instead, not uvicorn's log of a failed bind."""
    import errno
    import socket

    hint = "pass 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"--host {host!r} is neither an IP address nor a known host name; {hint}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr[0], 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host {host!r} is not an address of this machine; {hint}") from None
    return host
