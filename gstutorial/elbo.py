"""Chapter 2 — the ELBO, checked on two toy models whose log-evidence is exact.

Two latent-variable models small enough that :math:`\\log p(x)` and the posterior :math:`p(z \\mid x)`
are known exactly:

- :class:`DiscreteLatentModel` — :math:`z \\in \\{0, \\dots, K-1\\}` with a categorical prior and a
  diagonal Gaussian likelihood per state; :math:`\\log p(x)` is a log-sum-exp over the :math:`K` states.
- :class:`LinearGaussianModel` — :math:`z \\sim \\mathcal{N}(0, I_L)`,
  :math:`x \\mid z \\sim \\mathcal{N}(Wz + b, \\sigma^2 I_D)`; the marginal and the posterior are Gaussian
  in closed form.

For an approximate posterior ``q`` (a ``torch.distributions`` object over :math:`z`) the module gives
the exact ELBO (:func:`elbo`, :func:`elbo_terms`), a Monte Carlo ELBO for any ``q``
(:func:`elbo_monte_carlo`), the KL from ``q`` to the true posterior (:func:`kl_to_posterior`) and the
importance-weighted bound :math:`\\mathcal{L}_k` (:func:`iwae_bound`, and :func:`iwae_bound_exact`
by enumeration for the discrete model).

Shapes: an observation ``x`` has shape ``(*batch, D)``; ``q`` has batch shape ``batch``, or one that
broadcasts with it (``()``: the same q for every observation; it is expanded, so each observation
still gets its own samples). Results have the broadcast batch shape. Device and dtype follow the inputs.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from gstutorial import kl
from gstutorial.checks import check_float_tensor, check_int, check_real, check_tensor

__all__ = [
    "DiscreteLatentModel",
    "LinearGaussianModel",
    "elbo",
    "elbo_terms",
    "elbo_monte_carlo",
    "kl_to_posterior",
    "log_importance_weights",
    "iwae_bound",
    "iwae_bound_exact",
]


def _check_x(x: object, dim: int) -> torch.Tensor:
    x = check_float_tensor(x, "x")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape (*batch, {dim}) for this model (last axis = observation "
                         f"dimension D = {dim}), got {tuple(x.shape)}")
    return x


class DiscreteLatentModel:
    r"""A mixture model: :math:`p(z) = \mathrm{Categorical}(\pi)`, :math:`p(x \mid z=k) = \mathcal{N}(m_k, \mathrm{diag}\, s_k^2)`.

    Parameters
    ----------
    prior : Tensor, shape (K,)
        Prior probabilities :math:`\pi`; non-negative, summing to one.
    means : Tensor, shape (K, D)
        Mean of the observation for each latent state.
    scales : Tensor, broadcastable to (K, D)
        Standard deviations of the observation noise; all > 0.
    """

    def __init__(self, prior: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> None:
        kl.check_probabilities(prior, "prior")
        if prior.ndim != 1:
            raise ValueError(f"prior must be one probability vector of shape (K,), got shape {tuple(prior.shape)}")
        means = check_float_tensor(means, "means")
        if means.ndim != 2 or means.shape[0] != prior.shape[0]:
            raise ValueError(f"means must have shape (K, D) = ({prior.shape[0]}, D), one row per latent state, "
                             f"got {tuple(means.shape)}")
        scales = check_float_tensor(scales, "scales")
        try:
            scales = torch.broadcast_to(scales, means.shape)
        except RuntimeError as error:
            raise ValueError(f"scales must broadcast to means' shape {tuple(means.shape)}, "
                             f"got {tuple(scales.shape)}") from error
        if (scales <= 0).any():
            raise ValueError("scales are standard deviations and must all be > 0, "
                             f"got min {scales.min().item():.3g}")
        self.prior, self.means, self.scales = prior, means, scales

    @property
    def num_categories(self) -> int:
        """K, the number of latent states."""
        return self.prior.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of an observation."""
        return self.means.shape[1]

    def prior_distribution(self) -> Categorical:
        """:math:`p(z)` as a ``Categorical``."""
        return Categorical(probs=self.prior)

    def log_likelihood_table(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid z=k)` for every state: shape ``(*batch, K)``."""
        x = _check_x(x, self.dim)
        return Normal(self.means, self.scales).log_prob(x.unsqueeze(-2)).sum(-1)

    def log_joint_table(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x, z=k) = \\log p(z=k) + \\log p(x \\mid z=k)`: shape ``(*batch, K)``."""
        return self.prior.log() + self.log_likelihood_table(x)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x, z)` for integer states ``z`` of shape ``(*sample, *batch)``."""
        table = self.log_joint_table(x)
        z = check_tensor(z, "z", floating=False)
        if z.is_floating_point() or z.is_complex() or z.dtype == torch.bool:
            raise TypeError(f"z must be a tensor of integer state indices in [0, K), got {z.dtype}")
        table = table.expand(*z.shape, self.num_categories)
        return table.gather(-1, z.unsqueeze(-1)).squeeze(-1)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x) = \\log \\sum_k p(x, z=k)`, by enumeration: shape ``batch``."""
        return torch.logsumexp(self.log_joint_table(x), dim=-1)

    def posterior(self, x: torch.Tensor) -> Categorical:
        """Exact posterior :math:`p(z \\mid x) = p(x, z) / p(x)` (Bayes' rule), batch shape ``batch``."""
        return Categorical(logits=self.log_joint_table(x))

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(z, x)`` from the joint: shapes ``(num_samples,)`` and ``(num_samples, D)``."""
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        z = torch.multinomial(self.prior.cpu(), num_samples, replacement=True, generator=generator)
        z = z.to(self.prior.device)
        eps = torch.randn(num_samples, self.dim, generator=generator, dtype=self.means.dtype)
        return z, self.means[z] + self.scales[z] * eps.to(self.means.device)


class LinearGaussianModel:
    r"""Probabilistic PCA: :math:`z \sim \mathcal{N}(0, I_L)`, :math:`x \mid z \sim \mathcal{N}(Wz + b, \sigma^2 I_D)`.

    Parameters
    ----------
    weight : Tensor, shape (D, L)
        Loading matrix :math:`W`.
    bias : Tensor, shape (D,)
        Offset :math:`b`.
    noise_scale : real number (Python or NumPy) or 0-d Tensor
        Observation noise standard deviation :math:`\sigma > 0`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_scale: float | torch.Tensor) -> None:
        weight = check_float_tensor(weight, "weight")
        if weight.ndim != 2:
            raise ValueError(f"weight must be a (D, L) matrix, got shape {tuple(weight.shape)}")
        bias = check_float_tensor(bias, "bias")
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must have shape (D,) = ({weight.shape[0]},) to match weight, "
                             f"got {tuple(bias.shape)}")
        if not isinstance(noise_scale, torch.Tensor):
            noise_scale = check_real(noise_scale, "noise_scale")
        sigma = torch.as_tensor(noise_scale, dtype=weight.dtype, device=weight.device)
        if sigma.ndim != 0 or not (torch.isfinite(sigma) and sigma > 0):
            raise ValueError(f"noise_scale is a standard deviation: one finite number > 0, got {noise_scale!r}")
        self.weight, self.bias, self.noise_scale = weight, bias, sigma

    @property
    def dim(self) -> int:
        """D, the dimension of an observation."""
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        """L, the dimension of the latent variable."""
        return self.weight.shape[1]

    def prior_distribution(self) -> MultivariateNormal:
        """:math:`p(z) = \\mathcal{N}(0, I_L)`."""
        zeros = self.weight.new_zeros(self.latent_dim)
        return MultivariateNormal(zeros, covariance_matrix=torch.diag_embed(torch.ones_like(zeros)))

    def likelihood(self, z: torch.Tensor) -> Independent:
        """:math:`p(x \\mid z) = \\mathcal{N}(Wz + b, \\sigma^2 I)` for ``z`` of shape ``(*batch, L)``."""
        return Independent(Normal(z @ self.weight.T + self.bias, self.noise_scale), 1)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(z) + \\log p(x \\mid z)` for ``z`` of shape ``(*sample, *batch, L)``."""
        x = _check_x(x, self.dim)
        z = check_tensor(z, "z")
        if z.ndim == 0 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must be a tensor of shape (..., {self.latent_dim}) (last axis = latent dimension L)")
        return self.prior_distribution().log_prob(z) + self.likelihood(z).log_prob(x)

    def marginal(self) -> MultivariateNormal:
        """:math:`p(x) = \\mathcal{N}(b, WW^\\top + \\sigma^2 I_D)`."""
        eye = torch.eye(self.dim, dtype=self.weight.dtype, device=self.weight.device)
        return MultivariateNormal(self.bias, covariance_matrix=self.weight @ self.weight.T
                                  + self.noise_scale**2 * eye)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` from the Gaussian marginal: shape ``batch``."""
        return self.marginal().log_prob(_check_x(x, self.dim))

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        r"""Exact :math:`p(z \mid x) = \mathcal{N}(\Sigma W^\top (x - b) / \sigma^2, \Sigma)`,
        :math:`\Sigma = (I + W^\top W / \sigma^2)^{-1}`; batch shape ``batch``."""
        x = _check_x(x, self.dim)
        var = self.noise_scale**2
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        covariance = torch.linalg.inv(eye + self.weight.T @ self.weight / var)
        covariance = 0.5 * (covariance + covariance.T)  # exactly symmetric for the Cholesky factor
        mean = ((x - self.bias) @ self.weight / var) @ covariance
        return MultivariateNormal(mean, covariance_matrix=covariance)

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(z, x)`` from the joint: shapes ``(num_samples, L)`` and ``(num_samples, D)``."""
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        eps = torch.randn(num_samples, self.latent_dim + self.dim, generator=generator, dtype=self.weight.dtype)
        eps = eps.to(self.weight.device)
        z = eps[:, : self.latent_dim]
        return z, z @ self.weight.T + self.bias + self.noise_scale * eps[:, self.latent_dim:]


def _check_model(model: object) -> None:
    if not isinstance(model, DiscreteLatentModel | LinearGaussianModel):
        raise TypeError(f"model must be a DiscreteLatentModel or a LinearGaussianModel, got {type(model).__name__}")


def _validated_q(model: DiscreteLatentModel | LinearGaussianModel, q: object) -> Distribution:
    """Check that ``q`` is a distribution over the model's latent (a discrete model also accepts a
    tensor of probabilities, made a ``Categorical``)."""
    _check_model(model)
    if isinstance(model, DiscreteLatentModel):
        if isinstance(q, torch.Tensor):
            q = Categorical(probs=kl.check_probabilities(q, "q"))
        if not isinstance(q, Categorical):
            raise TypeError("q must be a torch.distributions.Categorical or a tensor of probabilities over the K "
                            f"states for a DiscreteLatentModel, got {type(q).__name__}")
        if q.probs.shape[-1] != model.num_categories:
            raise ValueError(f"q has {q.probs.shape[-1]} categories but the model has K = {model.num_categories} "
                             "latent states; give q one probability per state")
        return q
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution over z, got {type(q).__name__}")
    if q.event_shape != (model.latent_dim,):
        raise ValueError(f"q must be a distribution over z in R^{model.latent_dim} (event shape "
                         f"({model.latent_dim},)), got event shape {tuple(q.event_shape)}; for a diagonal "
                         "Gaussian use Independent(Normal(mean, std), 1)")
    return q


def _as_q(model: DiscreteLatentModel | LinearGaussianModel, q: object, x: torch.Tensor) -> Distribution:
    """:func:`_validated_q`, its batch shape expanded to the one it shares with ``x``, so that each
    observation has its own q and its own samples."""
    q = _validated_q(model, q)
    x = _check_x(x, model.dim)
    try:
        batch = torch.broadcast_shapes(x.shape[:-1], q.batch_shape)
    except RuntimeError:
        raise ValueError(f"x has batch shape {tuple(x.shape[:-1])} and q has batch shape {tuple(q.batch_shape)}, "
                         "which do not broadcast; give q one distribution per observation (or batch shape ())"
                         ) from None
    return q if batch == q.batch_shape else q.expand(batch)


def _gaussian_moments(q: Distribution) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Mean, covariance matrix, and whether it is diagonal, of a Gaussian ``q`` over a vector."""
    if isinstance(q, MultivariateNormal):
        return q.mean, q.covariance_matrix, False
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return q.mean, torch.diag_embed(q.variance), True
    raise TypeError("q must be Gaussian for the exact ELBO of the linear-Gaussian model: MultivariateNormal or "
                    f"Independent(Normal(mean, std), 1); got {type(q).__name__}. Use elbo_monte_carlo for other q")


