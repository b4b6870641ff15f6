"""One check for the numbers in every job's config, so `--lr nan` or `--log-every 0` is a
one-line error at construction instead of a traceback (or a silently useless run) later."""

from __future__ import annotations

import dataclasses
import math

from sae_core.errors import ConfigError


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
