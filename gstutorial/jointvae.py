"""Chapter 8 — the Joint VAE (Dupont 2018): continuous and discrete latents with capacity control.

The encoder maps an image to the mean and log-variance of a diagonal Gaussian over ``D`` continuous
latents (``continuous_dim``) and to ``K`` *unconstrained* logits of one categorical latent
(``num_categories``). The decoder sees the concatenation ``[z_cont, z_disc]`` (``D + K`` numbers)
and returns one Bernoulli logit per pixel (784 for MNIST).

Objective (nats per image, averaged over the batch), at global training step ``t``::

    L(x) = Σ_pixels BCE(decoder(z), x)
           + γ_cont · |C_cont(t) − KL(q(z_cont | x) ‖ N(0, I))|
           + γ_disc · |C_disc(t) − KL(q(z_disc | x) ‖ Uniform(K))|

with ``z_cont`` reparameterized (:func:`gstutorial.reparam.reparameterize`), ``z_disc`` a
Gumbel-Softmax sample at a fixed temperature (:func:`gstutorial.gumbel.gumbel_softmax`), both KL
terms analytic (:func:`gstutorial.kl.kl_normal_std`, :func:`gstutorial.kl.kl_categorical_uniform`)
and the capacities rising linearly from 0 to their maxima over a number of iterations
(:func:`capacity_at`); the discrete one is capped at ``log K``, the most information a K-way code
can carry. The reconstruction term is the Bernoulli negative log-likelihood **summed** over pixels,
so all three terms are in nats and a capacity ``C`` means "this many nats of information about x".
(With a mean-squared error averaged over pixels, as in a widely copied implementation, γ and C have
no unit and the published settings mean nothing.)

Evaluation mode (:meth:`JointVAE.encode_deterministic`): the mean of the continuous latent and the
one-hot argmax of the discrete one. The discrete code's argmax is a clustering of the images;
:func:`cluster_accuracy` scores it against the true labels after the best one-to-one matching of
clusters to labels (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).

Training uses the package's engine (:func:`gstutorial.train.train`) unchanged: the model exposes
``loss(x, temperature, generator, step)``, ``config()`` and ``evaluate(x, temperature, generator)``.
The command line::

    python -m gstutorial.jointvae --epochs 30 --seed 0 --out runs/jointvae-seed0

Shapes: images ``(B, 784)``, ``mu``/``logvar``/``z_cont`` ``(B, D)``, logits and ``z_disc``
``(B, K)`` with the category axis last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .catvae import check_images, mlp, reconstruction_nll
from .data import binarize_fixed
from .gumbel import check_temperature, gumbel_softmax
from .kl import kl_categorical_uniform, kl_normal_std
from .reparam import reparameterize
from .utils import HelpFormatter, atomic_write, get_device, restoring_subnormal_mode, set_seed

__all__ = [
    "PAPER_SETTINGS",
    "ARCHITECTURES",
    "ClusterAccuracy",
    "IMAGE_SIZE",
    "JointVAE",
    "add_cli",
    "capacity_at",
    "cluster_accuracy",
    "conv_decoder",
    "conv_encoder",
    "default_train_config",
    "kl_per_dimension",
    "main",
    "plot_confusion",
    "predict_clusters",
    "register",
    "run_cli",
    "traverse",
]

#: Dupont (2018)'s MNIST settings: capacities (max nats, iterations, γ), latents, optimiser, τ.
PAPER_SETTINGS = {
    "continuous_dim": 10, "num_categories": 10,
    "cont_capacity": 5.0, "cont_iters": 25_000, "cont_gamma": 30.0,
    "disc_capacity": 5.0, "disc_iters": 25_000, "disc_gamma": 30.0,
    "batch_size": 64, "lr": 5e-4, "temperature": 0.67,
}


# --------------------------------------------------------------------------------------------------
# The capacity schedule
# --------------------------------------------------------------------------------------------------

def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_nonnegative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (a capacity is an amount of information "
                         f"in nats), got {value}")
    return value


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}; γ weighs the capacity "
                         "penalty, γ <= 0 would reward missing the target capacity")
    return value


def capacity_at(step: int, max_capacity: float, num_iters: int, delay: int = 0) -> float:
    """The capacity target ``C(t) = C_max · clip((t - delay) / num_iters, 0, 1)`` in nats at step ``t``.

    It is held at 0 for the first ``delay`` steps (0 by default: no hold), then rises linearly to
    ``max_capacity`` at step ``delay + num_iters`` and stays there.
    """
    step = _check_int(step, "step", 0)
    max_capacity = _check_nonnegative(max_capacity, "max_capacity")
    num_iters = _check_int(num_iters, "num_iters", 1)
    delay = _check_int(delay, "delay", 0)
    return max_capacity * min(max(step - delay, 0) / num_iters, 1.0)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

ARCHITECTURES = ("mlp", "conv", "conv32")
#: Image side each convolutional architecture reads (``"mlp"`` takes any ``input_dim``).
IMAGE_SIZE = {"conv": 28, "conv32": 32}


def conv_encoder(out_features: int, image_size: int = 28) -> nn.Sequential:
    """Convolutional encoder, ``(B, image_size²) -> (B, out_features)``.

    Three stride-2 convolutions (32, 32, 64 channels) and two linear layers (1024 -> 256 ->
    ``out_features``), ReLU between, nothing after the last: the layout of Dupont's MNIST network.
    ``image_size=32`` is his network as published (4×4 kernels; 32 -> 16 -> 8 -> 4 pixels);
    ``image_size=28`` adapts it to MNIST's own size (28 -> 14 -> 7 -> 4, the third kernel 3×3).
    """
    if image_size not in (28, 32):
        raise ValueError(f"image_size must be 28 or 32, got {image_size!r}")
    last_kernel = 3 if image_size == 28 else 4
    return nn.Sequential(
        nn.Unflatten(1, (1, image_size, image_size)),
        nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),             # 14×14 (16×16)
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),            # 7×7 (8×8)
        nn.Conv2d(32, 64, last_kernel, stride=2, padding=1), nn.ReLU(),  # 4×4
        nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, out_features))


def conv_decoder(in_features: int, image_size: int = 28) -> nn.Sequential:
    """The mirror of :func:`conv_encoder`: ``(B, in_features) -> (B, image_size²)`` Bernoulli logits."""
    if image_size not in (28, 32):
        raise ValueError(f"image_size must be 28 or 32, got {image_size!r}")
    first_kernel = 3 if image_size == 28 else 4
    return nn.Sequential(
        nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 32, first_kernel, stride=2, padding=1), nn.ReLU(),   # 7×7 (8×8)
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),             # 14×14 (16×16)
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),                         # 28×28 (32×32)
        nn.Flatten())


class JointVAE(nn.Module):
    """VAE with ``continuous_dim`` Gaussian latents and one ``num_categories``-way discrete latent.

    Parameters
    ----------
    continuous_dim : D, the number of continuous (Gaussian) latents (paper, MNIST: 10).
    num_categories : K, the classes of the discrete latent (paper, MNIST: 10).
    cont_capacity, disc_capacity : maximal capacities C_max in nats (paper: 5 and 5; the discrete
        target is capped at log K, so 5 nats means "all of log 10 ≈ 2.30").
    cont_iters, disc_iters : iterations over which each capacity rises linearly from 0 (paper: 25,000).
    cont_delay : iterations the continuous capacity is held at 0 before it starts to rise (paper: 0,
        no hold); meanwhile the discrete code is all the decoder gets (a test of chapter 8).
    cont_gamma, disc_gamma : γ, the weight of each capacity penalty (paper: 30).
    input_dim : pixels per image (default: 1024 for ``"conv32"``, else 784, MNIST's 28×28).
    hidden : widths of the encoder's hidden layers; the decoder mirrors them (``"mlp"`` only).
    architecture : ``"mlp"`` (fully connected, the default), ``"conv"`` (:func:`conv_encoder` and
        :func:`conv_decoder` on 28×28 images) or ``"conv32"`` (the same on 32×32 images, Dupont's
        network as published; resize MNIST with :func:`gstutorial.data.resize_images`).
    """

    name = "jointvae"

    def __init__(self, continuous_dim: int = 10, num_categories: int = 10, *,
                 cont_capacity: float = 5.0, disc_capacity: float = 5.0,
                 cont_iters: int = 25_000, disc_iters: int = 25_000, cont_delay: int = 0,
                 cont_gamma: float = 30.0, disc_gamma: float = 30.0,
                 input_dim: int | None = None, hidden: Sequence[int] = (512, 256),
                 architecture: str = "mlp") -> None:
        super().__init__()
        self.continuous_dim = _check_int(continuous_dim, "continuous_dim", 1)
        self.num_categories = _check_int(num_categories, "num_categories", 2)
        self.cont_capacity = _check_nonnegative(cont_capacity, "cont_capacity")
        self.disc_capacity = _check_nonnegative(disc_capacity, "disc_capacity")
        self.cont_iters = _check_int(cont_iters, "cont_iters", 1)
        self.disc_iters = _check_int(disc_iters, "disc_iters", 1)
        self.cont_delay = _check_int(cont_delay, "cont_delay", 0)
        self.cont_gamma = _check_positive(cont_gamma, "cont_gamma")
        self.disc_gamma = _check_positive(disc_gamma, "disc_gamma")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if input_dim is None:
            input_dim = IMAGE_SIZE.get(architecture, 28) ** 2
        self.input_dim = _check_int(input_dim, "input_dim", 1)
        hidden = tuple(_check_int(h, "hidden width", 1) for h in hidden)
        if not hidden:
            raise ValueError("hidden must name at least one hidden layer width, e.g. (512, 256)")
        self.hidden = hidden
        if architecture in IMAGE_SIZE and self.input_dim != IMAGE_SIZE[architecture] ** 2:
            side = IMAGE_SIZE[architecture]
            raise ValueError(f"architecture={architecture!r} takes {side}x{side} images (input_dim "
                             f"{side * side}), got input_dim {self.input_dim}; use architecture='mlp' for "
                             "other sizes")
        self.architecture = architecture
        d, k = self.continuous_dim, self.num_categories
        # encoder: one output layer for (mu, logvar, logits): 2D + K numbers. The logits are
        # unconstrained (no activation): they are log-probabilities up to a constant.
        # decoder: from D + K numbers to 784 Bernoulli logits.
        if architecture == "mlp":
            self.encoder = mlp([self.input_dim, *hidden, 2 * d + k])    # 784-512-256-(2D+K)
            self.decoder = mlp([d + k, *reversed(hidden), self.input_dim])  # (D+K)-256-512-784
        else:
            self.encoder = conv_encoder(2 * d + k, IMAGE_SIZE[architecture])
            self.decoder = conv_decoder(d + k, IMAGE_SIZE[architecture])
        self._eval_labels: torch.Tensor | None = None

    # ---------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """Everything needed to rebuild this model: ``JointVAE(**config minus 'model')``."""
        return {"model": self.name, "continuous_dim": self.continuous_dim,
                "num_categories": self.num_categories,
                "cont_capacity": self.cont_capacity, "disc_capacity": self.disc_capacity,
                "cont_iters": self.cont_iters, "disc_iters": self.disc_iters, "cont_delay": self.cont_delay,
                "cont_gamma": self.cont_gamma, "disc_gamma": self.disc_gamma,
                "input_dim": self.input_dim, "hidden": list(self.hidden), "architecture": self.architecture}

    @classmethod
    def from_config(cls, config: dict) -> JointVAE:
        """Rebuild a model from :meth:`config` (the entry for ``gstutorial.train.MODEL_REGISTRY``)."""
        if config.get("model", cls.name) != cls.name:
            raise ValueError(f"config describes a {config['model']!r} model, not {cls.name!r}")
        kwargs = {k: v for k, v in config.items() if k != "model"}
        continuous_dim = kwargs.pop("continuous_dim", 10)
        num_categories = kwargs.pop("num_categories", 10)
        return cls(continuous_dim, num_categories, **kwargs)

    def extra_repr(self) -> str:
        return (f"continuous={self.continuous_dim}, discrete={self.num_categories}, "
                f"C_cont={self.cont_capacity:g}/{self.cont_iters}"
                + (f" after {self.cont_delay}" if self.cont_delay else "") + f", C_disc={self.disc_capacity:g}/"
                f"{self.disc_iters} (cap log K={math.log(self.num_categories):.3f}), "
                f"gamma=({self.cont_gamma:g}, {self.disc_gamma:g})"
                + (f", architecture={self.architecture!r}" if self.architecture != "mlp" else ""))

    # ---------------------------------------------------------------------------------------------
    def capacities(self, step: int) -> tuple[float, float]:
        """``(C_cont(step), C_disc(step))`` in nats; the discrete target never exceeds ``log K``."""
        c_cont = capacity_at(step, self.cont_capacity, self.cont_iters, self.cont_delay)
        c_disc = min(capacity_at(step, self.disc_capacity, self.disc_iters), math.log(self.num_categories))
        return c_cont, c_disc

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu (B, D), logvar (B, D), logits (B, K))`` of q(z_cont | x) and q(z_disc | x)."""
        check_images(x, self.input_dim, binary=False)
        h = self.encoder(x)
        d = self.continuous_dim
        return h[:, :d], h[:, d:2 * d], h[:, 2 * d:]

    def decode(self, z_cont: torch.Tensor, z_disc: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, 784)`` of p(x | z) from ``z_cont (B, D)`` and ``z_disc (B, K)``.

        ``z_disc`` is a one-hot or relaxed one-hot code, never raw logits.
        """
        for z, width, name in ((z_cont, self.continuous_dim, "z_cont"), (z_disc, self.num_categories, "z_disc")):
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != width:
                raise ValueError(f"{name} must have shape (batch, {width}), got "
                                 f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if z_cont.shape[0] != z_disc.shape[0]:
            raise ValueError(f"z_cont and z_disc must have the same batch size, got {z_cont.shape[0]} "
                             f"and {z_disc.shape[0]}")
        return self.decoder(torch.cat([z_cont, z_disc], dim=1))

    def encode_deterministic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation-mode code: ``(mu (B, D), one_hot(argmax logits) (B, K))``."""
        mu, _, logits = self.encode(x)
        return mu, F.one_hot(logits.argmax(-1), self.num_categories).to(mu.dtype)

    def forward(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(recon_logits, mu, logvar, logits)``.

        In training mode the decoder sees a reparameterized Gaussian sample and a Gumbel-Softmax sample
        at ``temperature``; in eval mode (``model.eval()``) the mean and the one-hot argmax.
        """
        tau = check_temperature(temperature)
        mu, logvar, logits = self.encode(x)
        if self.training:
            z_cont = reparameterize(mu, logvar, generator)
            z_disc = gumbel_softmax(logits, tau, generator=generator)
        else:
            z_cont = mu
            z_disc = F.one_hot(logits.argmax(-1), self.num_categories).to(mu.dtype)
        return self.decode(z_cont, z_disc), mu, logvar, logits

    def loss_terms(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                   step: int = 0) -> dict[str, torch.Tensor]:
        """The objective's terms; see :meth:`loss` (which checks the arguments)."""
        recon_logits, mu, logvar, logits = self(x, temperature, generator)
        batch = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum") / batch
        kl_cont = kl_normal_std(mu, logvar).mean()
        kl_disc = kl_categorical_uniform(logits).mean()
        c_cont, c_disc = self.capacities(step)
        loss = recon + self.cont_gamma * (kl_cont - c_cont).abs() + self.disc_gamma * (kl_disc - c_disc).abs()
        # new_full fills on the device (new_tensor would copy from the host, a GPU sync per step)
        return {"loss": loss, "recon": recon, "kl_cont": kl_cont, "kl_disc": kl_disc,
                "c_cont": recon.new_full((), c_cont), "c_disc": recon.new_full((), c_disc)}

    def loss(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
             step: int = 0) -> dict[str, torch.Tensor]:
        """The capacity-controlled objective on a batch ``x`` of shape ``(B, 784)``.

        ``x`` is binarized (the book's default) or holds intensities in [0, 1] (Dupont's data; the
        reconstruction term is then a cross-entropy against grey levels, not a log-likelihood).

        Returns scalar tensors averaged over the batch (nats per image): ``"loss"`` (to minimise),
        ``"recon"`` (Σ_pixels BCE), ``"kl_cont"``, ``"kl_disc"`` and the targets ``"c_cont"``,
        ``"c_disc"`` at global step ``step``.
        """
        check_temperature(temperature)
        _check_int(step, "step", 0)
        check_images(x, self.input_dim, binary=False)
        return self.loss_terms(x, temperature, generator, step)

    # ---------------------------------------------------------------------------------------------
    def set_eval_labels(self, labels: torch.Tensor | None) -> None:
        """Labels of the evaluation set; with them :meth:`evaluate` also reports cluster accuracy.

        They are used only for scoring (never for training) and are not part of the state dict.
        """
        if labels is not None and (not isinstance(labels, torch.Tensor) or labels.ndim != 1):
            raise ValueError("labels must be a 1-D tensor of class indices (or None)")
        self._eval_labels = labels

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                 batch_size: int = 1000) -> dict[str, float]:
        """Per-epoch test metrics used by the training engine (eval mode: mean and argmax).

        ``x``: binarized images or intensities in [0, 1], whichever the model was trained on.
        ``recon`` (Σ_pixels BCE of the deterministic reconstruction), ``kl_cont``, ``kl_disc`` and,
        when :meth:`set_eval_labels` gave the labels of ``x`` (a ValueError if their number is not
        ``x``'s), ``cluster_acc``. ``temperature`` and
        ``generator`` are not needed in eval mode and are accepted for the engine's interface.
        """
        check_images(x, self.input_dim, binary=False)
        batch_size = _check_int(batch_size, "batch_size", 1)
        labels = self._eval_labels
        if labels is not None and labels.shape[0] != x.shape[0]:
            raise ValueError(f"the evaluation labels hold {labels.shape[0]} labels but x holds {x.shape[0]} "
                             "images; pass the labels of these images with model.set_eval_labels(labels), "
                             "or model.set_eval_labels(None) to skip the cluster accuracy")
        was_training = self.training
        self.eval()
        try:
            sums = {"recon": 0.0, "kl_cont": 0.0, "kl_disc": 0.0}
            clusters = []
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size]
                mu, logvar, logits = self.encode(xb)
                z_disc = F.one_hot(logits.argmax(-1), self.num_categories).to(mu.dtype)
                sums["recon"] += reconstruction_nll(self.decode(mu, z_disc), xb).double().sum().item()
                sums["kl_cont"] += kl_normal_std(mu, logvar).double().sum().item()
                sums["kl_disc"] += kl_categorical_uniform(logits).double().sum().item()
                clusters.append(logits.argmax(-1))
        finally:
            self.train(was_training)
        out = {k: v / x.shape[0] for k, v in sums.items()}
        if labels is not None:
            out["cluster_acc"] = cluster_accuracy(torch.cat(clusters), labels, self.num_categories).accuracy
        return out

    @torch.no_grad()
    def sample_prior(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images from the model: z_cont ~ N(0, I), z_disc ~ Uniform one-hot; pixel probabilities."""
        num = _check_int(num, "num", 1)
        p = next(self.parameters())
        z_cont = torch.randn(num, self.continuous_dim, generator=generator, device=p.device, dtype=p.dtype)
        index = torch.randint(self.num_categories, (num,), generator=generator, device=p.device)
        z_disc = F.one_hot(index, self.num_categories).to(p.dtype)
        return torch.sigmoid(self.decode(z_cont, z_disc))


def register() -> None:
    """Add :meth:`JointVAE.from_config` to ``gstutorial.train.MODEL_REGISTRY`` (idempotent).

    Called when this module is imported, so ``gstutorial.train.load_model`` can rebuild a Joint VAE
    from a checkpoint or weights file. While ``gstutorial.train`` is itself being imported (and
    imports this module) its registry does not exist yet; it then lists the entry itself.
    """
    from . import train as engine

    registry = getattr(engine, "MODEL_REGISTRY", None)
    if registry is not None:
        registry.setdefault(JointVAE.name, JointVAE.from_config)


# --------------------------------------------------------------------------------------------------
# Analysis: clusters, Hungarian matching, traversals
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ClusterAccuracy:
    """Result of :func:`cluster_accuracy`.

    accuracy : fraction of examples whose cluster, mapped to a label, equals the true label.
    mapping : ``(num_clusters,)`` int array, the label each cluster is matched to (−1: unmatched,
        when there are more clusters than labels).
    contingency : ``(num_clusters, num_classes)`` counts of (cluster, true label).
    confusion : ``(num_classes, num_classes)`` counts of (true label, predicted label) after
        mapping (examples in unmatched clusters are left out).
    """

    accuracy: float
    mapping: np.ndarray
    contingency: np.ndarray
    confusion: np.ndarray


def _as_index_array(values: object, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one index per example), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative indices, got {arr.min()}")
    return arr.astype(np.int64)


def cluster_accuracy(clusters: object, labels: object, num_clusters: int | None = None,
                     num_classes: int | None = None) -> ClusterAccuracy:
    """Unsupervised clustering accuracy under the best one-to-one matching of clusters to labels.

    The matching maximises the number of examples whose cluster is matched to their label (a linear
    assignment problem, solved by ``scipy.optimize.linear_sum_assignment``, the Hungarian algorithm
    of Kuhn 1955). Cluster indices are arbitrary names, so any permutation of them scores the same.

    Parameters
    ----------
    clusters, labels : 1-D integer arrays or tensors of the same length (cluster index, true label).
    num_clusters, num_classes : sizes of the two index sets (default: 1 + the largest index seen).
    """
    c = _as_index_array(clusters, "clusters")
    y = _as_index_array(labels, "labels")
    if c.shape != y.shape:
        raise ValueError(f"clusters and labels must have the same length, got {c.size} and {y.size}")
    if c.size == 0:
        raise ValueError("need at least one example")
    n_c = int(c.max()) + 1 if num_clusters is None else _check_int(num_clusters, "num_clusters", 1)
    n_y = int(y.max()) + 1 if num_classes is None else _check_int(num_classes, "num_classes", 1)
    if c.max() >= n_c or y.max() >= n_y:
        raise ValueError(f"indices out of range: clusters < {n_c} and labels < {n_y} required, got "
                         f"max cluster {c.max()} and max label {y.max()}")
    contingency = np.zeros((n_c, n_y), dtype=np.int64)
    np.add.at(contingency, (c, y), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    mapping = np.full(n_c, -1, dtype=np.int64)
    mapping[rows] = cols
    accuracy = float(contingency[rows, cols].sum() / c.size)
    confusion = np.zeros((n_y, n_y), dtype=np.int64)
    matched = mapping[c] >= 0
    np.add.at(confusion, (y[matched], mapping[c][matched]), 1)
    return ClusterAccuracy(accuracy=accuracy, mapping=mapping, contingency=contingency, confusion=confusion)


def plot_confusion(confusion: object, title: str, ax=None):
    """Draw a confusion matrix ``(true label, matched cluster)`` with its counts; return the axes.

    ``confusion`` is :attr:`ClusterAccuracy.confusion` (or any square count matrix); ``ax`` is a
    matplotlib axes (default: a new figure).
    """
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {counts.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(counts, cmap="Blues")
    for i, j in np.ndindex(counts.shape):
        ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=6.5,
                color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set(xticks=range(len(counts)), yticks=range(len(counts)), xlabel="predicted digit (matched code)",
           ylabel="true digit", title=title)
    return ax


def _check_model(model: object) -> None:
    if not isinstance(model, JointVAE):
        raise TypeError(f"model must be a JointVAE, got {type(model).__name__}")


@torch.no_grad()
def predict_clusters(model: JointVAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The discrete code's argmax for each image (evaluation mode): ``(B,)`` int64."""
    _check_model(model)
    check_images(x, model.input_dim, binary=False)
    batch_size = _check_int(batch_size, "batch_size", 1)
    return torch.cat([model.encode(x[i:i + batch_size])[2].argmax(-1) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def kl_per_dimension(model: JointVAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Average KL(q(z_d | x) ‖ N(0, 1)) of each continuous latent over the images: ``(D,)``.

    A latent whose KL is near 0 is unused (its posterior is the prior); the large ones carry the
    information, so they are the ones worth traversing.
    """
    _check_model(model)
    check_images(x, model.input_dim, binary=False)
    batch_size = _check_int(batch_size, "batch_size", 1)
    total = torch.zeros(model.continuous_dim, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        mu, logvar, _ = model.encode(x[i:i + batch_size])
        total += kl_normal_std(mu.unsqueeze(-1), logvar.unsqueeze(-1)).double().sum(0)
    return total / x.shape[0]


@torch.no_grad()
def traverse(model: JointVAE, dim: int, values: Sequence[float] | torch.Tensor,
             categories: Sequence[int] | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded images for each discrete class × each value of one continuous latent.

    Parameters
    ----------
    dim : the continuous latent to vary (0 ≤ dim < D).
    values : the values it takes (e.g. quantiles of N(0, 1)), length V.
    categories : the discrete classes, one per row (default: all K).
    base : ``(D,)`` values of the other continuous latents (default: 0, the prior mean).

    Returns
    -------
    ``(len(categories), V, 784)`` pixel probabilities.
    """
    _check_model(model)
    dim = _check_int(dim, "dim", 0)
    if dim >= model.continuous_dim:
        raise ValueError(f"dim must be < continuous_dim = {model.continuous_dim}, got {dim}")
    p = next(model.parameters())
    values = torch.as_tensor(values, dtype=p.dtype, device=p.device).flatten()
    if values.numel() == 0:
        raise ValueError("values must hold at least one value")
    categories = list(range(model.num_categories)) if categories is None else [int(k) for k in categories]
    if not categories or min(categories) < 0 or max(categories) >= model.num_categories:
        raise ValueError(f"categories must be non-empty indices in [0, {model.num_categories})")
    base = torch.zeros(model.continuous_dim, dtype=p.dtype, device=p.device) if base is None else \
        torch.as_tensor(base, dtype=p.dtype, device=p.device)
    if base.shape != (model.continuous_dim,):
        raise ValueError(f"base must have shape ({model.continuous_dim},), got {tuple(base.shape)}")
    rows, v = len(categories), values.numel()
    z_cont = base.expand(rows, v, -1).clone()
    z_cont[:, :, dim] = values
    index = torch.tensor(categories, device=p.device).repeat_interleave(v)
    z_disc = F.one_hot(index, model.num_categories).to(p.dtype)
    images = torch.sigmoid(model.decode(z_cont.reshape(rows * v, -1), z_disc))
    return images.view(rows, v, -1)


# --------------------------------------------------------------------------------------------------
# Training through the engine; command line
# --------------------------------------------------------------------------------------------------

def default_train_config(epochs: int = 30, seed: int = 0, **overrides):
    """The engine's :class:`~gstutorial.train.TrainConfig` with Dupont's MNIST settings.

    Batch 64, Adam 5e-4, and a **fixed** temperature of 0.67 (τ0 = τ_min = 0.67, no annealing).
    """
    from .train import TrainConfig

    tau = PAPER_SETTINGS["temperature"]
    kwargs = {"epochs": epochs, "seed": seed, "batch_size": PAPER_SETTINGS["batch_size"],
              "lr": PAPER_SETTINGS["lr"], "tau0": tau, "tau_min": tau, "anneal_rate": 0.0}
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    s = PAPER_SETTINGS
    p.add_argument("--continuous-dim", type=int, default=s["continuous_dim"], help="D, Gaussian latents")
    p.add_argument("--num-categories", type=int, default=s["num_categories"], help="K, classes of the discrete latent")
    p.add_argument("--cont-capacity", type=float, default=s["cont_capacity"], help="C_max of the continuous KL (nats)")
    p.add_argument("--disc-capacity", type=float, default=s["disc_capacity"],
                   help="C_max of the discrete KL (nats; the target is capped at log K)")
    p.add_argument("--cont-iters", type=int, default=s["cont_iters"], help="steps for C_cont to rise from 0 to its max")
    p.add_argument("--cont-delay", type=int, default=0,
                   help="steps C_cont is held at 0 before it starts to rise (0: no hold, as in the paper)")
    p.add_argument("--disc-iters", type=int, default=s["disc_iters"], help="steps for C_disc to rise from 0 to its max")
    p.add_argument("--cont-gamma", type=float, default=s["cont_gamma"], help="gamma of the continuous capacity penalty")
    p.add_argument("--disc-gamma", type=float, default=s["disc_gamma"], help="gamma of the discrete capacity penalty")
    p.add_argument("--temperature", type=float, default=s["temperature"], help="fixed Gumbel-Softmax temperature")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="mlp",
                   help="encoder/decoder: fully connected 784-512-256, convolutional (Dupont's layout on "
                        "28x28 images), or conv32: his network as published, on MNIST resized to 32x32")
    p.add_argument("--intensities", action="store_true",
                   help="train and evaluate on MNIST's grey levels in [0, 1] instead of binarized pixels, as "
                        "Dupont's code does (the reconstruction term is then a cross-entropy against grey levels)")
    p.add_argument("--epochs", type=int, default=30, help="total epochs (938 steps each at batch 64)")
    p.add_argument("--batch-size", type=int, default=s["batch_size"], help="images per step")
    p.add_argument("--lr", type=float, default=s["lr"], help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data order, binarization, noise")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on the test set every this many epochs")
    from .train import (
        add_run_arguments,  # train imports this module lazily; no cycle at import time
    )

    add_run_arguments(p, default_out="runs/jointvae-seedS")


_DESCRIPTION = ("Joint VAE (Dupont 2018) on dynamically binarized MNIST (or its grey levels, --intensities; "
                "chapter 8): 10 Gaussian latents "
                "and one 10-way Gumbel-Softmax latent at a fixed temperature 0.67, capacity-controlled "
                "objective recon + gamma |C(t) - KL| for each. Defaults are the paper's MNIST settings. "
                "Re-running the same command resumes from OUT/checkpoint.pt.")


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``jointvae`` subcommand to ``python -m gstutorial.train``'s subparsers; return it."""
    p = subparsers.add_parser("jointvae", help="Joint VAE: continuous + discrete latents (chapter 8)",
                              description=_DESCRIPTION, formatter_class=HelpFormatter)
    _add_arguments(p)
    return p


@restoring_subnormal_mode()
def run_cli(args: argparse.Namespace) -> int:
    """Train a Joint VAE from parsed command-line arguments with :func:`gstutorial.train.train`.

    Writes ``OUT/checkpoint.pt``, ``history.json``/``.csv``, ``final_metrics.json`` (cluster
    accuracy, confusion matrix) and, with ``--export``, a weights file. Returns the exit status.
    Subnormals are flushed while it runs (unless ``--keep-subnormals``) and the caller's setting is
    restored afterwards.
    """
    from .train import CHECKPOINT_NAME, configure_cpu, export_weights, load_run_data, train_from_cli

    configure_cpu(args)
    config = default_train_config(args.epochs, args.seed, batch_size=args.batch_size, lr=args.lr,
                                  tau0=check_temperature(args.temperature),
                                  tau_min=check_temperature(args.temperature), eval_every=args.eval_every,
                                  binarize=not args.intensities)
    out = Path(args.out or f"runs/jointvae-seed{args.seed}")
    device = get_device(args.device)
    set_seed(args.seed)
    model = JointVAE(args.continuous_dim, args.num_categories, cont_capacity=args.cont_capacity,
                     disc_capacity=args.disc_capacity, cont_iters=args.cont_iters, disc_iters=args.disc_iters,
                     cont_delay=args.cont_delay, cont_gamma=args.cont_gamma, disc_gamma=args.disc_gamma,
                     architecture=args.architecture)
    image_size = IMAGE_SIZE.get(args.architecture, 28)
    train_x, test_x, test_y = load_run_data(args, device, test_binarize="none" if args.intensities else "fixed",
                                            image_size=image_size)
    model.set_eval_labels(test_y)
    result = train_from_cli(model, config, train_x, test_x, out, args, device, f"JointVAE({model.extra_repr()})")
    metrics = model.evaluate(test_x, config.tau0)
    scored = cluster_accuracy(predict_clusters(model, test_x), test_y, model.num_categories, 10)
    final = {"epochs": result.epoch, "steps": result.step, "temperature": config.tau0,
             "train_wall_s": result.history[-1]["elapsed_s"] if result.history else 0.0,
             "test_set": ("MNIST test, intensities (load_mnist binarize='none')" if args.intensities else
                          "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)")
             + ("" if image_size == 28 else f", resized to {image_size}x{image_size} (resize_images)"),
             **{f"test_{k}": v for k, v in metrics.items()},
             "cluster_accuracy": scored.accuracy, "mapping": scored.mapping.tolist(),
             "confusion": scored.confusion.tolist()}
    if args.intensities:  # for comparison with the binarized runs: the same codes scored on binarized digits
        binary_x = binarize_fixed(test_x, seed=0)  # = load_mnist(binarize="fixed", seed=0), resized if asked
        final["cluster_accuracy_binarized_test"] = cluster_accuracy(
            predict_clusters(model, binary_x), test_y, model.num_categories, 10).accuracy
    atomic_write(out / "final_metrics.json", lambda tmp: tmp.write_text(json.dumps(final, indent=1) + "\n"))
    outputs = [out / CHECKPOINT_NAME, out / "history.json", out / "history.csv", out / "final_metrics.json"]
    if args.export:
        outputs.append(export_weights(model, args.export, dtype=getattr(torch, args.export_dtype),
                                      history=result.history, train_config=dataclasses.asdict(config),
                                      final_metrics=final))
    print(f"final test metrics (eval mode: mean + argmax): cluster accuracy={scored.accuracy:.4f}, "
          + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k != "cluster_acc"))
    print("wrote:\n" + "\n".join(f"  {p}" for p in outputs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gstutorial.jointvae`` (the same options as ``gstutorial.train jointvae``)."""
    from .data import MNISTDataError
    from .train import CheckpointMismatchError

    parser = argparse.ArgumentParser(prog="python -m gstutorial.jointvae", description=_DESCRIPTION,
                                     formatter_class=HelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except (ValueError, TypeError, CheckpointMismatchError, MNISTDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


register()

if __name__ == "__main__":
    # run the canonical module's main (not this __main__ copy), so the registry holds one JointVAE class
    from gstutorial.jointvae import main as _main

    raise SystemExit(_main())
