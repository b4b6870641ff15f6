"""The served index follows its file: a replaced or rewritten index is reopened, checked and
swapped in by a background thread while requests keep using the last good one.

Each request stats the file (one syscall); when the stamp differs from the one last seen, a
reload starts unless one is running. The reload waits for the file to stop changing (a copy
under way), opens it with the full startup checks, and only then swaps it in. A file that fails
the checks is refused: the last good index keeps serving and `problem` says why, which /health
reports. Every worker process does this on its own, so all of them switch within a request or
two of the change. The old Index is not closed: requests still using it finish, and it is
freed with its last reference. Its cache goes with it, so nothing stale survives a switch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.db import FileStamp, Index, file_stamp
from app.errors import IndexSchemaError

log = logging.getLogger("saescope.app")
SETTLE_S = 0.2
"""A changed file must keep the same stamp this long before it is opened (copies in progress)."""
MAX_SETTLE_S = 60.0


class IndexWatch:
    """Holds the Index being served and swaps it when its file changes."""

    def __init__(self, path: Path, on_swap: Callable[[Index], None] | None = None) -> None:
        self.path = Path(path)
        self.current = Index(self.path)  # a bad file at startup fails here, with its message
        self.problem: str | None = None
        self.on_swap = on_swap
        self._seen: FileStamp | None = self.current.stamp
        self._lock = threading.Lock()
        self._reloading = False

    def get(self) -> Index:
        """The index to serve this request with; notices a changed file (one stat call)."""
        if file_stamp(self.path) != self._seen:
            self._start_reload()
        return self.current

    def health_problem(self) -> str | None:
        """Why the server is unhealthy: a refused replacement, or a read that failed."""
        return self.problem or self.current.damaged

    def _start_reload(self) -> None:
        with self._lock:
            if self._reloading:
                return
            self._reloading = True
        threading.Thread(target=self._reload, name="index-reload", daemon=True).start()

    def _reload(self) -> None:
        try:
            while not self._try_once():
                pass
        except Exception:  # the reload thread must never die silently with _reloading stuck
            log.exception("index reload failed")
        finally:
            with self._lock:
                self._reloading = False

    def _try_once(self) -> bool:
        """One attempt; False when the file changed while it was being checked (try again)."""
        stamp = self._settled_stamp()
        if stamp is None:
            self._refuse(None, f"index file {self.path} is missing; still serving the last good index")
            return True
        try:
            new = Index(self.path)
        except IndexSchemaError as exc:
            self._refuse(stamp, f"{exc}; still serving the last good index")
            return True
        if new.stamp != stamp or file_stamp(self.path) != stamp:
            new.close()
            return False
        self.current, self.problem, self._seen = new, None, stamp
        log.info("index reloaded: %s (inputs_hash %s)", self.path, new.inputs_hash)
        if self.on_swap is not None:
            self.on_swap(new)
        return True

    def _refuse(self, stamp: FileStamp | None, problem: str) -> None:
        self.problem, self._seen = problem, stamp
        log.warning("index not reloaded: %s", problem)

    def _settled_stamp(self) -> FileStamp | None:
        """The file's stamp once two looks SETTLE_S apart agree (or after MAX_SETTLE_S)."""
        stamp = file_stamp(self.path)
        deadline = time.monotonic() + MAX_SETTLE_S
        while time.monotonic() < deadline:
            time.sleep(SETTLE_S)
            again = file_stamp(self.path)
            if again == stamp:
                return stamp
            stamp = again
        return stamp

    def close(self) -> None:
        self.current.close()