def elbo_terms(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor, q: Distribution | torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The two terms of :math:`\mathcal{L}(q) = \mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q \,\Vert\, p(z))`, exactly.

    Parameters
    ----------
    model : DiscreteLatentModel or LinearGaussianModel
    x : Tensor, shape (*batch, D)
    q : Distribution (or, for the discrete model, a probability tensor of shape (*batch, K))
        Categorical for the discrete model; ``MultivariateNormal`` or ``Independent(Normal, 1)`` for
        the linear-Gaussian model.

    Returns
    -------
    reconstruction, kl_prior : Tensor, shape batch
        The expected log-likelihood (by enumeration, or in closed form) and the KL to the prior
        (``gstutorial.kl.kl_categorical`` / ``kl.kl_normal`` / ``torch.distributions.kl_divergence``).
    """
    q = _as_q(model, q, x)
    if isinstance(model, DiscreteLatentModel):
        reconstruction = (q.probs * model.log_likelihood_table(x)).sum(-1)
        kl_prior = kl.kl_categorical(q.probs, model.prior.expand_as(q.probs))
        return reconstruction, kl_prior
    mean, covariance, diagonal = _gaussian_moments(q)  # x was checked by _as_q
    var = model.noise_scale**2
    residual = x - mean @ model.weight.T - model.bias
    # E_q ||x - Wz - b||^2 = ||x - W m - b||^2 + tr(W S W^T)
    trace = ((model.weight @ covariance) * model.weight).sum((-2, -1))
    reconstruction = (-0.5 * model.dim * torch.log(2 * math.pi * var)
                      - (residual.pow(2).sum(-1) + trace) / (2 * var))
    if diagonal:
        kl_prior = kl.kl_normal(mean, q.stddev, torch.zeros_like(mean), torch.ones_like(mean))
    else:
        kl_prior = kl_divergence(q, model.prior_distribution())
    return reconstruction, kl_prior


def elbo(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor, q: Distribution | torch.Tensor,
         ) -> torch.Tensor:
    r"""Exact ELBO :math:`\mathcal{L}(q) = \mathbb{E}_q[\log p(x, z) - \log q(z)]`: shape ``batch``.

    See :func:`elbo_terms` for the accepted ``q``; for any other ``q`` use :func:`elbo_monte_carlo`.
    """
    reconstruction, kl_prior = elbo_terms(model, x, q)
    return reconstruction - kl_prior


def kl_to_posterior(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor,
                    q: Distribution | torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q \,\Vert\, p(z \mid x))` against the exact posterior: shape ``batch``."""
    q = _as_q(model, q, x)
    posterior = model.posterior(x)
    if isinstance(model, DiscreteLatentModel):
        return kl.kl_categorical(q.probs, posterior.probs.expand_as(q.probs))
    mean, covariance, _ = _gaussian_moments(q)
    return kl_divergence(MultivariateNormal(mean, covariance_matrix=covariance), posterior)


def log_importance_weights(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor,
                           q: Distribution | torch.Tensor, num_samples: int) -> torch.Tensor:
    r""":math:`\log w_i = \log p(x, z_i) - \log q(z_i)` for ``z_i ~ q``: shape ``(num_samples, *batch)``.

    Samples come from ``q.sample`` and so from PyTorch's global generator (seed it with
    ``torch.manual_seed`` for reproducible numbers).
    """
    q = _as_q(model, q, x)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    z = q.sample((num_samples,))
    return model.log_joint(x, z) - q.log_prob(z)


def elbo_monte_carlo(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor,
                     q: Distribution | torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo ELBO: the mean of ``num_samples`` log-weights, and its standard error (shape ``batch``)."""
    num_samples = check_int(num_samples, "num_samples", minimum=2)  # two draws give a standard error
    log_w = log_importance_weights(model, x, q, num_samples)
    return log_w.mean(0), log_w.std(0) / math.sqrt(num_samples)


def iwae_bound(model: DiscreteLatentModel | LinearGaussianModel, x: torch.Tensor, q: Distribution | torch.Tensor,
               k: int, num_repeats: int = 1) -> torch.Tensor:
    r"""Independent estimates of the importance-weighted bound (Burda et al. 2016).

    .. math:: \hat{\mathcal{L}}_k = \log \frac{1}{k} \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i)},
              \quad z_1, \dots, z_k \sim q,

    computed as ``logsumexp(log w) - log k``. Its expectation :math:`\mathcal{L}_k` satisfies
    :math:`\mathcal{L}_1 = \mathrm{ELBO} \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x)`.

    Returns
    -------
    Tensor, shape (num_repeats, *batch)
        ``num_repeats`` independent draws of :math:`\hat{\mathcal{L}}_k`.
    """
    k, num_repeats = check_int(k, "k", minimum=1), check_int(num_repeats, "num_repeats", minimum=1)
    log_w = log_importance_weights(model, x, q, k * num_repeats)
    log_w = log_w.reshape(k, num_repeats, *log_w.shape[1:])
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_bound_exact(model: DiscreteLatentModel, x: torch.Tensor, q: Categorical | torch.Tensor, k: int,
                     max_terms: int = 2_000_000) -> torch.Tensor:
    r"""Exact :math:`\mathcal{L}_k = \mathbb{E}[\hat{\mathcal{L}}_k]` for the discrete model, by enumerating
    all :math:`K^k` ordered draws :math:`(z_1, \dots, z_k)`: shape ``batch``.

    Raises ``ValueError`` when :math:`K^k` exceeds ``max_terms`` (use :func:`iwae_bound` then).
    """
    if not isinstance(model, DiscreteLatentModel):
        raise TypeError(f"model must be a DiscreteLatentModel, whose states iwae_bound_exact enumerates, got "
                        f"{type(model).__name__}; use iwae_bound")
    q = _as_q(model, q, x)
    k, max_terms = check_int(k, "k", minimum=1), check_int(max_terms, "max_terms", minimum=1)
    num_terms = model.num_categories**k
    if num_terms > max_terms:
        raise ValueError(f"k = {k} gives K^k = {model.num_categories}^{k} = {num_terms} draws, more than max_terms = "
                         f"{max_terms}; use iwae_bound (Monte Carlo) or a smaller k")
    log_q = q.probs.log()  # -inf for states q never draws
    log_w = model.log_joint_table(x) - log_q  # (*batch, K)
    draws = torch.tensor(list(itertools.product(range(model.num_categories), repeat=k)), device=log_w.device)
    log_w, log_q = torch.broadcast_tensors(log_w, log_q)
    log_prob = log_q[..., draws].sum(-1)  # (*batch, K^k)
    bound = torch.logsumexp(log_w[..., draws], dim=-1) - math.log(k)
    prob = log_prob.exp()
    return torch.where(prob > 0, prob * bound, torch.zeros_like(bound)).sum(-1)
