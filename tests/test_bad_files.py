"""Bad input files: every reader answers with a one-line saescope error that names the file and the
problem (the CLI prints it and exits 2), never a traceback from deep inside."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from precompute.cli import main
from precompute.info import describe
from sae_core.checkpoint import CFG_FILE, WEIGHTS_FILE, load
from sae_core.contract import SCHEMA_VERSION
from sae_core.errors import DataError, FormatError
from sae_core.store import ActivationStore, StoreWriter
from tests.precompute_helpers import make_dataset, make_sae, make_store

SHARD = "shard-00000.safetensors"


def _edit_json(fpath: Path, **changes) -> None:
    """Set keys of a JSON file; a value of ... deletes the key."""
    obj = json.loads(fpath.read_text())
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    fpath.write_text(json.dumps(obj))


def _raises(exc: type[Exception], fpath: Path, problem: str, call) -> str:
    """`call()` raises `exc` with a one-line message naming `fpath` and matching `problem`."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert str(fpath) in message and "\n" not in message, message
    assert re.search(problem, message), message
    return message


@pytest.fixture
def store(tmp_path) -> Path:
    """40 samples of one token in two shards of 20."""
    return make_store(tmp_path, np.arange(120, dtype=np.float32).reshape(40, 3), shard_samples=20)


# ---- activation store: manifest.json ----------------------------------------------------------------
@pytest.mark.parametrize(("changes", "problem"), [
    ({"d_in": ...}, r"'d_in' must be a positive integer, it is missing"),
    ({"dtype": ...}, r"'dtype' must be one of float32, float16, bfloat16, it is missing"),
    ({"shards": ...}, r"'shards' must be a list of shard objects, it is missing"),
    ({"tokens_per_sample": ...}, r"'tokens_per_sample' must be a positive integer, it is missing"),
    ({"d_in": "abc"}, r"'d_in' must be a positive integer, found 'abc'"),
    ({"tokens_per_sample": 0}, r"'tokens_per_sample' must be a positive integer, found 0"),
    ({"dtype": "int8"}, r"'dtype' must be one of"),
    ({"grid": [1]}, r"'grid' must be null or \[h, w\] with h\*w == tokens_per_sample \(1\), found \[1\]"),
    ({"grid": [2, 3]}, r"'grid' must be null or \[h, w\]"),
    ({"shards": "x"}, r"'shards' must be a list of shard objects, found 'x'"),
    ({"shards": [{"n_samples": 20, "first_sample": 0}]}, r"shards\[0\] must be an object with \"file\""),
    ({"dataset_dpath": 7}, r"'dataset_dpath' must be a string, found 7"),
])
def test_malformed_store_manifest(store, changes, problem):
    _edit_json(store / "manifest.json", **changes)
    message = _raises(FormatError, store / "manifest.json", problem, lambda: ActivationStore(store))
    assert "re-run `saescope extract`" in message


def test_a_malformed_manifest_is_refused_by_the_writer_too(store):
    """Resuming an extraction into a store whose manifest is broken says so instead of a KeyError."""
    _edit_json(store / "manifest.json", shards=[{"file": SHARD}])
    header = {k: v for k, v in json.loads((store / "manifest.json").read_text()).items() if k in ("d_in", "dtype")}
    _raises(FormatError, store / "manifest.json", r"shards\[0\]", lambda: StoreWriter(store, header))


# ---- activation store: shards ---------------------------------------------------------------------
def _write_header(fpath: Path, header) -> None:
    raw = json.dumps(header).encode()
    fpath.write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.mark.parametrize(("damage", "problem"), [
    ("garbage", r"not a readable safetensors file \(header length \d+ exceeds the file size 31\)"),
    ("huge_header_len", r"not a readable safetensors file \(header length 1000000000000 exceeds the file size"),
    ("tiny", r"not a readable safetensors file \(4 bytes, too short for a header\)"),
    ("header_list", r"not a readable safetensors file \(the header is a JSON list, not an object\)"),
    ("tensor_without_dtype", r"tensor 'acts' lacks a valid dtype, shape or data_offsets"),
    ("negative_shape", r"tensor 'acts' lacks a valid dtype, shape or data_offsets"),
])
def test_damaged_shard(store, damage, problem):
    fpath = store / SHARD
    if damage == "garbage":
        fpath.write_bytes(b"garbage garbage garbage garbage")
    elif damage == "huge_header_len":
        fpath.write_bytes(struct.pack("<Q", 10**12) + fpath.read_bytes()[8:])
    elif damage == "tiny":
        fpath.write_bytes(b"\x00" * 4)
    elif damage == "header_list":
        _write_header(fpath, [1, 2])
    elif damage == "tensor_without_dtype":
        _write_header(fpath, {"acts": {"shape": [0, 3], "data_offsets": [0, 0]}})
    else:
        _write_header(fpath, {"acts": {"dtype": "F32", "shape": [-1, 3], "data_offsets": [0, 0]}})
    message = _raises(FormatError, fpath, problem, lambda: ActivationStore(store))
    assert "re-run `saescope extract`" in message


