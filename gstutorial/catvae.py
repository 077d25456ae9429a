"""Chapter 7 — a variational autoencoder with categorical latent variables, on binarized MNIST.

The model has ``N`` latent variables (``latent_dim``), each a categorical with ``K`` classes
(``num_categories``). The encoder maps an image to ``N·K`` *unconstrained* logits — they are
log-probabilities up to a per-variable constant, so no activation is applied to them (a ReLU there
would forbid every probability below the largest one's ``exp(-max)`` share and zero out gradients).
The decoder maps a (relaxed or exact) one-hot code ``z`` of shape ``(N, K)`` to 784 Bernoulli logits.

Loss (negative ELBO, in nats per image, averaged over the batch)::

    -ELBO(x) = Σ_pixels BCE(decoder(z), x)  +  Σ_n KL(q(z_n | x) ‖ Uniform(K)),   z ~ q(z | x)

where the reconstruction term is the Bernoulli negative log-likelihood of the *binarized* image
summed over its pixels (``binary_cross_entropy_with_logits(..., reduction="none").sum(-1)``) and the
KL term is analytic (:func:`gstutorial.kl.kl_categorical_uniform`). During training ``z`` is a
Gumbel-Softmax sample (estimator ``"gs"``) or a straight-through Gumbel-Softmax sample (``"st"``:
exact one-hot forward, relaxed gradient backward), both from :mod:`gstutorial.gumbel`.

Chapter 9 trains the same model with any estimator of :mod:`gstutorial.estimators` (``estimator=``
one of its names, e.g. ``"reinmax"`` or ``"reinforce_loo"``): the reconstruction term is then that
estimator's surrogate over ``num_samples`` samples of z (``k`` conditional draws for Gumbel-Rao), the
KL term stays analytic. ``"gs"`` and ``"st"`` keep chapter 7's code path unchanged.

Evaluation (all on a fixed binarization of the test set, :func:`negative_elbo`,
:func:`importance_weighted_bound`, :func:`evaluate`):

* relaxed −ELBO at a temperature τ: the decoder sees a Gumbel-Softmax sample (what "gs" optimises);
* hard (unrelaxed) −ELBO: the decoder sees an exact one-hot sample of q(z|x) — the true ELBO of
  the discrete model, single-sample estimate;
* the importance-weighted bound with k one-hot samples from the discrete posterior and the uniform
  prior, ``-log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x)`` (Burda et al. 2016), which tightens towards
  ``-log p(x)`` as k grows.

Shapes: images ``(B, 784)``, logits and codes ``(B, N, K)`` with the category axis last.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_temperature, check_tensor
from .estimators import ESTIMATORS as LAB_ESTIMATORS
from .estimators import get_estimator
from .gumbel import gumbel_max, gumbel_softmax, one_hot_sample
from .kl import kl_categorical_uniform
from .nets import check_images, mlp, reconstruction_nll

__all__ = [
    "ALL_ESTIMATORS",
    "ESTIMATORS",
    "CategoricalVAE",
    "evaluate",
    "importance_weighted_bound",
    "kl_to_uniform",
    "negative_elbo",
    "parse_latent",
]

#: Training estimators: Gumbel-Softmax (relaxed sample) and straight-through Gumbel-Softmax.
ESTIMATORS = ("gs", "st")
#: Chapter 7's short names are aliases of chapter 9's registry entries: one code path for all.
_ALIASES = {"gs": "gumbel_softmax", "st": "st_gumbel_softmax"}
#: Every estimator name the model accepts: chapter 7's two, then chapter 9's registry.
ALL_ESTIMATORS = ESTIMATORS + tuple(LAB_ESTIMATORS)

_LATENT_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_latent(spec: str) -> tuple[int, int]:
    """Parse a latent specification ``"NxK"`` (e.g. ``"20x10"``) into ``(N, K)``.

    ``N`` is the number of categorical variables, ``K`` the number of classes of each; N >= 1 and
    K >= 2 (a one-class variable carries no information).
    """
    if not isinstance(spec, str):
        raise TypeError(f"the latent specification must be a string like '20x10', got {type(spec).__name__}")
    match = _LATENT_RE.match(spec)
    if match is None:
        raise ValueError(f"bad latent specification {spec!r}: write it as NxK, the number of categorical "
                         "variables times the classes of each, e.g. '20x10'")
    n, k = int(match.group(1)), int(match.group(2))
    _check_latent(n, k)
    return n, k


def _check_latent(latent_dim: int, num_categories: int) -> tuple[int, int]:
    return check_int(latent_dim, "latent_dim", 1), check_int(num_categories, "num_categories", 2)


def _check_codes(z: torch.Tensor, latent_dim: int, num_categories: int) -> None:
    check_tensor(z, "z")
    expected = (latent_dim, num_categories)
    if z.ndim != 3 or tuple(z.shape[1:]) != expected:
        raise ValueError(f"z must have shape (batch, {latent_dim}, {num_categories}), got {tuple(z.shape)}; "
                         "pass one-hot or relaxed one-hot codes, never raw logits")


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Σ_n KL(q(z_n | x) ‖ Uniform(K)) for logits ``(B, N, K)``: shape ``(B,)``.

    The per-variable KL is chapter 1's :func:`gstutorial.kl.kl_categorical_uniform`.
    """
    if isinstance(logits, torch.Tensor) and logits.ndim != 3:
        raise ValueError(f"logits must have shape (B, N, K), got {tuple(logits.shape)}; for one categorical "
                         "variable per image use logits.unsqueeze(1)")
    return kl_categorical_uniform(logits).sum(-1)


