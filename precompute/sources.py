"""Dataset sources: where samples come from (image folders, tables, text corpora, packaged emoji).

A source lists `SampleRecord`s (stable order = stable sample ids) and loads one sample's input
on demand, so extraction can stream datasets of any size.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sae_core.errors import DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")


@dataclass(frozen=True)
class SampleRecord:
    source: str
    """Path relative to the source root, or `name#row`."""
    caption: str | None = None
    label: str | None = None


class Source:
    """A list of samples plus a loader; subclasses fill `records` and implement `load`."""

    name: str
    modality: str = "image"
    records: list[SampleRecord]

    def load(self, i: int):
        """The i-th sample's input: a PIL RGB image, or a string for text sources."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes when the listed files or their contents (by size and mtime) change."""
        h = hashlib.sha256(self.name.encode())
        for r in self.records:
            h.update(json.dumps([r.source, r.caption, r.label]).encode())
        return h.hexdigest()


class ImageFolderSource(Source):
    """Images under a folder; the first sub-folder name is the label when there are sub-folders."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{root}: not a folder of images")
        self.name = str(self.root.resolve())
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise DataError(f"{root}: no images found ({', '.join(sorted(IMAGE_EXTS))})")
        self.records = []
        for p in files:
            rel = p.relative_to(self.root)
            label = rel.parts[0] if len(rel.parts) > 1 else None
            self.records.append(SampleRecord(str(rel), None, label))

    def load(self, i: int) -> Image.Image:
        return _open_rgb(self.root / self.records[i].source)

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        for r in self.records:
            st = os.stat(self.root / r.source)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()


class TableSource(Source):
    """CSV/TSV/Parquet/JSONL with an image-path (or text) column and optional caption/label."""

    def __init__(self, table: str | Path, image_col: str = "image", caption_col: str = "caption",
                 label_col: str = "label", modality: str = "image"):
        import pyarrow as pa

        self.table_fpath = Path(table)
        if not self.table_fpath.is_file():
            raise DataError(f"{table}: no such table file")
        self.name, self.modality = str(self.table_fpath.resolve()), modality
        rows = _read_table(self.table_fpath)
        assert isinstance(rows, pa.Table)
        cols = set(rows.column_names)
        main = image_col if modality == "image" else (caption_col if caption_col in cols else image_col)
        if main not in cols:
            raise DataError(f"{table}: no column {main!r}; columns are {', '.join(sorted(cols))}")
        get = {c: rows.column(c).to_pylist() if c in cols else [None] * rows.num_rows for c in (main, caption_col, label_col)}
        self.records = []
        for i in range(rows.num_rows):
            if modality == "image":
                self.records.append(SampleRecord(str(get[main][i]), _str(get[caption_col][i]), _str(get[label_col][i])))
            else:
                self.records.append(SampleRecord(f"{self.table_fpath.name}#{i}", _str(get[main][i]), _str(get[label_col][i])))

    def load(self, i: int):
        r = self.records[i]
        if self.modality == "text":
            return r.caption or ""
        return _open_rgb(self.table_fpath.parent / r.source)


class TextLinesSource(Source):
    """A text corpus: one caption per non-empty line."""

    modality = "text"

    def __init__(self, fpath: str | Path):
        self.fpath = Path(fpath)
        if not self.fpath.is_file():
            raise DataError(f"{fpath}: no such text file")
        self.name = str(self.fpath.resolve())
        lines = [ln.strip() for ln in self.fpath.read_text(errors="replace").splitlines()]
        self.records = [SampleRecord(f"{self.fpath.name}#{i}", ln) for i, ln in enumerate(lines) if ln]

    def load(self, i: int) -> str:
        return self.records[i].caption or ""


class EmojiSource(Source):
    """Noto colour emoji (Debian fonts-noto-color-emoji) with Unicode names and sub-groups as labels.

    Real, labelled images that install offline: the demo's dataset.
    """

    def __init__(self, size: int = 109, limit: int = 0):
        for need, pkg in ((EMOJI_FONT, "fonts-noto-color-emoji"), (EMOJI_TEST, "unicode-data")):
            if not need.exists():
                raise DataError(f"{need} is missing; install it with `apt-get install {pkg}`")
        self.name, self.size = "emoji-noto", size
        self.records = []
        group = subgroup = None
        for line in EMOJI_TEST.read_text().splitlines():
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif "; fully-qualified" in line and group not in ("Component", "Flags"):
                codes = [int(c, 16) for c in line.split(";")[0].split()]
                if len([c for c in codes if c != 0xFE0F]) != 1:
                    continue  # sequences need a shaping engine Pillow may lack
                char = "".join(chr(c) for c in codes)
                name = line.split("#", 1)[1].split(" ", 3)[-1].strip() if "#" in line else unicodedata.name(char[0], "emoji")
                self.records.append(SampleRecord(f"U+{codes[0]:04X}", name, subgroup))
        if limit:
            self.records = self.records[:limit]
        self._font = None

    def load(self, i: int) -> Image.Image:
        from PIL import ImageDraw, ImageFont

        if self._font is None:
            self._font = ImageFont.truetype(str(EMOJI_FONT), size=self.size)
        char = chr(int(self.records[i].source[2:], 16))
        canvas = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(canvas).text((0, 0), char, font=self._font, embedded_color=True)
        bbox = Image.eval(canvas, lambda v: 255 - v).getbbox() or (0, 0, 136, 128)
        crop = canvas.crop(bbox)
        side = max(crop.size) + 8
        out = Image.new("RGB", (side, side), "white")
        out.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
        return out


def open_source(spec: str, **kwargs) -> Source:
    """`emoji`, `text:FILE`, a table file (.csv .tsv .parquet .jsonl) or an image folder."""
    if spec == "emoji" or spec.startswith("emoji:"):
        limit = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return EmojiSource(limit=limit)
    if spec.startswith("text:"):
        return TextLinesSource(spec[5:])
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path)
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
        return TableSource(path, **kwargs)
    raise DataError(f"{spec}: not a dataset; give an image folder, a table (.csv/.tsv/.parquet/.jsonl), text:FILE or emoji")


def _read_table(fpath: Path):
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    suffix = fpath.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(fpath)
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(fpath)
        delimiter = "\t" if suffix == ".tsv" else ","
        return pacsv.read_csv(fpath, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except Exception as e:  # pyarrow raises several unrelated types for malformed files
        raise DataError(f"{fpath}: cannot read table ({str(e).splitlines()[0]})") from None


def _open_rgb(fpath: Path) -> Image.Image:
    with Image.open(fpath) as im:
        im.load()
        return im.convert("RGB")


def _str(v) -> str | None:
    return None if v is None else str(v)