def _edit_shard(store: Path, **tensors) -> None:
    fpath = store / SHARD
    save_file(load_file(fpath) | tensors, fpath)


def test_rows_must_be_samples_times_tokens_per_sample(store):
    _edit_json(store / "manifest.json", tokens_per_sample=3)
    _raises(FormatError, store / SHARD, r"20 activation rows are not 20 samples x tokens_per_sample=3", lambda: ActivationStore(store))


def test_negative_sample_ids_are_refused(store):
    _edit_shard(store, sample_ids=torch.arange(-1, 19))
    _raises(DataError, store / SHARD, r"negative sample_id -1", lambda: ActivationStore(store))


@pytest.mark.parametrize(("tensors", "problem"), [
    ({"sample_ids": torch.arange(20).float()}, r"sample_ids must be a 1-D int64 tensor, found float32"),
    ({"sample_ids": torch.arange(5)}, r"holds 5 samples but manifest.json lists 20"),
    ({"acts": torch.zeros(20, 3, dtype=torch.bfloat16)}, r"acts are not stored as float32"),
])
def test_shard_that_disagrees_with_the_manifest(store, tensors, problem):
    _edit_shard(store, **tensors)
    _raises(FormatError, store / SHARD, problem, lambda: ActivationStore(store))


def test_re_running_the_extraction_drops_a_shard_the_reader_refuses(store):
    """The errors say "re-run `saescope extract`": the writer must then rewrite that shard, not keep it."""
    _edit_shard(store, sample_ids=torch.arange(-1, 19))
    header = json.loads((store / "manifest.json").read_text())
    writer = StoreWriter(store, {k: header[k] for k in ("d_in", "dtype", "tokens_per_sample", "model", "layer")})
    assert writer.n_samples_done == 0 and not writer.complete


