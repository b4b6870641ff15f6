"""`saescope demo --styles`: the plan it picks, its errors, and a reduced multi-style build."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from precompute import sources_emoji
from precompute.demo import NOTO_PLAN, STYLES_PLAN, DemoConfig, build_demo, demo_plan
from precompute.sources_emoji import DEFAULT_STYLES, style_missing
from sae_core.errors import SaescopeError

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = [s for s in DEFAULT_STYLES if style_missing(s) is None]


def test_plan_keeps_the_noto_demo_and_sizes_the_styles_demo():
    assert demo_plan(DemoConfig()) == ("emoji", NOTO_PLAN)
    dataset, plan = demo_plan(DemoConfig(limit=96, epochs=20.0))  # the tests' small_demo: unchanged
    assert dataset == "emoji:96" and (plan.head_epochs, plan.patch_epochs) == (20.0, 4.0)


@pytest.mark.skipif(len(INSTALLED) < len(DEFAULT_STYLES), reason="needs every default style (scripts/install.sh)")
def test_plan_of_the_default_styles():
    assert demo_plan(DemoConfig(styles="default")) == ("emoji:noto,twitter,fluent3d,fluentflat,openmoji", STYLES_PLAN)
    assert demo_plan(DemoConfig(styles="twitter,openmoji", limit=30))[0] == "emoji:twitter,openmoji:30"


def test_without_npm_sets_the_default_styles_fall_back_to_the_noto_demo(tmp_path, monkeypatch, caplog):
    if style_missing("noto"):
        pytest.skip("needs the Noto font (fonts-noto-color-emoji)")
    monkeypatch.setenv(sources_emoji.NPM_DATA_ENV, str(tmp_path / "nowhere"))
    with caplog.at_level("WARNING", logger="precompute.demo"):
        assert demo_plan(DemoConfig(styles="default", limit=40)) == ("emoji:40", NOTO_PLAN)
    notices = [r.getMessage() for r in caplog.records if r.name == "precompute.demo" and r.levelname == "WARNING"]
    assert [line.split(" skipped:")[0] for line in notices] == [f"emoji style {s}" for s in DEFAULT_STYLES[1:]]
    assert all("scripts/install.sh" in line for line in notices)


def test_bad_styles_are_a_one_line_cli_error(tmp_path):
    with pytest.raises(SaescopeError, match="distinct names from noto, google, twitter"):
        DemoConfig(styles="noto,bogus")
    run = subprocess.run([sys.executable, "-m", "precompute.cli", "demo", "--no-serve", "--styles", "noto,bogus",
                          "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "noto,bogus" in run.stderr
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two emoji styles installed (scripts/install.sh)")
def test_reduced_multi_style_demo_indexes_every_style_with_held_out_figures(tmp_path, capsys):
    import duckdb

    cfg = DemoConfig(data_root=str(tmp_path), styles=",".join(INSTALLED), limit=20, epochs=10.0, serve=False)
    index = build_demo(cfg)
    out = capsys.readouterr().out
    assert out.count("held-out") == 2 and "explained variance" in out
    con = duckdb.connect(str(index), read_only=True)
    rows = con.execute("SELECT source, caption, label FROM samples").fetchall()
    styles = {label.split(" / ")[0] for _, _, label in rows}
    assert styles == set(INSTALLED)
    captions: dict[str, set[str]] = {}
    for source, caption, _ in rows:
        captions.setdefault(source.split("/")[1], set()).add(caption)
    assert len(captions) == 20 and all(len(c) == 1 for c in captions.values())
    n = len(rows)
    assert 20 * (len(INSTALLED) - 1) < n <= 20 * len(INSTALLED)
    saes = con.execute("SELECT n_samples, checkpoint FROM saes").fetchall()
    assert [s[0] for s in saes] == [n, n]
    for _, checkpoint in saes:
        metrics = json.loads((index.parent / checkpoint / "cfg.json").read_text())["metrics"]
        assert 0 < metrics["n_tokens"] and -1 < metrics["explained_variance"] <= 1
