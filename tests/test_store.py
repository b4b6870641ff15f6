"""Activation store: round trips, memory-mapped random access, resume and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae_core.contract import FORMAT_SINCE, SCHEMA_VERSION
from sae_core.errors import DataError, FormatError
from sae_core.store import ActivationStore, StoreWriter
from tests.precompute_helpers import make_store

HEADER = {"dataset_id": "d", "model": "m", "layer": "l", "token_selection": "patches", "tokens_per_sample": 2,
          "grid": [1, 2], "d_in": 3}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_and_random_access(tmp_path, dtype):
    acts = torch.randn(10, 2, 3)
    w = StoreWriter(tmp_path / "s", {**HEADER, "dtype": dtype})
    w.append(acts[:4], np.arange(4))
    w.append(acts[4:], np.arange(4, 10))
    w.finish()
    store = ActivationStore(tmp_path / "s")
    assert (store.n_samples, store.n_tokens, store.d_in, store.grid) == (10, 20, 3, (1, 2))
    flat = acts.reshape(20, 3).to(getattr(torch, dtype)).float()
    idx = np.array([19, 0, 7, 8, 3])
    torch.testing.assert_close(store.rows(idx), flat[idx])
    np.testing.assert_array_equal(store.sample_ids(), np.arange(10))
    chunks = list(store.iter_chunks(n_rows=6))  # chunks 6-12 straddle the shard boundary at row 8
    assert [c[0] for c in chunks] == [0, 6, 12, 18]
    torch.testing.assert_close(torch.cat([c[1] for c in chunks]), flat)
    native = list(store.iter_chunks(n_rows=6, start_row=3, end_row=17, stored_dtype=True))  # what a GPU scan is sent
    assert [c[0] for c in native] == [3, 9, 15] and all(c[1].dtype == getattr(torch, dtype) for c in native)
    assert torch.equal(torch.cat([c[1] for c in native]).float(), flat[3:17])


def test_writer_resumes_an_existing_store_and_refuses_a_different_one(tmp_path):
    w = StoreWriter(tmp_path / "s", {**HEADER, "dtype": "float32"})
    w.append(torch.zeros(2, 2, 3), [0, 1])
    again = StoreWriter(tmp_path / "s", {**HEADER, "dtype": "float32"})
    assert again.n_samples_done == 2 and not again.complete
    with pytest.raises(FormatError, match="d_in"):
        StoreWriter(tmp_path / "s", {**HEADER, "d_in": 4, "dtype": "float32"})


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        ActivationStore(tmp_path / "missing")
    w = StoreWriter(tmp_path / "empty", {**HEADER, "dtype": "float32"})
    w.finish()
    with pytest.raises(DataError, match="empty"):
        ActivationStore(tmp_path / "empty")
    d = make_store(tmp_path, np.ones((8, 3), np.float32), shard_samples=4)
    shard = d / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(FormatError, match="truncated|corrupt|readable"):
        ActivationStore(d)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["schema_version"] = 999
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="schema version 999"):
        ActivationStore(d)
    with pytest.raises(DataError, match="rows"):
        StoreWriter(tmp_path / "t", {**HEADER, "dtype": "float32"}).append(torch.zeros(3, 3), [0, 1])


def test_an_unfinished_store_is_refused_for_training_and_indexing(tmp_path):
    w = StoreWriter(tmp_path / "s", {**HEADER, "dtype": "float32"})
    w.append(torch.zeros(2, 2, 3), [0, 1])
    with pytest.raises(DataError, match="has not finished"):
        ActivationStore(tmp_path / "s")
    assert ActivationStore(tmp_path / "s", allow_incomplete=True).n_samples == 2
    from sae_core.training import TrainConfig, train

    with pytest.raises(DataError, match="has not finished"):
        train(TrainConfig(store=str(tmp_path / "s"), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("version", "outcome"), [(FORMAT_SINCE["activation_store"], "reads"), (SCHEMA_VERSION, "reads"),
                                                  (FORMAT_SINCE["activation_store"] - 1, "re-run the job"),
                                                  (SCHEMA_VERSION + 1, "upgrade saescope"), ("4", "re-run the job")])
def test_stores_of_every_version_since_the_last_store_format_change_stay_readable(tmp_path, version, outcome):
    """A contract change elsewhere (e.g. the index) must not orphan stores that cost GPU hours."""
    d = make_store(tmp_path, np.arange(24, dtype=np.float32).reshape(8, 3), shard_samples=4)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "schema_version": version}))
    if outcome == "reads":
        assert ActivationStore(d).rows(np.arange(8)).sum() == sum(range(24))
    else:
        with pytest.raises(FormatError, match=outcome):
            ActivationStore(d)


# ---- checksums (issue 14) ------------------------------------------------------------------------
def _flip_a_byte(fpath, from_end: int = 5) -> None:
    data = bytearray(fpath.read_bytes())
    data[-from_end] ^= 0xFF
    fpath.write_bytes(bytes(data))


def test_shards_carry_size_and_sha256_in_the_manifest(tmp_path):
    import hashlib

    d = make_store(tmp_path, np.arange(24, dtype=np.float32).reshape(8, 3), shard_samples=4)
    shards = json.loads((d / "manifest.json").read_text())["shards"]
    assert len(shards) == 2
    for e in shards:
        data = (d / e["file"]).read_bytes()
        assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()


def test_reading_checks_sizes_and_verify_checks_every_byte(tmp_path, capsys):
    from precompute.cli import main

    d = make_store(tmp_path, np.arange(24, dtype=np.float32).reshape(8, 3), shard_samples=4)
    assert main(["verify", str(d)]) == 0
    assert "2 shards, 2 checksums verified" in capsys.readouterr().out
    shard = d / "shard-00001.safetensors"
    good = shard.read_bytes()
    _flip_a_byte(shard)  # same size: reading cannot tell, verify must
    assert ActivationStore(d).n_samples == 8
    assert main(["verify", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard-00001.safetensors: checksum mismatch" in err[0], err
    shard.write_bytes(good + b"\0" * 16)  # another size: every reader refuses it
    with pytest.raises(FormatError, match=rf"{len(good) + 16} bytes but manifest.json lists {len(good)}"):
        ActivationStore(d)


def test_stores_without_checksums_stay_readable_and_verifiable(tmp_path, capsys):
    from precompute.cli import main

    d = make_store(tmp_path, np.arange(24, dtype=np.float32).reshape(8, 3), shard_samples=4)
    m = json.loads((d / "manifest.json").read_text())
    m["shards"] = [{k: v for k, v in e.items() if k not in ("bytes", "sha256")} for e in m["shards"]]
    (d / "manifest.json").write_text(json.dumps(m))
    assert ActivationStore(d).n_samples == 8
    assert main(["verify", str(d)]) == 0 and "0 checksums verified, sizes only" in capsys.readouterr().out
    m["shards"][0]["sha256"] = "not hex"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match=r"shards\[0\] .*sha256"):
        ActivationStore(d)


def test_resume_after_a_crash_rewrites_a_last_shard_whose_bytes_changed(tmp_path):
    w = StoreWriter(tmp_path / "s", {**HEADER, "dtype": "float32"})
    w.append(torch.ones(2, 2, 3), [0, 1])
    w.append(torch.ones(2, 2, 3), [2, 3])
    _flip_a_byte(tmp_path / "s" / "shard-00001.safetensors")  # what a crash mid-write could leave
    again = StoreWriter(tmp_path / "s", {**HEADER, "dtype": "float32"})
    assert again.n_samples_done == 2 and len(again.manifest["shards"]) == 1


def test_verify_of_a_checkpoint_and_of_something_else(tmp_path, capsys):
    from precompute.cli import main
    from tests.precompute_helpers import make_sae

    ckpt = make_sae(tmp_path, 3, 8)
    assert main(["verify", str(ckpt)]) == 0 and "checksum verified" in capsys.readouterr().out
    _flip_a_byte(ckpt / "sae.safetensors")
    assert main(["verify", str(ckpt)]) == 2
    assert "sae.safetensors: checksum mismatch" in capsys.readouterr().err
    (ckpt / "sae.safetensors").write_bytes(b"")
    assert main(["verify", str(ckpt)]) == 2
    assert "has 0 bytes, cfg.json records" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2
    assert "not an activation store or a saescope checkpoint" in capsys.readouterr().err
