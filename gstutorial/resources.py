"""What the package ships besides code: the trained weights the chapters load and the benchmark results
they display, found by name wherever the package is installed (a wheel, an sdist, an editable install
of the repository) through :mod:`importlib.resources`.

* ``gstutorial/weights/NAME.pt``: weights files (:func:`gstutorial.checkpoints.export_weights`), loaded
  as models by :func:`gstutorial.checkpoints.pretrained`;
* ``gstutorial/results/NAME.json``: what the benchmarks recorded (``benchmarks/*.py`` write these
  files by default), read by :func:`recorded_results`.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED", "RECORDED_RESULTS", "recorded_results", "weights_file"]

#: The trained models the package ships (``gstutorial/weights/NAME.pt``): chapter 7's two categorical
#: VAEs and chapter 8's two Joint VAEs.
PRETRAINED = ("catvae-20x10-gs", "catvae-20x10-st", "jointvae", "jointvae-conv")

#: The benchmark results the package ships (``gstutorial/results/NAME.json``), by the chapter that
#: reads them: 7 (``catvae_quality``, ``catvae_port``) and the Benchmarks appendix (``catvae_quality``,
#: ``catvae_speed``, ``catvae_speed_flush``, ``subnormals``, ``catvae_port``), 8 (``jointvae``) and 9
#: (``estimators_vae``: every estimator for 3 epochs; ``estimators_vae_30``: four of them for 30).
RECORDED_RESULTS = ("catvae_quality", "catvae_speed", "catvae_speed_flush", "catvae_port", "estimators_vae",
                    "estimators_vae_30", "jointvae", "subnormals")


def _shipped(folder: str, name: object, names: tuple[str, ...], suffix: str, what: str) -> Traversable:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in names:
        raise ValueError(f"no {what} named {name!r}; the package ships: {', '.join(names)}")
    file = resources.files(__package__) / folder / f"{name}{suffix}"
    if not file.is_file():
        raise FileNotFoundError(
            f"{what} {name!r} is missing from this installation of gstutorial ({folder}/{name}{suffix}): "
            "it was built without its package data. Reinstall it from a wheel or the repository "
            "(pip install --force-reinstall gstutorial)")
    return file


def weights_file(name: str) -> Path:
    """The path of the shipped weights file ``name`` (one of :data:`PRETRAINED`).

    ``ValueError`` lists the shipped names when ``name`` is not one of them. pip installs a package
    as files, so the weights are files on disk; a ``RuntimeError`` says so when gstutorial is
    imported from an archive instead.
    """
    file = _shipped("weights", name, PRETRAINED, ".pt", "pretrained model")
    if not isinstance(file, Path):
        raise RuntimeError(f"gstutorial is imported from an archive ({file}), so its weights are not files on "
                           "disk; install it with pip")
    return file


def recorded_results(name: str) -> dict[str, Any]:
    """The benchmark results ``name`` (one of :data:`RECORDED_RESULTS`) as the benchmark wrote them.

    ``ValueError`` lists the shipped names when ``name`` is not one of them.
    """
    return json.loads(_shipped("results", name, RECORDED_RESULTS, ".json", "recorded results").read_text(
        encoding="utf-8"))
