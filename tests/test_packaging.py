"""pyproject.toml and environment.yml must describe the same environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "nodejs"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return dict(_split(r) for r in requirements)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the pip: section installs the package itself
            continue
        name, spec = _split(entry)
        if name in CONDA_ONLY:
            continue
        found[CONDA_TO_PYPI.get(name, name)] = spec
    return found


def test_environment_yml_names_the_same_packages_and_bounds():
    assert conda_requirements() == pyproject_requirements()


def test_every_runtime_dependency_is_importable():
    import importlib

    for name in ("torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm"):
        importlib.import_module(name)
