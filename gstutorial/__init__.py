"""gstutorial: the companion package of the Gumbel-Softmax tutorial book.

The modules in layers; each imports only from the layers above it in this list (a test checks it):

- foundations — :mod:`~gstutorial.checks` (argument validation, the value-check switch),
  :mod:`~gstutorial.runtime` (seeds, device, CPU arithmetic, chapter switches),
  :mod:`~gstutorial.files` (atomic writes), :mod:`~gstutorial.resources` (the shipped weights and
  benchmark results, by name), :mod:`~gstutorial.primitives` (Gumbel noise from uniforms, the
  straight-through identity, softmax over the category axis, half-precision upcast)
- chapters — :mod:`~gstutorial.kl` (1), :mod:`~gstutorial.elbo` (2), :mod:`~gstutorial.reparam` (3),
  :mod:`~gstutorial.gumbel` (4–5), :mod:`~gstutorial.straight_through` (6),
  :mod:`~gstutorial.estimators` and :mod:`~gstutorial.estimator_lab` (9), :mod:`~gstutorial.data` (MNIST)
- training — :mod:`~gstutorial.engine` (the training loop and its checkpoints; imports no model)
- models — :mod:`~gstutorial.nets` (shared network pieces), :mod:`~gstutorial.analysis` (what a Joint
  VAE learned), :mod:`~gstutorial.catvae` (7), :mod:`~gstutorial.jointvae` (8)
- top — :mod:`~gstutorial.checkpoints` (the table of model kinds, weights files, ``load_model``,
  ``pretrained``),
  :mod:`~gstutorial.port` (the widely copied port's flaws, switchable; chapter 7),
  :mod:`~gstutorial.cli` (``python -m gstutorial``), :mod:`~gstutorial.interactive` (the interactive
  figures of the rendered book)
"""

__version__ = "0.1.0"
