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
import numbers
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .estimators import ESTIMATORS as LAB_ESTIMATORS
from .estimators import get_estimator
from .gumbel import check_temperature, gumbel_max, gumbel_softmax
from .kl import kl_categorical_uniform
from .utils import value_checks_enabled

__all__ = [
    "ALL_ESTIMATORS",
    "ESTIMATORS",
    "CategoricalVAE",
    "evaluate",
    "importance_weighted_bound",
    "kl_to_uniform",
    "negative_elbo",
    "one_hot_sample",
    "parse_latent",
    "reconstruction_nll",
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


def _check_latent(latent_dim: int, num_categories: int) -> None:
    for name, value, low in (("latent_dim", latent_dim, 1), ("num_categories", num_categories, 2)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}"
                             + ("; a categorical with one class carries no information" if low == 2 else ""))


def check_images(x: torch.Tensor, input_dim: int, binary: bool | str = True) -> None:
    """Validate a batch of flattened images ``(batch, input_dim)``; ``binary`` checks 0/1 pixels, else
    values in [0, 1] (both only while value checks are on)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ValueError(f"images must have shape (batch, {input_dim}), got {tuple(x.shape)}; "
                         f"flatten them with x.view(-1, {input_dim})")
    if x.shape[0] == 0:
        raise ValueError("the batch of images is empty")
    # ``binary="first"`` scans only the first image (the per-step check of the training loss; an
    # un-binarized MNIST image is never all 0/1), ``True`` scans all of them
    probe = x[:1] if binary == "first" else x
    if binary and value_checks_enabled() and bool(((probe != 0) & (probe != 1)).any()):
        raise ValueError("images must be binarized (every pixel 0 or 1): the reconstruction term is a "
                         "Bernoulli log-likelihood; binarize with gstutorial.data.binarize_dynamic (training) "
                         "or load_mnist(binarize='fixed') (evaluation)")
    if not binary and value_checks_enabled() and not bool(((x >= 0) & (x <= 1)).all()):  # also catches NaN
        raise ValueError("images must hold pixel values in [0, 1] (binarized, or grey levels as "
                         "load_mnist(binarize='none') returns them), without NaN")


def _check_codes(z: torch.Tensor, latent_dim: int, num_categories: int) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    expected = (latent_dim, num_categories)
    if z.ndim != 3 or tuple(z.shape[1:]) != expected:
        raise ValueError(f"z must have shape (batch, {latent_dim}, {num_categories}), got {tuple(z.shape)}; "
                         "pass one-hot or relaxed one-hot codes, never raw logits")


def reconstruction_nll(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood ``-log p(x | z)`` summed over pixels: shape ``(B,)``.

    ``recon_logits`` are the decoder's Bernoulli logits, ``x`` the binarized image (same shape).
    """
    if recon_logits.shape != x.shape:
        raise ValueError(f"recon_logits and x must have the same shape, got {tuple(recon_logits.shape)} "
                         f"and {tuple(x.shape)}")
    return F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").sum(-1)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Σ_n KL(q(z_n | x) ‖ Uniform(K)) for logits ``(B, N, K)``: shape ``(B,)``.

    The per-variable KL is chapter 1's :func:`gstutorial.kl.kl_categorical_uniform`.
    """
    if isinstance(logits, torch.Tensor) and logits.ndim != 3:
        raise ValueError(f"logits must have shape (B, N, K), got {tuple(logits.shape)}; for one categorical "
                         "variable per image use logits.unsqueeze(1)")
    return kl_categorical_uniform(logits).sum(-1)


def one_hot_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """An exact one-hot sample of ``Categorical(softmax(logits))`` (Gumbel-Max), shape of ``logits``."""
    index = gumbel_max(logits, generator)
    return F.one_hot(index, logits.shape[-1]).to(logits.dtype)


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them and nothing after the last one."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:  # ReLU between hidden layers, nothing on the output
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


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
        _check_latent(latent_dim, num_categories)
        if estimator not in ALL_ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS} ('gs' = Gumbel-Softmax, 'st' = "
                             "straight-through Gumbel-Softmax) or a name of gstutorial.estimators: "
                             f"{list(LAB_ESTIMATORS)}; got {estimator!r}")
        for name, value in (("num_samples", num_samples), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if estimator in ESTIMATORS and (num_samples, k) != (1, 1):
            raise ValueError(f"num_samples and k apply to chapter 9's estimators only; {estimator!r} "
                             "draws one sample")
        if estimator == "reinforce_loo" and num_samples < 2:
            raise ValueError("estimator 'reinforce_loo' needs num_samples >= 2 (each sample's baseline is "
                             "the mean of the others)")
        hidden = tuple(hidden)
        for h in hidden:  # int(64.7) would silently build a 64-unit layer
            if isinstance(h, bool) or not isinstance(h, numbers.Integral):
                raise TypeError(f"hidden widths must be ints, got {h!r} ({type(h).__name__}) in "
                                f"hidden={hidden!r}; e.g. hidden=(512, 256)")
        hidden = tuple(int(h) for h in hidden)
        if isinstance(input_dim, bool) or not isinstance(input_dim, numbers.Integral):
            raise TypeError(f"input_dim must be an int (pixels per image, 784 for MNIST), got {input_dim!r}")
        if not hidden or min(hidden) < 1 or input_dim < 1:
            raise ValueError(f"hidden widths and input_dim must be positive, got hidden={hidden}, "
                             f"input_dim={input_dim}")
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
        if isinstance(num, bool) or not isinstance(num, numbers.Integral):
            raise TypeError(f"num must be an int, got {type(num).__name__}")
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        num = int(num)
        p = next(self.parameters())
        logits = torch.zeros(num, self.latent_dim, self.num_categories, device=p.device, dtype=p.dtype)
        return torch.sigmoid(self.decode(one_hot_sample(logits, generator)))


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------

def _check_model(model: CategoricalVAE) -> None:
    if not isinstance(model, CategoricalVAE):
        raise TypeError(f"model must be a CategoricalVAE, got {type(model).__name__}")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


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
    logits = model.encode(x)
    if hard:
        z = one_hot_sample(logits, generator)
    else:
        if temperature is None:
            raise ValueError("the relaxed -ELBO needs a temperature; pass temperature=... or hard=True")
        z = gumbel_softmax(logits, check_temperature(temperature), generator=generator)
    return reconstruction_nll(model.decode(z), x) + kl_to_uniform(logits)


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
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    _check_batch_size(max_rows)
    n_lat, k_cat = model.latent_dim, model.num_categories
    log_prior = -n_lat * math.log(k_cat)
    images_per_chunk = max(1, max_rows // num_samples)
    samples_per_chunk = max(1, min(num_samples, max_rows))
    out = []
    for start in range(0, x.shape[0], images_per_chunk):
        xb = x[start:start + images_per_chunk]                              # (b, D)
        b = xb.shape[0]
        log_q = torch.log_softmax(model.encode(xb), dim=-1)                # (b, N, K)
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
    _check_batch_size(batch_size)
    check_temperature(temperature)
    was_training = model.training
    model.eval()
    try:
        sums = {"relaxed_nelbo": 0.0, "hard_nelbo": 0.0}
        if num_samples:
            sums[f"iw_nelbo_{num_samples}"] = 0.0
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            sums["relaxed_nelbo"] += negative_elbo(model, xb, temperature, generator=generator).double().sum().item()
            sums["hard_nelbo"] += negative_elbo(model, xb, hard=True, generator=generator).double().sum().item()
            if num_samples:
                iw = importance_weighted_bound(model, xb, num_samples, generator)
                sums[f"iw_nelbo_{num_samples}"] += iw.double().sum().item()
    finally:
        model.train(was_training)
    return {key: value / x.shape[0] for key, value in sums.items()}
