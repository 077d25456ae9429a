"""gstutorial: the companion package of the Gumbel-Softmax tutorial book.

One module per topic, each imported by its chapter:

- :mod:`gstutorial.utils` — seeds, device, atomic file writes (every chapter's first cell)
- :mod:`gstutorial.data` — MNIST as resident tensors, provisioned offline
- :mod:`gstutorial.kl` — chapter 1, KL divergence
"""

__version__ = "0.1.0"