class CategoricalVAE(nn.Module):
    """VAE with ``latent_dim`` categorical latent variables of ``num_categories`` classes each.

    Parameters
    ----------
    latent_dim : N, the number of categorical variables (paper: 20 or 30).
    num_categories : K, the classes of each variable (paper: 10).
    estimator : ``"gs"`` (Gumbel-Softmax: the decoder sees the relaxed sample) or ``"st"``
        (straight-through: the decoder sees the exact one-hot sample, gradients flow through the
        relaxed one), or any name of :data:`gstutorial.estimators.ESTIMATORS` (chapter 9), whose
        surrogate then gives the reconstruction term.
    num_samples : samples of z per image in the training loss (chapter 9's estimators only; the
        score-function estimators need S >= 2 for the leave-one-out baseline).
    k : conditional Gumbel draws of Gumbel-Rao (ignored by the other estimators).
    input_dim : pixels per image (784 for MNIST).
    hidden : widths of the encoder's hidden layers; the decoder mirrors them.

    The training objective is :meth:`loss`; :meth:`config` records everything needed to rebuild the
    model (checkpoints store it and refuse to load into a different configuration).
    """

    name = "catvae"

    def __init__(self, latent_dim: int = 20, num_categories: int = 10, estimator: str = "gs",
                 input_dim: int = 784, hidden: Sequence[int] = (512, 256), num_samples: int = 1,
                 k: int = 1) -> None:
        super().__init__()
        latent_dim, num_categories = _check_latent(latent_dim, num_categories)
        if estimator not in ALL_ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS} ('gs' = Gumbel-Softmax, 'st' = "
                             "straight-through Gumbel-Softmax) or a name of gstutorial.estimators: "
                             f"{list(LAB_ESTIMATORS)}; got {estimator!r}")
        num_samples, k = check_int(num_samples, "num_samples", 1), check_int(k, "k", 1)
        if estimator in ESTIMATORS and (num_samples, k) != (1, 1):
            raise ValueError(f"num_samples and k apply to chapter 9's estimators only; {estimator!r} "
                             "draws one sample")
        if estimator == "reinforce_loo" and num_samples < 2:
            raise ValueError("estimator 'reinforce_loo' needs num_samples >= 2 (each sample's baseline is "
                             "the mean of the others)")
        hidden = tuple(check_int(h, "hidden width", 1) for h in hidden)  # int(64.7) would build 64 units
        if not hidden:
            raise ValueError("hidden must name at least one hidden layer width, e.g. (512, 256)")
        input_dim = check_int(input_dim, "input_dim", 1)
        self.latent_dim = latent_dim
        self.num_categories = num_categories
        self.estimator = estimator
        self.num_samples = num_samples
        self.k = k
        self.input_dim = int(input_dim)
        self.hidden = hidden
        code = latent_dim * num_categories

        # encoder: 784-512-256-(N·K), the last layer's output are unconstrained logits
        self.encoder = mlp([self.input_dim, *hidden, code])
        # decoder: (N·K)-256-512-784, the last layer's output are Bernoulli logits
        self.decoder = mlp([code, *reversed(hidden), self.input_dim])

    # ---------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """Everything needed to rebuild this model: ``CategoricalVAE(**config minus 'model')``."""
        config = {"model": self.name, "latent_dim": self.latent_dim, "num_categories": self.num_categories,
                  "estimator": self.estimator, "input_dim": self.input_dim, "hidden": list(self.hidden)}
        # only when not the default, so chapter 7's checkpoints keep exactly their configuration
        for name in ("num_samples", "k"):
            if getattr(self, name) != 1:
                config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config: dict) -> CategoricalVAE:
        """Rebuild a model from :meth:`config`."""
        kwargs = {k: v for k, v in config.items() if k != "model"}
        if config.get("model", cls.name) != cls.name:
            raise ValueError(f"config describes a {config['model']!r} model, not {cls.name!r}")
        return cls(**kwargs)

    def extra_repr(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)}" for name in ("num_samples", "k") if getattr(self, name) != 1)
        return f"latent={self.latent_dim}x{self.num_categories}, estimator={self.estimator!r}{extra}"

    # ---------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(z | x): ``(B, 784) -> (B, N, K)``, unconstrained."""
        check_images(x, self.input_dim, binary=False)
        return self.encoder(x).view(x.shape[0], self.latent_dim, self.num_categories)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x | z): codes ``(B, N, K)`` (one-hot or relaxed) ``-> (B, 784)``."""
        _check_codes(z, self.latent_dim, self.num_categories)
        return self.decoder(z.reshape(z.shape[0], -1))

    def sample_latent(self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                      estimator: str | None = None) -> torch.Tensor:
        """The training sample of z: relaxed (``"gs"``) or straight-through one-hot (``"st"``).

        For chapter 9's estimators: the pathwise ones' sample (its backward pass is the estimator), an
        exact one-hot sample without gradient for the score-function ones.
        """
        estimator = self.estimator if estimator is None else estimator
        if estimator not in ALL_ESTIMATORS:
            raise ValueError(f"estimator must be one of {ALL_ESTIMATORS}, got {estimator!r}")
        lab = get_estimator(_ALIASES.get(estimator, estimator))
        if lab.kind == "score":
            return one_hot_sample(logits, generator)
        return lab.sample(logits, temperature, k=self.k, generator=generator)

    def forward(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(recon_logits (B, 784), logits (B, N, K), z (B, N, K))`` with z from :meth:`sample_latent`."""
        logits = self.encode(x)
        z = self.sample_latent(logits, temperature, generator)
        return self.decoder(z.reshape(x.shape[0], -1)), logits, z

    def loss(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
             step: int = 0) -> dict[str, torch.Tensor]:
        """The training objective on a binarized batch ``x`` of shape ``(B, 784)``.

        Returns a dict of scalar tensors, each averaged over the batch (nats per image):
        ``"loss"`` (−ELBO, the one to minimise), ``"recon"`` (Σ_pixels BCE) and ``"kl"``
        (Σ_n KL to the uniform prior). ``step`` is the global training step (unused here; models
        with step-dependent objectives, like chapter 8's, use it).
        """
        check_temperature(temperature)
        check_images(x, self.input_dim, binary="first")
        logits = self.encode(x)
        recon = get_estimator(_ALIASES.get(self.estimator, self.estimator)).surrogate(
            logits, lambda z: self._recon_of_samples(z, x), temperature=temperature,
            num_samples=self.num_samples, k=self.k, generator=generator).mean()
        kl = kl_to_uniform(logits).mean()
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    def _recon_of_samples(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Σ_pixels BCE for samples ``z`` of shape ``(S, B, N, K)`` and images ``x`` ``(B, D)``: ``(S, B)``."""
        s, b = z.shape[0], z.shape[1]
        recon_logits = self.decoder(z.reshape(s * b, self.latent_dim * self.num_categories))
        return reconstruction_nll(recon_logits, x.expand(s, *x.shape).reshape(s * b, -1)).view(s, b)  # a view if s = 1

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
                 batch_size: int = 1000) -> dict[str, float]:
        """Per-epoch evaluation used by the training engine: ``{"relaxed_nelbo", "hard_nelbo"}``."""
        return evaluate(self, x, temperature, generator=generator, batch_size=batch_size)

    @torch.no_grad()
    def sample_prior(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images drawn from the model: z ~ Uniform one-hot, returns pixel probabilities ``(num, 784)``."""
        num = check_int(num, "num", 1)
        p = next(self.parameters())
        logits = torch.zeros(num, self.latent_dim, self.num_categories, device=p.device, dtype=p.dtype)
        return torch.sigmoid(self.decode(one_hot_sample(logits, generator)))


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------

def _check_model(model: CategoricalVAE) -> None:
    if not isinstance(model, CategoricalVAE):
        raise TypeError(f"model must be a CategoricalVAE, got {type(model).__name__}")


@torch.no_grad()
def negative_elbo(model: CategoricalVAE, x: torch.Tensor, temperature: float | None = None,
                  hard: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Single-sample −ELBO per image, shape ``(B,)``, in nats.

    ``hard=False``: relaxed −ELBO, the decoder sees a Gumbel-Softmax sample at ``temperature``.
    ``hard=True``: unrelaxed −ELBO of the discrete model, the decoder sees an exact one-hot sample of
    q(z|x) (``temperature`` is not used). The KL term is the analytic KL to the uniform prior in both.
    """
    _check_model(model)
    check_images(x, model.input_dim)
    if not hard:
        if temperature is None:
            raise ValueError("temperature: the relaxed -ELBO needs one; pass temperature=... or hard=True")
        temperature = check_temperature(temperature)
    return _nelbo(model, x, temperature, hard, generator)


def _nelbo(model: CategoricalVAE, x: torch.Tensor, temperature: float | None, hard: bool,
           generator: torch.Generator | None) -> torch.Tensor:
    """:func:`negative_elbo` on arguments already checked."""
    logits = model.encoder(x).view(x.shape[0], model.latent_dim, model.num_categories)
    z = one_hot_sample(logits, generator) if hard else gumbel_softmax(logits, temperature, generator=generator)
    return reconstruction_nll(model.decoder(z.reshape(x.shape[0], -1)), x) + kl_to_uniform(logits)


@torch.no_grad()
def importance_weighted_bound(model: CategoricalVAE, x: torch.Tensor, num_samples: int = 1000,
                              generator: torch.Generator | None = None, max_rows: int = 25_000,
                              ) -> torch.Tensor:
    """Importance-weighted bound with the discrete posterior, per image: shape ``(B,)``, in nats.

    Returns ``-log (1/k) Σ_{i=1..k} p(x|z_i) p(z_i) / q(z_i|x)`` with ``z_i`` one-hot samples of
    q(z|x) and p(z) uniform, i.e. log p(z) = −N log K. Its expectation is an upper bound on
    ``-log p(x)`` that decreases with k (k = 1 gives the hard −ELBO in expectation, up to the KL
    being evaluated analytically there and by sampling here).

    ``max_rows`` caps the decoder batch (images × samples) to bound memory.
    """
    _check_model(model)
    check_images(x, model.input_dim)
    num_samples = check_int(num_samples, "num_samples", 1)
    max_rows = check_int(max_rows, "max_rows", 1)
    return _iw_bound(model, x, num_samples, generator, max_rows)


def _iw_bound(model: CategoricalVAE, x: torch.Tensor, num_samples: int, generator: torch.Generator | None,
              max_rows: int) -> torch.Tensor:
    n_lat, k_cat = model.latent_dim, model.num_categories
    log_prior = -n_lat * math.log(k_cat)
    images_per_chunk = max(1, max_rows // num_samples)
    samples_per_chunk = max(1, min(num_samples, max_rows))
    out = []
    for start in range(0, x.shape[0], images_per_chunk):
        xb = x[start:start + images_per_chunk]                              # (b, D)
        b = xb.shape[0]
        log_q = torch.log_softmax(model.encoder(xb).view(b, n_lat, k_cat), dim=-1)  # (b, N, K)
        log_w = []
        for s0 in range(0, num_samples, samples_per_chunk):
            s = min(samples_per_chunk, num_samples - s0)
            index = gumbel_max(log_q.unsqueeze(0).expand(s, b, n_lat, k_cat), generator)  # (s, b, N)
            z = F.one_hot(index, k_cat).to(log_q.dtype)                    # (s, b, N, K)
            log_qz = log_q.unsqueeze(0).expand(s, -1, -1, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
            recon = model.decoder(z.reshape(s * b, n_lat * k_cat))        # (s*b, D)
            log_px = -reconstruction_nll(recon, xb.repeat(s, 1)).view(s, b)
            log_w.append(log_px + log_prior - log_qz)                     # (s, b)
        log_w = torch.cat(log_w, 0)
        out.append(-(torch.logsumexp(log_w, 0) - math.log(num_samples)))
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: CategoricalVAE, x: torch.Tensor, temperature: float, *, num_samples: int = 0,
             generator: torch.Generator | None = None, batch_size: int = 1000) -> dict[str, float]:
    """Mean test metrics in nats per image (lower is better).

    ``relaxed_nelbo`` (Gumbel-Softmax sample at ``temperature``), ``hard_nelbo`` (one-hot sample)
    and, when ``num_samples`` = k > 0, ``iw_nelbo_k`` — the k-sample importance-weighted bound.
    ``x`` must be binarized (use a fixed binarization of the test set). The model is put in eval
    mode for the call and restored afterwards.
    """
    _check_model(model)
    check_images(x, model.input_dim)
    batch_size = check_int(batch_size, "batch_size", 1)
    num_samples = check_int(num_samples, "num_samples", 0)
    temperature = check_temperature(temperature)
    was_training = model.training
    model.eval()
    try:
        sums = {"relaxed_nelbo": 0.0, "hard_nelbo": 0.0}
        if num_samples:
            sums[f"iw_nelbo_{num_samples}"] = 0.0
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            sums["relaxed_nelbo"] += _nelbo(model, xb, temperature, False, generator).double().sum().item()
            sums["hard_nelbo"] += _nelbo(model, xb, None, True, generator).double().sum().item()
            if num_samples:
                iw = _iw_bound(model, xb, num_samples, generator, 25_000)
                sums[f"iw_nelbo_{num_samples}"] += iw.double().sum().item()
    finally:
        model.train(was_training)
    return {key: value / x.shape[0] for key, value in sums.items()}
