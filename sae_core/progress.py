"""Progress bars with rates for long jobs (tqdm), quiet when not attached to a terminal in tests."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(**kwargs) -> tqdm:
    """A tqdm bar; `SAESCOPE_PROGRESS=0` silences every bar (CI logs, tests)."""
    if os.environ.get("SAESCOPE_PROGRESS") == "0":
        kwargs["disable"] = True
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("unit_scale", True)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(**kwargs)
