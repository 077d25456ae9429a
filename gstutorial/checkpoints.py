"""Model files: the one table of model kinds, compact weights files, and loading a model from either
a weights file or a training checkpoint.

Two formats, both plain dicts of tensors and data (read with ``torch.load(weights_only=True)``):

* a **training checkpoint** (:data:`gstutorial.engine.CHECKPOINT_FORMAT`), written by the engine after
  every epoch, holds the optimizer and random-number states needed to resume;
* a **weights file** (:data:`WEIGHTS_FORMAT`), written by :func:`export_weights`, holds the model's
  tensors (float16 by default) and metadata: what the book commits and loads.

Both store the model's ``config()``; :func:`build_model` rebuilds the model from it through
:data:`MODEL_KINDS`. The weights files the chapters use ship inside the package: :func:`pretrained`
loads them by name (:data:`PRETRAINED`), wherever the package is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .catvae import CategoricalVAE
from .checks import check_choice
from .engine import CHECKPOINT_FORMAT
from .files import atomic_write
from .jointvae import JointVAE
from .resources import PRETRAINED, weights_file
from .runtime import get_device

__all__ = ["MODEL_KINDS", "PRETRAINED", "WEIGHTS_FORMAT", "build_model", "export_weights", "load_model",
           "pretrained"]

WEIGHTS_FORMAT = "gstutorial-weights-v1"

#: The models a checkpoint or weights file can hold, by their ``config()["model"]`` name.
MODEL_KINDS: dict[str, type[nn.Module]] = {CategoricalVAE.name: CategoricalVAE, JointVAE.name: JointVAE}


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config()`` dict (the kind named by ``config["model"]``)."""
    name = config.get("model")
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[name].from_config(config)


def export_weights(model: nn.Module, path: str | os.PathLike, dtype: torch.dtype = torch.float16,
                   **metadata: Any) -> Path:
    """Write a compact, weights-only file (no optimizer state) for distribution, atomically.

    Floating-point tensors are stored in ``dtype`` (float16 halves the size; the book's committed
    models use it). ``metadata`` (e.g. ``history``, ``train_config``, ``final_metrics``: plain data)
    is stored alongside. Load with :func:`load_model`.
    """
    check_choice(dtype, "dtype", (torch.float16, torch.bfloat16, torch.float32, torch.float64))
    weights = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
               for k, v in model.state_dict().items()}
    payload = {"format": WEIGHTS_FORMAT, "model_config": model.config(), "state_dict": weights,
               "dtype": str(dtype).removeprefix("torch."), **metadata}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | os.PathLike, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model from a training checkpoint or a weights file; return ``(model, metadata)``.

    The model is rebuilt from the stored configuration, cast to ``dtype``, put on ``device``
    (default :func:`gstutorial.runtime.get_device`) and set to eval mode. ``metadata`` holds the
    remaining entries (history, configurations, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):  # see engine.load_checkpoint
        state = torch.load(path, map_location="cpu", weights_only=True)
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == CHECKPOINT_FORMAT:
        weights = state["model_state"]
    elif fmt == WEIGHTS_FORMAT:
        weights = state["state_dict"]
    else:
        raise ValueError(f"{path} is neither a gstutorial checkpoint nor a weights file (format {fmt!r})")
    model = build_model(state["model_config"])
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()})
    model.to(device=get_device(device), dtype=dtype).eval()
    metadata = {k: v for k, v in state.items()
                if k not in ("model_state", "state_dict", "optimizer_state", "rng")}
    return model, metadata


def pretrained(name: str, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, dict[str, Any]]:
    """Load one of the trained models the package ships, by name; return ``(model, metadata)``.

    ``name`` is one of :data:`PRETRAINED` (``ValueError`` lists them otherwise): ``catvae-20x10-gs`` and
    ``catvae-20x10-st`` (chapter 7), ``jointvae`` and ``jointvae-conv`` (chapter 8). The files are read
    from the installed package (:func:`gstutorial.resources.weights_file`), so this works from a wheel
    as well as in the repository; ``device`` and ``dtype`` are those of :func:`load_model`.
    """
    return load_model(weights_file(name), device=device, dtype=dtype)
