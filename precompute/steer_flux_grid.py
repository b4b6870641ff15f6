"""A labelled image grid for steering sweeps: one row per edit set, one column per strength.

Every cell is `cell` pixels square (images are resized to fit), with a top band naming the
columns and a left band naming the rows, so the grid's size depends only on its shape:
`(LABEL_W + n_cols * cell, LABEL_H + n_rows * cell)`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sae_core.contract import atomic_write_bytes
from sae_core.errors import ConfigError

LABEL_W = 160
"""Width of the left band holding the row labels, in pixels."""
LABEL_H = 24
"""Height of the top band holding the column labels, in pixels."""
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """The label cut (with an ellipsis) to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def image_grid(rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str], col_labels: Sequence[str], cell: int) -> Image.Image:
    """Images in rows, each cell `cell` x `cell`, labelled along the top and the left."""
    n_cols = len(col_labels)
    if not rows or len(rows) != len(row_labels) or any(len(r) != n_cols for r in rows) or n_cols == 0:
        raise ConfigError(f"a grid needs {len(row_labels)} row(s) of {n_cols} image(s) each, one label per row and column")
    grid = Image.new("RGB", (LABEL_W + n_cols * cell, LABEL_H + len(rows) * cell), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for c, label in enumerate(col_labels):
        draw.text((LABEL_W + c * cell + 4, 6), _fit(label, draw, font, cell - 8), fill=INK, font=font)
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        top = LABEL_H + r * cell
        draw.text((4, top + cell // 2 - 6), _fit(label, draw, font, LABEL_W - 8), fill=INK, font=font)
        for c, im in enumerate(row):
            grid.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (LABEL_W + c * cell, top))
    return grid


def save_png(image: Image.Image, fpath: Path) -> None:
    """Write a PNG atomically: readers never see half an image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(Path(fpath), buf.getvalue())
