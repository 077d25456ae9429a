"""Chapter 7 — the widely copied PyTorch port of the categorical VAE, its flaws made switchable.

Blog posts about the Gumbel-Softmax VAE reuse one PyTorch script, YongfeiYan/Gumbel_Softmax_VAE
(``gumbel_softmax_vae.py``). Four of its choices change the numbers a reader gets; this module
reproduces each as an option of chapter 7's model, so that each can be trained by the same engine
(:func:`gstutorial.engine.train`) and scored on the same test set as the corrected model:

``"relu_logits"``
    a ReLU after the encoder's last layer: the logits of q(z|x) cannot go below 0.
``"epoch_reset"``
    the temperature restarts at τ_0 at every epoch and, after every batch whose index b within the
    epoch satisfies ``b % 100 == 1``, is multiplied by ``exp(-r·b)`` (r = 3e-5, floor 0.5)
    (:func:`port_temperature`); the engine's global-step τ is ignored.
``"grey_levels"``
    the Bernoulli likelihood evaluated on grey-level intensities instead of binarized pixels (the
    engine's ``TrainConfig(binarize=False)``, see :func:`port_train_config`).
``"relaxed_eval"``
    the test loss computed the way training computes it: a relaxed Gumbel-Softmax code at the
    restarted temperature (τ ≈ 1), not an exact one-hot sample (:func:`port_test_nelbo`). It
    changes no weights, only the number reported.

The port's other two flaws change no number and are not modelled: its sampler reads the latent
sizes (and the device) from module-level globals, and its likelihood uses the deprecated
``size_average=False`` argument of ``binary_cross_entropy``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .catvae import CategoricalVAE, negative_elbo
from .checks import check_int, check_real, check_temperature, value_checks
from .engine import TrainConfig
from .nets import check_images

__all__ = [
    "PORT_ANNEAL_RATE",
    "PORT_FLAWS",
    "TRAINING_FLAWS",
    "PortVAE",
    "check_flaws",
    "port_temperature",
    "port_test_nelbo",
    "port_train_config",
]

#: The flaws of the port that change numbers, in the order the chapter's table lists them.
PORT_FLAWS = ("relu_logits", "epoch_reset", "grey_levels", "relaxed_eval")
#: The flaws that change training (the last one, ``relaxed_eval``, changes only the evaluation).
TRAINING_FLAWS = PORT_FLAWS[:3]
#: r of the port's schedule (its ``ANNEAL_RATE``).
PORT_ANNEAL_RATE = 3e-5


def check_flaws(flaws: Iterable[str], allowed: Sequence[str] = PORT_FLAWS) -> tuple[str, ...]:
    """``flaws`` as a tuple in the order of ``allowed``; a ``ValueError`` names an unknown one."""
    if isinstance(flaws, str) or not isinstance(flaws, Iterable):
        raise TypeError(f"flaws must be a list of names such as ['relu_logits'], got {type(flaws).__name__}")
    flaws = list(flaws)
    unknown = [f for f in flaws if f not in allowed]
    if unknown:
        raise ValueError(f"flaws: unknown {unknown}; choose among {list(allowed)}")
    return tuple(f for f in allowed if f in flaws)


def port_temperature(step: int, steps_per_epoch: int = 600, tau0: float = 1.0, tau_min: float = 0.5,
                     rate: float = PORT_ANNEAL_RATE) -> float:
    """The port's temperature at global step ``step``: restarted every epoch, decayed by batch index.

    With ``b = step mod steps_per_epoch`` the batch index within the epoch, the port trains batch b at
    ``max(tau_min, tau0 · exp(−rate · Σ b'))``, the sum over the earlier batches b' < b of the epoch
    with ``b' mod 100 = 1`` (it updates τ *after* such a batch). With 600 batches the exponent ends at
    ``rate · (1 + 101 + … + 501) = 1506 · rate``.
    """
    step, steps_per_epoch = check_int(step, "step", 0), check_int(steps_per_epoch, "steps_per_epoch", 1)
    tau0, rate = check_real(tau0, "tau0", positive=True), check_real(rate, "rate", nonnegative=True)
    tau_min = check_real(tau_min, "tau_min", nonnegative=True)
    b = step % steps_per_epoch
    exponent = sum(range(1, b, 100))  # the batches 1, 101, 201, ... before b
    return max(tau_min, tau0 * math.exp(-rate * exponent))


def port_train_config(flaws: Iterable[str] = (), **kwargs) -> TrainConfig:
    """Chapter 7's :class:`~gstutorial.engine.TrainConfig` with ``"grey_levels"`` switched on or off.

    ``"grey_levels"`` in ``flaws`` trains on the intensities themselves (``binarize=False``); the
    other flaws live in the model (:class:`PortVAE`). ``kwargs`` go to ``TrainConfig`` (``epochs``,
    ``seed``, ...).
    """
    flaws = check_flaws(flaws)
    if "binarize" in kwargs:
        raise ValueError("binarize: set it through flaws (\"grey_levels\" trains on intensities)")
    return TrainConfig(binarize="grey_levels" not in flaws, **kwargs)


class PortVAE(CategoricalVAE):
    """Chapter 7's :class:`~gstutorial.catvae.CategoricalVAE` with the port's training flaws as options.

    Parameters
    ----------
    flaws : any of :data:`TRAINING_FLAWS`. ``"relu_logits"`` appends a ReLU to the encoder (so every
        evaluation sees it too); ``"epoch_reset"`` makes :meth:`loss` use :func:`port_temperature` of
        the engine's global step instead of the temperature it is given; ``"grey_levels"`` lets
        :meth:`loss` accept grey-level images (train with :func:`port_train_config`). No flaws: the
        same network, initialisation and loss as ``CategoricalVAE``.
    steps_per_epoch : batches per epoch, where the port's schedule restarts (600 for MNIST, batch 100).
    The other arguments are ``CategoricalVAE``'s (chapter 7's estimators ``"gs"`` and ``"st"`` only).
    """

    name = "catvae_port"

    def __init__(self, latent_dim: int = 20, num_categories: int = 10, estimator: str = "gs",
                 input_dim: int = 784, hidden: Sequence[int] = (512, 256), flaws: Iterable[str] = (),
                 steps_per_epoch: int = 600) -> None:
        if estimator not in ("gs", "st"):
            raise ValueError(f"estimator must be 'gs' or 'st' (the port's two), got {estimator!r}")
        super().__init__(latent_dim, num_categories, estimator, input_dim, hidden)
        self.flaws = check_flaws(flaws, TRAINING_FLAWS)
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
        if "relu_logits" in self.flaws:  # no parameters: the state dict is CategoricalVAE's
            self.encoder.append(nn.ReLU())

    def config(self) -> dict:
        """Everything needed to rebuild this model (``CategoricalVAE``'s, plus the flaws)."""
        return {**super().config(), "flaws": list(self.flaws), "steps_per_epoch": self.steps_per_epoch}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, flaws={list(self.flaws)}"

    def loss(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
             step: int = 0) -> dict[str, torch.Tensor]:
        """``CategoricalVAE.loss`` at the port's temperature (``"epoch_reset"``), on grey levels if allowed."""
        check_temperature(temperature)
        if "epoch_reset" in self.flaws:
            temperature = port_temperature(step, self.steps_per_epoch)
        if "grey_levels" not in self.flaws:
            return super().loss(x, temperature, generator, step)
        check_images(x, self.input_dim, binary=False)
        with value_checks(False):  # the parent's check wants binary pixels; these were checked above
            return super().loss(x, temperature, generator, step)


@torch.no_grad()
def port_test_nelbo(model: CategoricalVAE, x: torch.Tensor, temperature: float = 1.0,
                    generator: torch.Generator | None = None, batch_size: int = 1000) -> float:
    """The test number the port reports (flaw ``"relaxed_eval"``): the mean relaxed −ELBO, in nats.

    The decoder sees a Gumbel-Softmax code at ``temperature`` (the port restarts τ for its test loop,
    so τ ≈ 1), not an exact one-hot sample; compare :func:`gstutorial.catvae.evaluate`'s
    ``hard_nelbo``, the discrete model's bound.
    """
    check_int(batch_size, "batch_size", 1)
    total = sum(negative_elbo(model, x[i:i + batch_size], temperature, generator=generator).double().sum().item()
                for i in range(0, x.shape[0], batch_size))
    return total / x.shape[0]
