"""Inputs of a live request, decoded defensively and exactly as extraction decodes them.

An upload is bytes from a stranger: its size is capped before reading, its pixel count before
decoding (decompression bombs), and a truncated or non-image file is a one-line error. Decoding
then follows `precompute.sources` (full decode, RGB), so an uploaded image gives what a
one-image dataset of the same file gives.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from precompute.sources import open_source
from sae_core.errors import DataError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
MAX_TEXT_CHARS = 2000


class InputError(DataError):
    """A request input that cannot be used (HTTP 400/413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LiveInput:
    """One decoded input: an RGB image or a text, and where it came from."""

    value: object
    kind: str
    """`image`, `text` or `sample`."""
    sample_id: int | None = None


def decode_image(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> RGB image, refusing empty, oversized, bomb, truncated and non-image inputs."""
    if not data:
        raise InputError("the uploaded file is empty; choose an image file (PNG, JPEG, WebP, GIF)")
    if len(data) > max_bytes:
        raise InputError(f"the upload is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB", status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size  # header only: nothing is decoded yet
            if w * h > max_pixels:
                raise InputError(f"the image is {w}x{h} = {w * h / 1e6:.0f} MP; the limit is {max_pixels / 1e6:.0f} MP", status=413)
            im.load()
            return im.convert("RGB")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"the image has far more pixels than the {max_pixels / 1e6:.0f} MP limit", status=413) from None
    except UnidentifiedImageError:
        raise InputError("the upload is not an image Pillow can read; use PNG, JPEG, WebP or GIF") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"the image could not be decoded ({str(e).splitlines()[0] if str(e) else 'truncated'}); "
                         "it may be truncated or damaged") from None


def check_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    text = text.strip()
    if not text:
        raise InputError("the text is empty; type some text to inspect")
    if len(text) > max_chars:
        raise InputError(f"the text has {len(text)} characters; the limit is {max_chars}", status=413)
    return text


_SOURCE_SPECS = {"emoji-noto": "emoji", "wordnet-3.0": "wordnet"}


class DatasetSamples:
    """A dataset folder's samples, loaded from their original source (full resolution)."""

    def __init__(self, dataset_dpath, source_name: str):
        self.source = open_source(_SOURCE_SPECS.get(source_name, source_name))
        self.kept = pq.read_table(dataset_dpath / "samples.parquet", columns=["source_index"]).column(0).to_pylist()

    def __len__(self) -> int:
        return len(self.kept)

    def load(self, sample_id: int):
        if not 0 <= sample_id < len(self.kept):
            raise InputError(f"sample {sample_id} does not exist; this dataset has samples 0..{len(self.kept) - 1}", status=404)
        return self.source.load(self.kept[sample_id])
