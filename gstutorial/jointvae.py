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

Training uses the package's engine (:func:`gstutorial.engine.train`) unchanged: the model implements
its protocol (``loss``, ``config``, ``from_config``, ``evaluate``). What a trained model learned is
analysed by :mod:`gstutorial.analysis`. The command line::

    python -m gstutorial jointvae --epochs 30 --seed 0 --out runs/jointvae-seed0

Shapes: images ``(B, 784)``, ``mu``/``logvar``/``z_cont`` ``(B, D)``, logits and ``z_disc``
``(B, K)`` with the category axis last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .analysis import cluster_accuracy
from .checks import check_choice, check_int, check_real, check_temperature, check_tensor
from .engine import TrainConfig
from .gumbel import gumbel_softmax
from .kl import kl_categorical_uniform, kl_normal_std
from .nets import (
    ARCHITECTURES,
    IMAGE_SIZE,
    check_images,
    conv_decoder,
    conv_encoder,
    mlp,
    reconstruction_nll,
)
from .reparam import reparameterize

__all__ = ["PAPER_SETTINGS", "JointVAE", "capacity_at", "default_train_config"]

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

def capacity_at(step: int, max_capacity: float, num_iters: int, delay: int = 0) -> float:
    """The capacity target ``C(t) = C_max · clip((t - delay) / num_iters, 0, 1)`` in nats at step ``t``.

    It is held at 0 for the first ``delay`` steps (0 by default: no hold), then rises linearly to
    ``max_capacity`` at step ``delay + num_iters`` and stays there.
    """
    step = check_int(step, "step", 0)
    max_capacity = check_real(max_capacity, "max_capacity", nonnegative=True)
    num_iters = check_int(num_iters, "num_iters", 1)
    delay = check_int(delay, "delay", 0)
    return max_capacity * min(max(step - delay, 0) / num_iters, 1.0)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

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
        self.continuous_dim = check_int(continuous_dim, "continuous_dim", 1)
        self.num_categories = check_int(num_categories, "num_categories", 2)
        self.cont_capacity = check_real(cont_capacity, "cont_capacity", nonnegative=True)
        self.disc_capacity = check_real(disc_capacity, "disc_capacity", nonnegative=True)
        self.cont_iters = check_int(cont_iters, "cont_iters", 1)
        self.disc_iters = check_int(disc_iters, "disc_iters", 1)
        self.cont_delay = check_int(cont_delay, "cont_delay", 0)
        self.cont_gamma = check_real(cont_gamma, "cont_gamma", positive=True)
        self.disc_gamma = check_real(disc_gamma, "disc_gamma", positive=True)
        check_choice(architecture, "architecture", ARCHITECTURES)
        if input_dim is None:
            input_dim = IMAGE_SIZE.get(architecture, 28) ** 2
        self.input_dim = check_int(input_dim, "input_dim", 1)
        hidden = tuple(check_int(h, "hidden width", 1) for h in hidden)
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
        """Rebuild a model from :meth:`config` (used by ``gstutorial.checkpoints.build_model`` and the engine)."""
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
        return self._encode(x)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`encode` of images already checked."""
        h = self.encoder(x)
        d = self.continuous_dim
        return h[:, :d], h[:, d:2 * d], h[:, 2 * d:]

    def decode(self, z_cont: torch.Tensor, z_disc: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, 784)`` of p(x | z) from ``z_cont (B, D)`` and ``z_disc (B, K)``.

        ``z_disc`` is a one-hot or relaxed one-hot code, never raw logits.
        """
        for z, width, name in ((z_cont, self.continuous_dim, "z_cont"), (z_disc, self.num_categories, "z_disc")):
            if check_tensor(z, name).ndim != 2 or z.shape[1] != width:
                raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(z.shape)}")
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
        check_images(x, self.input_dim, binary=False)
        return self._forward(x, tau, generator)

    def _forward(self, x: torch.Tensor, tau: float, generator: torch.Generator | None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar, logits = self._encode(x)
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
        recon_logits, mu, logvar, logits = self._forward(x, temperature, generator)
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
        check_int(step, "step", 0)
        check_images(x, self.input_dim, binary=False)
        return self.loss_terms(x, temperature, generator, step)

    # ---------------------------------------------------------------------------------------------
    def set_eval_labels(self, labels: torch.Tensor | None) -> None:
        """Labels of the evaluation set; with them :meth:`evaluate` also reports cluster accuracy.

        They are used only for scoring (never for training) and are not part of the state dict.
        """
        if labels is not None:
            if check_tensor(labels, "labels", floating=False).is_floating_point():
                raise TypeError(f"labels must hold integer class indices, got {labels.dtype}")
            if labels.ndim != 1:
                raise ValueError(f"labels must be a 1-D tensor of class indices (or None), got shape "
                                 f"{tuple(labels.shape)}")
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
        batch_size = check_int(batch_size, "batch_size", 1)
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
                mu, logvar, logits = self._encode(xb)
                z_disc = F.one_hot(logits.argmax(-1), self.num_categories).to(mu.dtype)
                sums["recon"] += reconstruction_nll(self.decoder(torch.cat([mu, z_disc], dim=1)), xb).double().sum().item()
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
        num = check_int(num, "num", 1)
        p = next(self.parameters())
        z_cont = torch.randn(num, self.continuous_dim, generator=generator, device=p.device, dtype=p.dtype)
        index = torch.randint(self.num_categories, (num,), generator=generator, device=p.device)
        z_disc = F.one_hot(index, self.num_categories).to(p.dtype)
        return torch.sigmoid(self.decode(z_cont, z_disc))


# --------------------------------------------------------------------------------------------------
# Training settings
# --------------------------------------------------------------------------------------------------

def default_train_config(epochs: int = 30, seed: int = 0, **overrides) -> TrainConfig:
    """The engine's :class:`~gstutorial.engine.TrainConfig` with Dupont's MNIST settings.

    Batch 64, Adam 5e-4, and a **fixed** temperature of 0.67 (τ0 = τ_min = 0.67, no annealing).
    """
    tau = PAPER_SETTINGS["temperature"]
    kwargs = {"epochs": epochs, "seed": seed, "batch_size": PAPER_SETTINGS["batch_size"],
              "lr": PAPER_SETTINGS["lr"], "tau0": tau, "tau_min": tau, "anneal_rate": 0.0}
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