def test_cli_train_on_a_bad_store_is_one_line_and_exit_2(store, tmp_path, capsys):
    _edit_json(store / "manifest.json", grid=[1])
    argv = ["train", "--store", str(store), "--device", "cpu", "--n-tokens", "64", "--batch-size", "16", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saescope train: error: ") and "'grid' must be" in err[0]


# ---- SAE checkpoints ------------------------------------------------------------------------------
@pytest.fixture
def ckpt(tmp_path) -> Path:
    return make_sae(tmp_path, d_in=3, d_sae=6)


@pytest.mark.parametrize(("change", "problem"), [
    ({"d_in": 4}, r"W_enc has shape \[3, 6\] but cfg.json \(d_in=4, d_sae=6\) needs \[4, 6\]"),
    ({"d_sae": 8}, r"W_enc has shape \[3, 6\] but cfg.json \(d_in=3, d_sae=8\) needs \[3, 8\]"),
])
def test_cfg_json_that_disagrees_with_the_weights(ckpt, change, problem):
    cfg = json.loads((ckpt / CFG_FILE).read_text())
    _edit_json(ckpt / CFG_FILE, sae=cfg["sae"] | change)
    message = _raises(FormatError, ckpt / WEIGHTS_FILE, problem, lambda: load(ckpt))
    assert "different runs" in message


@pytest.mark.parametrize(("changes", "problem"), [
    ({"sae": ...}, r"'sae' must be the SAE config object, it is missing"),
    ({"sae": "x"}, r"'sae' must be the SAE config object, found 'x'"),
    ({"store": "abc"}, r"'store' must be an object or null, found 'abc'"),
    ({"metrics": [1]}, r"'metrics' must be an object or null, found \[1\]"),
    ({"n_tokens_trained": "many"}, r"'n_tokens_trained' must be an integer >= 0, found 'many'"),
])
def test_malformed_cfg_json(ckpt, changes, problem):
    _edit_json(ckpt / CFG_FILE, **changes)
    _raises(FormatError, ckpt / CFG_FILE, problem, lambda: load(ckpt))
    _raises(FormatError, ckpt / CFG_FILE, problem, lambda: describe(ckpt))


@pytest.mark.parametrize(("name", "value"), [("W_enc", float("nan")), ("input_scale", float("inf"))])
def test_diverged_weights_are_refused(ckpt, name, value):
    tensors = load_file(ckpt / WEIGHTS_FILE)
    tensors[name] = tensors[name].clone().fill_(value)
    save_file(tensors, ckpt / WEIGHTS_FILE)
    message = _raises(DataError, ckpt / WEIGHTS_FILE, rf"weights contain NaN or inf \({name}\)", lambda: load(ckpt))
    assert "retrain with a lower --lr" in message


def test_cfg_json_that_is_a_folder(ckpt):
    (ckpt / CFG_FILE).unlink()
    (ckpt / CFG_FILE).mkdir()
    _raises(FormatError, ckpt / CFG_FILE, "not found", lambda: load(ckpt))


# ---- saescope info --------------------------------------------------------------------------------
def test_info_store_manifest_corrupt_or_a_folder(store):
    manifest = store / "manifest.json"
    manifest.write_text("{nope")
    _raises(FormatError, manifest, r"corrupt JSON", lambda: describe(store))
    manifest.unlink()
    manifest.mkdir()
    _raises(FormatError, manifest, r"cannot be read \(Is a directory\)", lambda: describe(store))


@pytest.mark.parametrize(("changes", "problem"), [
    ({"n_skipped": ...}, r"'n_skipped' must be an integer >= 0, it is missing"),
    ({"n_samples": "many"}, r"'n_samples' must be an integer >= 0, found 'many'"),
    ({"has_labels": "yes"}, r"'has_labels' must be true or false"),
    ({"schema_version": 99}, r"schema version 99 is not supported .*upgrade saescope"),
])
def test_info_bad_dataset_manifest(tmp_path, changes, problem):
    dpath = make_dataset(tmp_path, 2, with_thumbs=False)
    _edit_json(dpath / "manifest.json", **changes)
    _raises(FormatError, dpath / "manifest.json", problem, lambda: describe(dpath))


def test_info_checkpoint_with_partial_metrics(ckpt):
    """Held-out metrics are shown as far as cfg.json has them (make_sae writes only one)."""
    _edit_json(ckpt / CFG_FILE, metrics={"fvu": 0.25})
    assert "held-out      FVU 0.2500" in describe(ckpt)
    _edit_json(ckpt / CFG_FILE, metrics={})
    assert "held-out" not in describe(ckpt)


def _duckdb(fpath: Path, sql: str) -> Path:
    with duckdb.connect(str(fpath)) as con:
        con.execute(sql)
    return fpath


SAES = "CREATE TABLE saes (sae_id VARCHAR, arch VARCHAR, d_sae INTEGER, l0 DOUBLE, explained_variance DOUBLE, dead_fraction DOUBLE)"


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p.write_bytes(b"hello world" * 10), r"not a readable DuckDB file"),
    (lambda p: p.write_bytes(b""), r"not a readable DuckDB file"),
    (lambda p: _duckdb(p, "CREATE TABLE x (a INT)"), r"not a saescope index \(no schema_version table\)"),
    (lambda p: _duckdb(p, f"CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES ({SCHEMA_VERSION})"),
     r"the saes table is missing or incomplete"),
    (lambda p: _duckdb(p, f"CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (99); {SAES}"),
     r"index schema version 99 is not supported \(this saescope reads index files of versions \d+\.\.\d+\); upgrade saescope"),
    (lambda p: _duckdb(p, f"CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (1); {SAES}"),
     r"index schema version 1 is not supported .*rebuild it with `saescope index`"),
    (lambda p: _duckdb(p, f"CREATE TABLE schema_version (version VARCHAR); INSERT INTO schema_version VALUES ('four'); {SAES}"),
     r"index schema version 'four' is not supported"),
    (lambda p: _duckdb(p, f"CREATE TABLE schema_version (version INTEGER); {SAES}"), r"index schema version None is not supported"),
])
def test_info_bad_index(tmp_path, make, problem):
    fpath = tmp_path / "bad.duckdb"
    make(fpath)
    _raises(FormatError, fpath, problem, lambda: describe(fpath))


def test_info_index_tolerates_null_metrics(tmp_path):
    fpath = _duckdb(tmp_path / "ok.duckdb", f"CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES "
                                            f"({SCHEMA_VERSION}); {SAES}; INSERT INTO saes VALUES ('a', 'topk', 8, NULL, 0.5, NULL)")
    assert "a: topk d_sae=8 L0 - explained variance 0.500 dead -%" in describe(fpath)


def test_cli_info_on_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    fpath = tmp_path / "empty.duckdb"
    fpath.write_bytes(b"")
    assert main(["info", str(fpath)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saescope info: error: ") and str(fpath) in err[0]


def test_rerunning_extract_rebuilds_a_damaged_dataset_folder(tmp_path):
    """The error says 're-run saescope extract': that must work, not reuse the damaged folder."""
    import json

    from precompute.dataset import DatasetConfig, prepare_dataset, read_dataset_manifest

    cfg = DatasetConfig(source="emoji:2", out=str(tmp_path))
    first = prepare_dataset(cfg)
    manifest = json.loads((first.dpath / "manifest.json").read_text())
    del manifest["n_skipped"]
    (first.dpath / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="re-run `saescope extract` to rebuild"):
        read_dataset_manifest(first.dpath)
    again = prepare_dataset(cfg)
    assert again.dpath == first.dpath and read_dataset_manifest(again.dpath)["n_skipped"] == 0
