"""gstutorial.resources: the weights and benchmark results the package ships, found by name; the
files on disk, the names in the module, pyproject's package data and the benchmarks' default outputs
agree. (Building and installing the package: tests/test_distribution.py.)"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest

from gstutorial.resources import PRETRAINED, RECORDED_RESULTS, recorded_results, weights_file

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gstutorial"
#: Where each benchmark writes by default: (script, option) -> the shipped file.
BENCHMARK_OUTPUTS = {
    ("bench_catvae_port.py", "--out"): "results/catvae_port.json",
    ("bench_catvae_quality.py", "--out"): "results/catvae_quality.json",
    ("bench_estimators_vae.py", "--out"): "results/estimators_vae.json",
    ("bench_jointvae.py", "--results"): "results/jointvae.json",
    ("bench_subnormals.py", "--results"): "results/subnormals.json",
}


def test_the_names_are_the_files_shipped():
    assert sorted(p.stem for p in (PACKAGE / "weights").iterdir()) == sorted(PRETRAINED)
    assert sorted(p.name for p in (PACKAGE / "results").iterdir()) == sorted(f"{n}.json" for n in RECORDED_RESULTS)


def test_pyproject_declares_every_shipped_file_as_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gstutorial"]
    shipped = [p.relative_to(PACKAGE).as_posix() for folder in ("weights", "results") for p in (PACKAGE / folder).iterdir()]
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_weights_file_gives_a_path_to_each_shipped_model():
    for name in PRETRAINED:
        path = weights_file(name)
        assert path.is_file() and path.read_bytes()[:2] == b"PK"  # torch.save's zip format


@pytest.mark.parametrize("name", RECORDED_RESULTS)
def test_recorded_results_are_the_json_the_benchmark_wrote(name):
    assert recorded_results(name) == json.loads((PACKAGE / "results" / f"{name}.json").read_text())


def test_an_unknown_name_is_refused_with_the_names_shipped():
    with pytest.raises(ValueError, match="no recorded results named 'jointvae.json'; the package ships: "
                                         "catvae_quality, catvae_speed, .*, subnormals$"):
        recorded_results("jointvae.json")
    with pytest.raises(ValueError, match="^no pretrained model named 'jointvae-mlp'; the package ships: "
                                         "catvae-20x10-gs, catvae-20x10-st, jointvae, jointvae-conv$"):
        weights_file("jointvae-mlp")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        recorded_results(7)


def test_a_missing_file_says_the_installation_lacks_its_package_data(monkeypatch, tmp_path):
    import gstutorial.resources as resources

    monkeypatch.setattr(resources.resources, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"recorded results 'jointvae' is missing .* package data"):
        recorded_results("jointvae")


@pytest.mark.parametrize(("script", "option"), sorted(BENCHMARK_OUTPUTS))
def test_the_benchmarks_write_the_shipped_files_by_default(script, option, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location(script[:-3], REPO / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, "--help"])  # main() reads sys.argv (some take no argv)
    with pytest.raises(SystemExit):
        module.main()
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: gstutorial/{BENCHMARK_OUTPUTS[script, option]})" in help_text


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
