"""Dataset sources: where samples come from (image folders, tables, WebDataset tar shards,
Hugging Face `save_to_disk` folders, text corpora, WordNet definitions, packaged emoji).

A source lists `SampleRecord`s (stable order = stable sample ids) and loads one sample's input
on demand, so extraction can stream datasets of any size. Unreadable images make `load` raise
OSError (PIL's UnidentifiedImageError is one) or ValueError; `prepare_dataset` skips and lists them.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sae_core.errors import DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")
WORDNET_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object noun.person "
    "noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
"""Lexicographer file names by `lex_filenum` (WordNet 3.0, lexnames(5WN))."""
TAR_CAPTION_EXTS = ("txt", "caption")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
"""WebDataset shards: plain tars are read with one `pread` per image; gzipped ones through one
gzip stream per shard and process, which extraction reads forwards (samples in order)."""
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


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
    draft_side: int | None = None
    """When set, JPEGs decode at the smallest DCT scale still >= this side (2-8x fewer pixels):
    `saescope extract --fast-decode` sets it to the model's input side."""

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
        return _open_rgb(self.root / self.records[i].source, self.draft_side)

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
        self._embedded = None
        if modality == "image" and _holds_image_bytes(rows.schema.field(main).type):
            # Hub-style Parquet: the image itself (bytes, or a {bytes, path} struct) is in the table
            self._embedded = rows.column(main).combine_chunks()
        columns = (caption_col, label_col) if self._embedded is not None else (main, caption_col, label_col)
        get = {c: rows.column(c).to_pylist() if c in cols else [None] * rows.num_rows for c in columns}
        self.records = []
        for i in range(rows.num_rows):
            if self._embedded is not None:
                self.records.append(SampleRecord(f"{self.table_fpath.name}#{i}", _str(get[caption_col][i]), _str(get[label_col][i])))
            elif modality == "image":
                self.records.append(SampleRecord(str(get[main][i]), _str(get[caption_col][i]), _str(get[label_col][i])))
            else:
                self.records.append(SampleRecord(f"{self.table_fpath.name}#{i}", _str(get[main][i]), _str(get[label_col][i])))

    def load(self, i: int):
        r = self.records[i]
        if self.modality == "text":
            return r.caption or ""
        if self._embedded is not None:
            return _open_rgb(self._embedded_image(i), self.draft_side)
        return _open_rgb(self.table_fpath.parent / r.source, self.draft_side)

    def _embedded_image(self, i: int):
        """Row i's image bytes (or the file its `path` names when `bytes` is null), ready for PIL."""
        value = self._embedded[i].as_py()
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data is None and path:
                return self.table_fpath.parent / path
            value = data
        if not value:
            raise ValueError(f"{self.records[i].source}: the row holds no image bytes")
        return io.BytesIO(value)

    def fingerprint(self) -> str:
        """The table's rows, plus the size and mtime of the table and of every image it names."""
        h = hashlib.sha256(super().fingerprint().encode())
        linked = self.modality == "image" and self._embedded is None
        files = [self.table_fpath] + ([self.table_fpath.parent / r.source for r in self.records] if linked else [])
        for fpath in files:
            try:
                st = os.stat(fpath)
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
        return h.hexdigest()


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


