"""Log levels for the `saescope` command: `--log-level`, `-q` (warnings and errors only) and `-v`
(debug) on every subcommand.

saescope's modules log through `logging.getLogger(__name__)` under the `precompute` and
`sae_core` loggers; the command sends those records to stderr as the bare message, the one-line
form users saw when these were prints. A command's result (the store it wrote, JSON, CSV) stays
on stdout and is not logging; progress bars stay tqdm; errors keep their one line and exit code
(`precompute.cli`). Used as a library, nothing is configured: warnings still reach stderr
through Python's last-resort handler and info stays silent.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sae_core.errors import ConfigError

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
LOGGERS = ("precompute", "sae_core")


def add_logging_options(sub: argparse._SubParsersAction) -> None:
    """`--log-level LEVEL`, `-q/--quiet` and `-v/--debug` on every subcommand (one dest, last flag wins)."""
    for parser in sub.choices.values():
        group = parser.add_argument_group("logging")
        group.add_argument("--log-level", dest="log_level", default=DEFAULT_LEVEL, choices=LEVELS,
                           help=f"messages shown on stderr: {', '.join(LEVELS)} (default: {DEFAULT_LEVEL})")
        group.add_argument("-q", "--quiet", dest="log_level", action="store_const", const="warning",
                           help="warnings and errors only (same as --log-level warning)")
        group.add_argument("-v", "--debug", dest="log_level", action="store_const", const="debug",
                           help="also debug messages (same as --log-level debug)")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record arrives (test capture, redirection), not
    the stream that existed when logging was set up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


def configure_logging(level: str | None):
    """Send saescope's log records at `level` and above to stderr as bare one-line messages.
    Returns a function that puts the loggers back as they were, so one command's level never
    leaks into the next in the same process (tests, notebooks calling `main`)."""
    name = (level or DEFAULT_LEVEL).lower()
    if name not in LEVELS:
        raise ConfigError(f"log level {level!r}; choose one of {', '.join(LEVELS)}")
    saved = []
    for logger_name in LOGGERS:
        logger = logging.getLogger(logger_name)
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        saved.append((logger, logger.level, handler))
        logger.addHandler(handler)
        logger.setLevel(getattr(logging, name.upper()))

    def restore() -> None:
        for logger, old_level, handler in saved:
            logger.removeHandler(handler)
            logger.setLevel(old_level)

    return restore
