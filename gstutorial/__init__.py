"""gstutorial: the companion package of the Gumbel-Softmax tutorial book.

One module per topic, each imported by its chapter:

- :mod:`gstutorial.utils` — seeds, device, atomic file writes (every chapter's first cell)
- :mod:`gstutorial.data` — MNIST as resident tensors, provisioned offline
- :mod:`gstutorial.kl` — chapter 1, KL divergence
- :mod:`gstutorial.elbo` — chapter 2, the ELBO on toy models with exact evidence
- :mod:`gstutorial.reparam` — chapter 3, score-function and pathwise gradients
- :mod:`gstutorial.gumbel` — chapters 4–5, Gumbel noise, Gumbel-Max, Gumbel-Softmax, Concrete density
- :mod:`gstutorial.straight_through` — chapter 6, straight-through estimation
- :mod:`gstutorial.catvae` — chapter 7, the categorical VAE
- :mod:`gstutorial.jointvae` — chapter 8, the Joint VAE (continuous + discrete latents)
- :mod:`gstutorial.train` — chapters 7–8, the training engine, checkpoints and command line
- :mod:`gstutorial.estimators`, :mod:`gstutorial.estimator_lab` — chapter 9, gradient estimators
"""

__version__ = "0.1.0"
