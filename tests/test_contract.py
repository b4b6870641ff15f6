"""docs/data-contract.md is normative: its version, tables, columns and keys match what the code writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from precompute.extract import ExtractConfig, extract
from precompute.index_schema import DERIVED, TABLES
from sae_core.contract import FORMAT_SINCE, SCHEMA_VERSION

DOC = (Path(__file__).resolve().parents[1] / "docs" / "data-contract.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    nxt = DOC.find("\n## ", start + 3)
    return DOC[start : nxt if nxt > 0 else None]


def _first_column(section: str) -> list[str]:
    """Names in the first column of every markdown table row of a section (headers skipped)."""
    rows = re.findall(r"^\| ([^|]+?) \|", section, flags=re.M)
    return [r.strip() for r in rows if r.strip() not in ("key", "column", "table", "tensor", "---")]


def test_version_line_matches_the_code():
    assert re.search(r"\*\*Schema version: (\d+)\*\*", DOC).group(1) == str(SCHEMA_VERSION)
    import app.db

    assert (app.db.SCHEMA_VERSION, app.db.INDEX_FORMAT_SINCE) == (SCHEMA_VERSION, FORMAT_SINCE["index"])


def test_format_versions_per_kind_are_documented():
    documented = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", _section("Versions"), flags=re.M))
    assert {k: int(v) for k, v in documented.items()} == FORMAT_SINCE
    assert all(v <= SCHEMA_VERSION for v in FORMAT_SINCE.values())


def test_index_tables_and_typed_columns_are_documented_exactly():
    documented = {}
    for name, cols in re.findall(r"^\| (\w+) \| ([^|]+) \|", _section("Explorer index"), flags=re.M):
        if name in ("table",):
            continue
        documented[name] = [tuple(c.strip().split(" ", 1)) for c in cols.split(",")]
    assert documented == {name: list(cols) for name, cols in (TABLES | DERIVED).items()}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return extract(ExtractConfig(dataset="emoji:6", layer="blocks.15", tokens="patches", image_size=64, data_root=str(root)))


def test_dataset_manifest_and_samples_columns_are_documented(extracted):
    section = _section("Dataset")
    documented = set(_first_column(section))
    manifest = json.loads((extracted.dataset_dpath / "manifest.json").read_text())
    assert set(manifest) <= documented, set(manifest) - documented
    columns = pq.read_schema(extracted.dataset_dpath / "samples.parquet").names
    assert set(columns) <= documented, set(columns) - documented


def test_store_manifest_keys_and_tensors_are_documented(extracted):
    section = _section("Activation store")
    documented = set(_first_column(section))
    manifest = json.loads((extracted.store_dpath / "manifest.json").read_text())
    assert set(manifest) <= documented, set(manifest) - documented
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["grid"] == [2, 2]
    from safetensors import safe_open

    with safe_open(str(extracted.store_dpath / manifest["shards"][0]["file"]), "pt") as f:
        assert set(f.keys()) == {"acts", "sample_ids"} <= documented


def test_atomic_writes_honour_the_umask(tmp_path):
    """mkstemp creates 0600 files; outputs must be readable by others the way plain writes are."""
    import os

    from sae_core.contract import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
