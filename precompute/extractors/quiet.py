"""Silence the model libraries' loading reports and download bars unless the user asks for them.

transformers prints a table of unexpected/missing weights when a tower is cut out of a combined
checkpoint (expected, and noise to a user), and transformers, diffusers and huggingface_hub
draw their own progress bars next to saescope's. Only libraries already installed are touched,
and every setting is restored on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator

LIBRARIES = ("transformers", "diffusers", "huggingface_hub")


@contextlib.contextmanager
def quiet_loaders(verbose: bool = False) -> Iterator[None]:
    """Errors only from the model libraries inside the block (everything when `verbose`)."""
    if verbose:
        yield
        return
    with contextlib.ExitStack() as stack:
        for name in LIBRARIES:
            if importlib.util.find_spec(name) is not None:
                stack.enter_context(_quiet(name))
        yield


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    if name != "huggingface_hub":
        # the library's own setter: its first import would otherwise reset a level set from outside
        lib = importlib.import_module(f"{name}.utils.logging")
        get_level, set_level = lib.get_verbosity, lib.set_verbosity
    else:
        logger = logging.getLogger(name)
        get_level, set_level = (lambda: logger.level), logger.setLevel
    level = get_level()
    set_level(logging.ERROR)
    restore_bars = _disable_bars(name)
    try:
        yield
    finally:
        set_level(level)
        restore_bars()


def _disable_bars(name: str):
    """Turn the library's progress bars off; returns how to turn them back on."""
    if name == "huggingface_hub":
        from huggingface_hub import utils

        was_disabled = utils.are_progress_bars_disabled()
        utils.disable_progress_bars()
        return (lambda: None) if was_disabled else utils.enable_progress_bars
    module = importlib.import_module(f"{name}.utils.logging")
    was_enabled = module.is_progress_bar_enabled()
    module.disable_progress_bar()
    return module.enable_progress_bar if was_enabled else (lambda: None)