class WebDatasetSource(Source):
    """WebDataset tar shards (the img2dataset / CC3M layout): members grouped into samples by key.

    The key is the member path up to the first dot of its file name (`dir/000123.jpg` ->
    `dir/000123`); `.jpg/.jpeg/.png/.webp` is the image, `.txt` the caption, `.cls` the label.
    Shards (`.tar`, `.tar.gz`, `.tgz`) are scanned once and each image's byte offset is kept, so
    `load` is one read (for gzipped shards, a forward seek in the shard's gzip stream). Order: shard order as given (brace expansion order, or sorted
    names in a folder), then member order. Keys without an image stay as records whose `load`
    raises ValueError, so `prepare_dataset` counts them as skipped.
    """

    def __init__(self, shards: list[Path], name: str):
        if not shards:
            raise DataError(f"{name}: no .tar shards found")
        missing = [str(p) for p in shards if not p.is_file()]
        if missing:
            raise DataError(f"{name}: shard(s) not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        self.shards, self.name = [p.resolve() for p in shards], name
        parent = os.path.commonpath([str(p.parent) for p in self.shards])
        self.shard_names = [os.path.relpath(p, parent) for p in self.shards]
        self.records = []
        self._where: list[tuple[int, int, int] | None] = []
        """(shard index, data offset, size) of each record's image, None when it has none."""
        for si, shard in enumerate(self.shards):
            self._scan(si, shard)
        if not self.records:
            raise DataError(f"{name}: the shards hold no samples")
        self._fds: dict[int, int] = {}

    def _scan(self, si: int, shard: Path) -> None:
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(shard, mode="r:gz" if _gzipped(shard) else "r:") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    dname, _, base = m.name.rpartition("/")
                    if "." not in base or base.startswith("."):
                        continue
                    stem, ext = base.split(".", 1)
                    key, ext = (f"{dname}/{stem}" if dname else stem), ext.lower()
                    entry = samples.setdefault(key, {})
                    if ext in ("jpg", "jpeg", "png", "webp") and "image" not in entry:
                        entry["image"] = (m.offset_data, m.size, ext)
                    elif (ext in TAR_CAPTION_EXTS and "caption" not in entry) or ext == "cls":
                        f = tf.extractfile(m)
                        text = f.read().decode("utf-8", errors="replace").strip() if f else ""
                        entry["label" if ext == "cls" else "caption"] = text or None
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{shard}: cannot read tar shard ({e})") from None
        for key, entry in samples.items():
            image = entry.get("image")
            ext = image[2] if image else "missing-image"
            self.records.append(SampleRecord(f"{self.shard_names[si]}/{key}.{ext}", entry.get("caption"), entry.get("label")))
            self._where.append((si, image[0], image[1]) if image else None)

    def load(self, i: int) -> Image.Image:
        where = self._where[i]
        if where is None:
            raise ValueError(f"{self.records[i].source}: sample has no image member")
        si, offset, size = where
        if _gzipped(self.shards[si]):
            return _open_rgb(io.BytesIO(self._read_gz(si, offset, size)), self.draft_side)
        fd = self._fds.get(si)
        if fd is None:
            fd = self._fds[si] = os.open(self.shards[si], os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.records[i].source}: truncated shard")
        return _open_rgb(io.BytesIO(data), self.draft_side)

    def _read_gz(self, si: int, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` of shard si's uncompressed stream (forward seeks are cheap)."""
        import gzip

        streams = self.__dict__.setdefault("_gz", {})
        stream = streams.get(si)
        if stream is None:
            stream = streams[si] = gzip.open(self.shards[si], "rb")
        stream.seek(offset)
        data = stream.read(size)
        if len(data) != size:
            raise OSError(f"truncated shard {self.shards[si]}")
        return data

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        for p in self.shards:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def __getstate__(self) -> dict:  # data-loader workers open their own file descriptors
        state = dict(self.__dict__)
        state["_fds"] = {}
        state["_gz"] = {}
        return state

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


class HFDiskSource(Source):
    """A Hugging Face `datasets` folder written by `save_to_disk` (a Dataset, or a DatasetDict:
    its `train` split, else its first split; point at a split's sub-folder to choose).

    The image column is `image_col` if present, else the first `Image` feature; without one the
    dataset is text, read from `caption_col`, `text` or `sentence` (else the first string column).
    Labels come from `label_col` or `labels`; ClassLabel integers become their names.
    """

    def __init__(self, root: str | Path, image_col: str = "image", caption_col: str = "caption", label_col: str = "label",
                 *, loaded=None, name: str | None = None):
        """`loaded`: a `datasets.Dataset` already opened from `root` (a cached hub dataset,
        `precompute.sources_hf`), named `name` in sample sources and the dataset id."""
        try:
            import datasets
        except ImportError:
            raise DataError(f"{root}: a Hugging Face dataset folder needs `pip install datasets`") from None
        self.root = Path(root)
        self.name = name or str(self.root.resolve())
        try:
            ds = datasets.load_from_disk(str(self.root)) if loaded is None else loaded
        except Exception as e:  # datasets raises FileNotFoundError, ValueError, arrow errors...
            raise DataError(f"{root}: cannot load the Hugging Face dataset ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self.split = None
        if isinstance(ds, datasets.DatasetDict):
            if not ds:
                raise DataError(f"{root}: the DatasetDict has no splits")
            self.split = "train" if "train" in ds else next(iter(ds))
            ds = ds[self.split]
            self.name = f"{self.name}[{self.split}]"
        features = ds.features
        self.image_col = image_col if isinstance(features.get(image_col), datasets.Image) else next(
            (c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        self.modality = "image" if self.image_col else "text"
        strings = [c for c, f in features.items() if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")]
        caption = next((c for c in (caption_col, "caption", "text", "sentence") if c in strings), None)
        if caption is None and self.modality == "text":
            caption = strings[0] if strings else None
            if caption is None:
                raise DataError(f"{root}: no image column and no text column; columns are {', '.join(features)}")
        label = next((c for c in (label_col, "labels") if c in features), None)
        if ds._indices is not None:
            ds = ds.flatten_indices()
        table = ds.data
        captions = table.column(caption).to_pylist() if caption else [None] * ds.num_rows
        labels = table.column(label).to_pylist() if label else [None] * ds.num_rows
        if label and isinstance(features[label], datasets.ClassLabel):
            names = features[label].names
            labels = [None if v is None or v < 0 else names[v] for v in labels]
        prefix = name or self.root.name
        self.records = [SampleRecord(f"{prefix}#{i}", _str(c), _str(lb)) for i, (c, lb) in enumerate(zip(captions, labels, strict=True))]
        if not self.records:
            raise DataError(f"{root}: the dataset has no rows")
        self._ds = ds.select_columns([self.image_col]).cast_column(self.image_col, datasets.Image(decode=False)) if self.image_col else None
        self._fingerprint = getattr(ds, "_fingerprint", "")

    def load(self, i: int):
        if self._ds is None:
            return self.records[i].caption or ""
        value = self._ds[i][self.image_col]
        if value is None:
            raise ValueError(f"{self.records[i].source}: no image")
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if value.get("bytes"):
            return _open_rgb(io.BytesIO(value["bytes"]), self.draft_side)
        if value.get("path"):
            path = Path(value["path"])
            return _open_rgb(path if path.is_absolute() else self.root / path, self.draft_side)
        raise ValueError(f"{self.records[i].source}: image has neither bytes nor path")

    def fingerprint(self) -> str:
        h = hashlib.sha256((super().fingerprint() + self._fingerprint).encode())
        for p in sorted(self.root.rglob("*.arrow")):
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()


class WordNetSource(Source):
    """WordNet 3.0 synset definitions (Debian `wordnet-base`): a real, labelled text corpus.

    Each sample is one synset's definition (the gloss without its quoted examples); the label is
    its lexicographer file (`noun.animal`, `verb.motion`, ...: 45 classes); the source is
    `wordnet:<pos>:<offset>`. Order is fixed by a hash of the source, so any first N is a
    representative sample over parts of speech and lexicographer files, and never changes.
    """

    modality = "text"

    def __init__(self, limit: int = 0, root: Path = WORDNET_DIR):
        files = [root / f"data.{pos}" for pos in WORDNET_POS]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"WordNet data files are missing ({', '.join(missing)}); install them with `apt-get install wordnet-base`")
        self.name = "wordnet-3.0"
        keyed = []
        for pos, fpath in zip(WORDNET_POS, files, strict=True):
            with open(fpath, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("  ") or "|" not in line:
                        continue  # licence header
                    head, gloss = line.split("|", 1)
                    fields = head.split()
                    offset, lexnum = fields[0], int(fields[1])
                    definition = _wordnet_definition(gloss)
                    if not definition:
                        continue
                    source = f"wordnet:{pos}:{offset}"
                    label = WORDNET_LEXNAMES[lexnum] if lexnum < len(WORDNET_LEXNAMES) else f"lex.{lexnum:02d}"
                    keyed.append((hashlib.sha1(source.encode()).digest(), SampleRecord(source, definition, label)))
        keyed.sort(key=lambda kv: kv[0])
        self.records = [r for _, r in keyed]
        if limit:
            self.records = self.records[:limit]

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
    """Open a dataset spec.

    - `emoji` / `emoji:N`: packaged Noto emoji; `emoji-styles[:N]` / `emoji:noto,google,twitter[:N]`:
      the same emoji in several art styles (precompute.sources_emoji); `wordnet` / `wordnet:N`: WordNet definitions;
    - `text:FILE`: one text sample per line;
    - a table file (.csv .tsv .parquet .jsonl .json) with image paths relative to it, or (Hub-style
      Parquet) the images themselves as bytes or `{bytes, path}` structs;
    - WebDataset shards: `shards-{00000..00009}.tar` (brace ranges and `{a,b}` lists, globs), one
      `.tar`, or a folder whose top level holds `.tar` files; `.tar.gz`/`.tgz` alike;
    - a Hugging Face `save_to_disk` folder (holds `dataset_info.json`/`state.json` or `dataset_dict.json`);
    - `hf:owner/name[:split]` or `hf:owner/name:config:split`: a hub dataset already in the local
      `datasets` cache, read without the network (precompute.sources_hf);
    - any other folder: images, labelled by their first sub-folder.

    Table keyword arguments (`image_col`, `caption_col`, `label_col`) also apply to HF folders.
    """
    if spec == "emoji-styles" or spec.startswith("emoji-styles:") or (spec.startswith("emoji:") and not spec[6:].isdigit()):
        from precompute.sources_emoji import open_emoji_styles

        try:
            return open_emoji_styles(spec)
        except DataError as e:  # `emoji:abc` or `emoji:-5` is as likely a mistyped emoji:N as a style list
            raise DataError(f"{spec}: use emoji, emoji:N (the first N emoji) or emoji:STYLES[:N] ({e})") from None
    if spec == "emoji" or spec.startswith("emoji:"):
        arg = spec.split(":", 1)[1] if ":" in spec else "0"
        return EmojiSource(limit=int(arg))
    if spec == "wordnet" or spec.startswith("wordnet:"):
        arg = spec.split(":", 1)[1] if ":" in spec else "0"
        if not arg.isdigit():
            raise DataError(f"{spec}: use wordnet or wordnet:N (the first N definitions)")
        return WordNetSource(limit=int(arg))
    if spec.startswith("text:"):
        return TextLinesSource(spec[5:])
    if spec.startswith("hf:"):
        from precompute.sources_hf import open_cached_hub_dataset

        return open_cached_hub_dataset(spec, **{k: v for k, v in kwargs.items() if k in ("image_col", "caption_col", "label_col")})
    path = Path(spec)
    if path.is_dir():
        if any((path / m).is_file() for m in HF_MARKERS):
            hf_kwargs = {k: v for k, v in kwargs.items() if k in ("image_col", "caption_col", "label_col")}
            return HFDiskSource(path, **hf_kwargs)
        tars = sorted(p for p in path.iterdir() if p.name.lower().endswith(TAR_SUFFIXES) and p.is_file())
        if tars:
            return WebDatasetSource(tars, str(path.resolve()))
        return ImageFolderSource(path)
    if spec.lower().endswith(TAR_SUFFIXES):
        shards: list[Path] = []
        for item in expand_braces(spec):
            if glob.has_magic(item):
                shards.extend(Path(p) for p in sorted(glob.glob(item)))
            else:
                shards.append(Path(item))
        return WebDatasetSource(shards, str(path.resolve()) if path.is_file() else str(path.absolute()))
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
        return TableSource(path, **kwargs)
    raise DataError(
        f"{spec}: not a dataset; give an image folder, a table (.csv/.tsv/.parquet/.jsonl), WebDataset shards "
        "(x-{00000..00009}.tar, a .tar or a folder of them), a Hugging Face save_to_disk folder, hf:owner/name (cached), "
        "text:FILE, wordnet or emoji"
    )


def expand_braces(spec: str) -> list[str]:
    """Shell-style brace expansion: `{00000..00009}` (zero padding kept) and `{a,b,c}`, nested left to right."""
    m = re.search(r"\{([^{}]*)\}", spec)
    if not m:
        return [spec]
    head, body, tail = spec[: m.start()], m.group(1), spec[m.end():]
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        a, b = rng.group(1), rng.group(2)
        padded = any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in (a, b))
        width = max(len(a), len(b)) if padded else 0
        step = 1 if int(b) >= int(a) else -1
        items = [str(n).zfill(width) for n in range(int(a), int(b) + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [x for item in items for x in expand_braces(head + item + tail)]


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


def _gzipped(shard: Path) -> bool:
    return shard.name.lower().endswith((".tar.gz", ".tgz"))


def _holds_image_bytes(arrow_type) -> bool:
    """A binary column, or the `{bytes, path}` struct of Hugging Face's `Image` feature."""
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return True
    return pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0


def _wordnet_definition(gloss: str) -> str:
    """The definition part of a WordNet gloss: drop the quoted examples that follow `; "`."""
    text = gloss.strip()
    cut = text.find('"')
    if cut >= 0:
        text = text[:cut]
    return text.strip().rstrip(";").strip()


MAX_MEGAPIXELS_ENV = "SAESCOPE_MAX_MEGAPIXELS"
DEFAULT_MAX_MEGAPIXELS = 50.0


def max_pixels() -> int:
    """The pixel cap (width x height) above which images are skipped: `SAESCOPE_MAX_MEGAPIXELS`
    (default 50), read on each call so data-loader processes see the caller's setting."""
    text = os.environ.get(MAX_MEGAPIXELS_ENV, "")
    try:
        mp = float(text) if text else DEFAULT_MAX_MEGAPIXELS
    except ValueError:
        mp = -1.0
    if not mp > 0 or mp == float("inf"):
        raise DataError(f"{MAX_MEGAPIXELS_ENV}={text!r} must be a positive number of megapixels (default {DEFAULT_MAX_MEGAPIXELS:g})")
    return int(mp * 1_000_000)


def _open_rgb(fpath, draft_side: int | None = None) -> Image.Image:
    """Decode fully (so truncated files fail here, not later) and convert to RGB; with
    `draft_side`, a JPEG decodes at a reduced scale whose sides stay >= draft_side. An image over
    the pixel cap raises ValueError (skipped and listed) before it is decoded; Pillow's own
    decompression-bomb warning, several lines on stderr, is silenced: the cap replaces it."""
    cap = max_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(fpath)
    with im:
        if im.width * im.height > cap:
            raise ValueError(f"{im.width}x{im.height} pixels is over the {cap / 1e6:g} MP cap ({MAX_MEGAPIXELS_ENV})")
        size = im.size
        if draft_side and im.format == "JPEG":
            im.draft("RGB", (draft_side, draft_side))
        im.load()
        rgb = im.convert("RGB")
        rgb.info["original_size"] = size  # what samples.parquet records, even after a reduced decode
        return rgb


def _str(v) -> str | None:
    return None if v is None else str(v)
