"""Network pieces both VAEs use: fully connected and convolutional encoders and decoders, the check of a
batch of flattened images, and the Bernoulli reconstruction term.

Images are flattened: ``(B, pixels)`` with pixels 784 for MNIST's 28×28 (1024 for 32×32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_int, check_tensor, value_checks_enabled

__all__ = ["ARCHITECTURES", "IMAGE_SIZE", "check_images", "conv_decoder", "conv_encoder", "mlp",
           "reconstruction_nll"]


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them and nothing after the last one."""
    widths = [check_int(w, "layer width", 1) for w in widths]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:  # ReLU between hidden layers, nothing on the output
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


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
    check_choice(image_size, "image_size", (28, 32))
    last_kernel = 3 if image_size == 28 else 4
    return nn.Sequential(
        nn.Unflatten(1, (1, image_size, image_size)),
        nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),             # 14×14 (16×16)
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),            # 7×7 (8×8)
        nn.Conv2d(32, 64, last_kernel, stride=2, padding=1), nn.ReLU(),  # 4×4
        nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, out_features))


def conv_decoder(in_features: int, image_size: int = 28) -> nn.Sequential:
    """The mirror of :func:`conv_encoder`: ``(B, in_features) -> (B, image_size²)`` Bernoulli logits."""
    check_choice(image_size, "image_size", (28, 32))
    first_kernel = 3 if image_size == 28 else 4
    return nn.Sequential(
        nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 32, first_kernel, stride=2, padding=1), nn.ReLU(),   # 7×7 (8×8)
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),             # 14×14 (16×16)
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),                         # 28×28 (32×32)
        nn.Flatten())


def check_images(x: torch.Tensor, input_dim: int, binary: bool | str = True) -> None:
    """Validate a batch of flattened images ``(batch, input_dim)``; ``binary`` checks 0/1 pixels, else
    values in [0, 1] (both only while value checks are on)."""
    check_tensor(x, "images")
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


def reconstruction_nll(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood ``-log p(x | z)`` summed over pixels: shape ``(B,)``.

    ``recon_logits`` are the decoder's Bernoulli logits, ``x`` the binarized image (same shape).
    """
    if recon_logits.shape != x.shape:
        raise ValueError(f"recon_logits and x must have the same shape, got {tuple(recon_logits.shape)} "
                         f"and {tuple(x.shape)}")
    return F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").sum(-1)
