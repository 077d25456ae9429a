"""The package's description files agree with each other and with the installed environment.

- pyproject.toml and environment.yml describe the same environment (names and version bounds);
- constraints.txt pins every requirement of pyproject.toml inside its bound, and the installed torch,
  numpy, scipy and matplotlib are the pinned versions. Set ``GSTUTORIAL_UNPINNED=1`` to skip that
  last check when trying new releases on purpose (``make constraints`` does, before re-pinning);
- the version is written once, in ``gstutorial/__init__.py``.

``GSTUTORIAL_CONSTRAINTS`` names another constraints file to check (tools/refresh_constraints.sh
checks its candidate before renaming it over constraints.txt).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = Path(os.environ.get("GSTUTORIAL_CONSTRAINTS") or REPO / "constraints.txt")
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch", "python-build": "build"}
CONDA_ONLY = {"python", "pip", "nodejs"}
# the packages whose releases change the notebooks' numbers: a drift in them fails the suite
COMPARED_PACKAGES = ("torch", "numpy", "scipy", "matplotlib")
UNPINNED = os.environ.get("GSTUTORIAL_UNPINNED") == "1"


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    return canonicalize_name(match.group(1)), match.group(2).replace(" ", "")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pyproject_requirement_list() -> list[str]:
    project = _project()
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return requirements


def pyproject_requirements() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, spec in map(_split, pyproject_requirement_list()):
        # a package named in two extras (ipykernel: book and dev) must carry one bound
        assert found.setdefault(name, spec) == spec, f"{name}: {found[name]!r} vs {spec!r}"
    return found


def _conda_spec(entry: str) -> tuple[str, str, str]:
    """(name, version bound, build string) of a conda match spec ``name[ ]bound[ build]``."""
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*([^\s]*)(?:\s+(\S+))?", entry.strip())
    assert match, entry
    return canonicalize_name(match.group(1)), match.group(2), match.group(3) or ""


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the pip: section installs the package itself
            continue
        name, spec, _ = _conda_spec(entry)
        if name in CONDA_ONLY:
            continue
        found[CONDA_TO_PYPI.get(name, name)] = spec
    return found


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;#]+)", line)
        assert match, f"{path.name}:{number}: not a plain name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}:{number}: {name} is pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_environment_yml_names_the_same_packages_and_bounds():
    assert conda_requirements() == pyproject_requirements()


def test_conda_specs_are_read_with_their_build_string():
    assert _conda_spec("pytorch >=2.2 cpu*") == ("pytorch", ">=2.2", "cpu*")
    assert _conda_spec("jupyter-book>=1.0,<2") == ("jupyter-book", ">=1.0,<2", "")
    assert _conda_spec("nodejs") == ("nodejs", "", "")


def test_environment_yml_builds_a_cpu_pytorch_on_python_311_for_binder():
    """Binder builds environment.yml: conda-forge's CPU build of PyTorch (no CUDA libraries in the
    image; torchvision follows it), and a `python=X.Y` line, the only form repo2docker reads its
    Python version from."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]  # the build strings below are conda-forge's
    specs = {spec[0]: spec for spec in map(_conda_spec, (e for e in env["dependencies"] if isinstance(e, str)))}
    assert specs["pytorch"][2] == "cpu*"
    assert [e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python=")] == ["python=3.11"]
    assert Requirement(f"python{_project()['requires-python']}").specifier.contains("3.11")


def test_pyproject_requires_numpy_2_for_trapezoid():
    requirement = Requirement(next(r for r in _project()["dependencies"] if _split(r)[0] == "numpy"))
    assert not requirement.specifier.contains("1.26.4")
    assert requirement.specifier.contains("2.0.0")


def test_every_runtime_dependency_is_importable():
    for name in ("torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm"):
        importlib.import_module(name)


def test_constraints_pin_every_requirement_within_its_bound():
    pins = constraint_pins()
    assert "gstutorial" not in pins, "the package itself must not be pinned (pip freeze --exclude-editable)"
    problems = []
    for text in pyproject_requirement_list():
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{name} is not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside pyproject's bound {requirement.specifier}")
    assert not problems, f"{CONSTRAINTS.name} vs pyproject.toml: " + "; ".join(problems)


def test_constraints_are_one_consistent_resolution():
    """Every pin satisfies what the pinned packages require of it, from pyproject's requirements down
    (PyPI's torch wheel requires exact releases of triton and, through cuda-toolkit's extras, of the
    CUDA libraries nvidia-*; torchvision an exact torch): a refresh that moved one pin without the
    others would not install. Read from the installed metadata of the packages installed at their
    pinned release (all of them after `make install`)."""
    pins = constraint_pins()
    todo = [Requirement(text) for text in pyproject_requirement_list()]
    seen: set[tuple[str, frozenset[str]]] = set()
    problems, checked = [], 0
    while todo:
        parent = todo.pop()
        name, extras = canonicalize_name(parent.name), frozenset(parent.extras)
        if (name, extras) in seen or name not in pins:
            continue
        seen.add((name, extras))
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed.public != pins[name].public:
            continue  # no metadata of the pinned release here
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                continue  # another platform's requirement, or an extra nobody asked for
            dependency = canonicalize_name(requirement.name)
            checked += 1
            if dependency not in pins:
                problems.append(f"{name} requires {text!r}, which is not pinned")
            elif not requirement.specifier.contains(pins[dependency], prereleases=True):
                problems.append(f"{name} {installed} requires {text!r}, the pin is {pins[dependency]}")
            todo.append(requirement)
    assert not problems, f"{CONSTRAINTS.name}: " + "; ".join(problems)
    assert checked > 50, f"only {checked} requirements checked: is the environment installed?"


@pytest.mark.skipif(UNPINNED, reason="GSTUTORIAL_UNPINNED=1: testing releases other than the pinned ones")
@pytest.mark.parametrize("name", COMPARED_PACKAGES)
def test_installed_version_is_the_pinned_one(name):
    """The notebooks' outputs were recorded with the pinned versions; `make install` installs them.
    Another version (an old .venv, a hand-upgraded package) may change compared outputs."""
    pinned = constraint_pins()[name]
    installed = Version(importlib.metadata.version(name))
    # a local label (torch 2.14.1+cpu, +cu128) is the same release built for another device
    assert installed.public == pinned.public, (
        f"{name} {installed} is installed but {CONSTRAINTS.name} pins {pinned}: run `make install` "
        "(or set GSTUTORIAL_UNPINNED=1 to test other releases on purpose)")


def test_version_has_one_source():
    project = _project()
    assert "version" not in project, "pyproject.toml must not repeat the version"
    assert "version" in project["dynamic"]
    dynamic = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "gstutorial.__version__"}

    # setuptools reads the attribute without importing the package: it must be a plain literal
    tree = ast.parse((REPO / "gstutorial" / "__init__.py").read_text())
    literal = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]
               and isinstance(node.value, ast.Constant)]
    assert len(literal) == 1 and Version(literal[0]), "gstutorial/__init__.py: __version__ = '<literal>'"

    import gstutorial

    assert gstutorial.__version__ == literal[0]
    assert importlib.metadata.version("gstutorial") == gstutorial.__version__, (
        "the installed metadata is stale: run `make install` (pip install -e .) again")


def test_console_script_is_declared_and_installed():
    assert _project()["scripts"] == {"gstutorial": "gstutorial.cli:main"}
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.dist is not None and canonicalize_name(ep.dist.name) == "gstutorial"}
    assert scripts == {"gstutorial": "gstutorial.cli:main"}, "run `make install` to install the script"


def test_book_extension_imports_nothing_outside_the_book_extra():
    """`make book-static` (GitHub Pages) builds from the book extra alone: book/_ext must not import
    gstutorial, torch or anything else that only the full environment has."""
    book_modules = {"jupytext", "sphinx", "docutils", "myst_nb", "myst_parser", "nbformat", "yaml"}
    assert "jupytext" in {_split(r)[0] for r in _project()["optional-dependencies"]["book"]}
    extensions = sorted((REPO / "book" / "_ext").glob("*.py"))
    assert extensions, "book/_ext has no extension (is _config.yml's local_extensions stale?)"
    for path in extensions:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in book_modules or top == "__future__", (
                    f"{path.relative_to(REPO)} imports {name}, which `make book-static` does not install")
