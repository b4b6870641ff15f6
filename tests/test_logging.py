"""Logging on the `saescope` command: info lines on stderr by default, `-q` leaves warnings only,
`--log-level error` silences warnings, results stay on stdout, errors keep their one line and exit
code, and one command's level does not leak into the next. Also: `index` records its resolved
config (flags over --config) inside the index, and a re-run with the same config is reused.
"""

from __future__ import annotations

import json
import logging

import duckdb
import numpy as np
import pytest
from PIL import Image

from precompute.cli import main
from precompute.cli_logging import configure_logging
from precompute.index import IndexConfig
from sae_core.errors import ConfigError
from tests.precompute_helpers import make_dataset, make_sae, make_store


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("log_imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _extract(images, data, *flags):
    return main(["extract", "--dataset", str(images), "--data-root", str(data), "--layer", "blocks.3", "--device", "cpu", *flags])


@pytest.mark.parametrize(("flags", "info_shown"), [((), True), (("-q",), False), (("--log-level", "warning"), False),
                                                   (("-v",), True), (("--quiet", "--log-level", "info"), True)])
def test_info_lines_follow_the_level_and_results_stay_on_stdout(tmp_path, images, capsys, flags, info_shown):
    assert _extract(images, tmp_path / "data", *flags) == 0
    out, err = capsys.readouterr()
    assert out.startswith("wrote store ") and len(out.strip().splitlines()) == 1  # the result, whatever the level
    info = [line for line in err.splitlines() if line.startswith("extracting 3 samples of ")]
    assert len(info) == (1 if info_shown else 0), err
    if info_shown:
        assert info[0].endswith("through efficientnet-lite0 on cpu into 1 store")  # the bare message: no level or logger name


def _small_index(tmp_path):
    """An index of a synthetic store: real tables, but no model a live worker could load."""
    rng = np.random.default_rng(0)
    dataset = make_dataset(tmp_path, 40, with_thumbs=False)
    store = make_store(tmp_path, rng.normal(size=(40, 8)).astype(np.float32), dataset_dpath=dataset)
    return make_sae(tmp_path, 8, 16, store_dpath=store)


def test_warnings_show_under_quiet_and_not_under_error(tmp_path, capsys, caplog):
    rng = np.random.default_rng(0)
    store = make_store(tmp_path, rng.normal(size=(512, 8)).astype(np.float32))
    argv = ["train", "--store", str(store), "--out", str(tmp_path / "runs"), "--arch", "topk", "--k", "2", "--expansion", "2",
            "--batch-size", "128", "--n-tokens", "1024", "--device", "cpu"]
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    (run / "sae.safetensors").unlink()  # a finished run without its weights: trained again, with a warning
    assert main([*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("trained ") and err.strip().endswith("; training the run again"), err
    assert len(err.strip().splitlines()) == 1 and err.startswith("saescope train: ")  # the one-line form, no level prefix
    assert any(r.levelno == logging.WARNING and r.name == "sae_core.training" for r in caplog.records)
    (run / "sae.safetensors").unlink()
    assert main([*argv, "--log-level", "error"]) == 0
    assert capsys.readouterr().err == ""


def test_errors_keep_their_one_line_and_exit_code_under_quiet(tmp_path, images, capsys):
    assert _extract(images, tmp_path / "data", "-q", "--tokens", "spans") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("saescope extract: error: "), err


def test_bad_level_is_one_line_and_a_level_does_not_leak(tmp_path, images, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--log-level", "loud"])
    assert exc.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="log level 'loud'"):
        configure_logging("loud")
    assert _extract(images, tmp_path / "data", "--log-level", "error") == 0
    assert logging.getLogger("precompute").level == logging.NOTSET  # restored after the command
    assert not [h for h in logging.getLogger("precompute").handlers if type(h).__name__ == "_CurrentStderr"]


def test_log_level_from_a_config_file(tmp_path, images, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('log_level = "warning"\n')
    assert _extract(images, tmp_path / "data", "--config", str(toml)) == 0
    assert "extracting" not in capsys.readouterr().err


# ---- index: the resolved config is saved with the output ----------------------------------------
def test_index_saves_its_resolved_config_and_a_rerun_is_reused(tmp_path, capsys):
    sae = _small_index(tmp_path)
    out = tmp_path / "index" / "x.duckdb"
    toml = tmp_path / "index.toml"
    toml.write_text(f'out = "{out}"\ntop_n = 5\nper_bin = 3\ndevice = "cpu"\n')
    argv = ["index", "--config", str(toml), "--sae", str(sae), "--top-n", "7", "--neighbors", "2", "-q"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("wrote index ")
    with duckdb.connect(str(out), read_only=True) as con:
        saved = json.loads(con.execute("SELECT value FROM index_meta WHERE key = 'config'").fetchone()[0])
    expected = {**{k: v for k, v in IndexConfig().__dict__.items()}, "saes": [str(sae)], "out": str(out), "top_n": 7,
                "per_bin": 3, "neighbors": 2, "device": "cpu"}
    assert saved == json.loads(json.dumps(expected))  # the flag beat the file (top_n), the file beat the defaults
    mtime = out.stat().st_mtime_ns
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("reused index ") and out.stat().st_mtime_ns == mtime
    assert main([*argv[:-3], "--neighbors", "3", "-q"]) == 0  # another config: rebuilt, and recorded
    with duckdb.connect(str(out), read_only=True) as con:
        assert json.loads(con.execute("SELECT value FROM index_meta WHERE key = 'config'").fetchone()[0])["neighbors"] == 3
    assert not list(out.parent.glob("*.tmp-*"))  # written through a temporary file, replaced atomically
