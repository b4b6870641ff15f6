"""`saescope verify PATH`: read every byte of a store or checkpoint and compare it with the
SHA-256 its manifest recorded when it was written.

Reuse (`extract`, `train`) checks only sizes and headers, which is cheap; this is the slow,
complete check for a copied, restored or suspicious folder. A mismatch is a one-line error, exit 2.
"""

from __future__ import annotations

from pathlib import Path

from sae_core.errors import FormatError


def verify(path: Path) -> str:
    """A one-line summary of what was verified; the first problem found is a FormatError."""
    from sae_core.formats import detect

    if path.is_dir() and (path / "manifest.json").is_file():
        from sae_core.store import verify_store

        return verify_store(path)
    found = detect(path)
    if found is not None and found.format == "saescope":
        from sae_core.checkpoint import verify as verify_checkpoint

        return verify_checkpoint(found.target)
    raise FormatError(f"{path}: not an activation store or a saescope checkpoint folder; "
                      "`saescope verify` checks those (other files: `saescope info`)")
