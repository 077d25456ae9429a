"""gstutorial.nets: the network pieces both VAEs use — fully connected and convolutional encoders and
decoders, the check of a batch of flattened images, and the Bernoulli reconstruction term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gstutorial.checks import value_checks
from gstutorial.nets import (
    IMAGE_SIZE,
    check_images,
    conv_decoder,
    conv_encoder,
    mlp,
    reconstruction_nll,
)


def binary_batch(b: int = 8, d: int = 784, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((b, d), 0.3), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# mlp
# --------------------------------------------------------------------------------------------------


def test_mlp_has_relu_between_layers_and_nothing_after_the_last():
    net = mlp([784, 512, 256, 200])
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [
        (784, 512), (512, 256), (256, 200)]
    out = net(torch.randn(3, 784))
    assert out.shape == (3, 200) and (out < 0).any()   # unconstrained output
    assert [type(m) for m in mlp([4, 2])] == [nn.Linear]


def test_mlp_takes_numpy_widths_and_refuses_others():
    assert mlp([np.int64(4), 3])[0].in_features == 4
    with pytest.raises(TypeError, match=r"^layer width must be an int, got float 64\.7"):
        mlp([784, 64.7, 10])
    with pytest.raises(TypeError, match="layer width"):
        mlp([784, True, 10])
    with pytest.raises(ValueError, match=r"^layer width must be >= 1, got 0"):
        mlp([784, 0, 10])


# --------------------------------------------------------------------------------------------------
# Convolutional encoder and decoder
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image_size", "sizes", "last_kernel"), [(28, [14, 7, 4], 3), (32, [16, 8, 4], 4)])
def test_conv_encoder_halves_the_image_three_times(image_size, sizes, last_kernel):
    torch.manual_seed(0)
    net = conv_encoder(26, image_size)
    x = binary_batch(3, image_size ** 2)
    assert net(x).shape == (3, 26)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 32), (32, 64)]
    assert [c.kernel_size for c in convs] == [(4, 4), (4, 4), (last_kernel, last_kernel)]
    assert all(c.stride == (2, 2) for c in convs)
    seen, h = [], x
    for m in net:
        h = m(h)
        seen += [h.shape[-1]] if isinstance(m, nn.Conv2d) else []
    assert seen == sizes


@pytest.mark.parametrize(("image_size", "sizes"), [(28, [7, 14, 28]), (32, [8, 16, 32])])
def test_conv_decoder_mirrors_the_encoder(image_size, sizes):
    torch.manual_seed(0)
    net = conv_decoder(14, image_size)
    z = torch.randn(5, 14)
    logits = net(z)
    assert logits.shape == (5, image_size ** 2)
    # Bernoulli logits: nothing after the last transposed convolution but the flattening
    assert [type(m) for m in net][-2:] == [nn.ConvTranspose2d, nn.Flatten]
    seen, h = [], z
    for m in net:
        h = m(h)
        seen += [h.shape[-1]] if isinstance(m, nn.ConvTranspose2d) else []
    assert seen == sizes


def test_image_size_names_the_side_each_convolutional_architecture_reads():
    for architecture, side in IMAGE_SIZE.items():
        encoder, decoder = conv_encoder(4, side), conv_decoder(4, side)
        assert decoder(encoder(torch.zeros(2, side * side))).shape == (2, side * side), architecture


@pytest.mark.parametrize("build", [conv_encoder, conv_decoder])
def test_conv_networks_refuse_other_image_sizes(build):
    with pytest.raises(ValueError, match=r"^image_size must be one of \(28, 32\), got 64"):
        build(10, image_size=64)


# --------------------------------------------------------------------------------------------------
# check_images
# --------------------------------------------------------------------------------------------------


def test_check_images_accepts_binary_and_grey_batches():
    check_images(binary_batch(4), 784)
    check_images(torch.rand(4, 784), 784, binary=False)
    check_images(binary_batch(2, 1024).double(), 1024)


def test_check_images_refuses_wrong_types_and_shapes():
    with pytest.raises(TypeError, match=r"^images must be a torch.Tensor"):
        check_images(np.zeros((2, 784)), 784)
    with pytest.raises(TypeError, match=r"^images must be a floating-point tensor"):
        check_images(torch.zeros(2, 784, dtype=torch.uint8), 784)
    with pytest.raises(ValueError, match=r"^images must have shape \(batch, 784\), got \(2, 28, 28\)"):
        check_images(torch.zeros(2, 28, 28), 784)
    with pytest.raises(ValueError, match=r"^images must have shape \(batch, 784\), got \(2, 780\)"):
        check_images(torch.zeros(2, 780), 784)
    with pytest.raises(ValueError, match="empty"):
        check_images(torch.zeros(0, 784), 784)


def test_check_images_binary_scans_every_image_and_first_only_the_first():
    x = binary_batch(3)
    x[2, 5] = 0.5
    with pytest.raises(ValueError, match="binarized"):
        check_images(x, 784)
    check_images(x, 784, binary="first")                # the per-step check reads image 0 only
    x[0, 5] = 0.5
    with pytest.raises(ValueError, match="binarized"):
        check_images(x, 784, binary="first")


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_check_images_grey_levels_must_lie_in_the_unit_interval(bad):
    x = torch.rand(2, 784)
    x[1, 3] = bad
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        check_images(x, 784, binary=False)
    with value_checks(False):                           # a value scan: off with the switch
        check_images(x, 784, binary=False)


# --------------------------------------------------------------------------------------------------
# reconstruction_nll
# --------------------------------------------------------------------------------------------------


def test_reconstruction_nll_is_the_summed_bernoulli_nll():
    r = torch.randn(3, 784, dtype=torch.float64)
    x = binary_batch(3).double()
    expected = -torch.distributions.Bernoulli(logits=r).log_prob(x).sum(-1)
    torch.testing.assert_close(reconstruction_nll(r, x), expected)


def test_reconstruction_nll_of_grey_levels_is_the_summed_cross_entropy():
    r = torch.randn(2, 5, dtype=torch.float64)
    x = torch.rand(2, 5, dtype=torch.float64)
    p = torch.sigmoid(r)
    torch.testing.assert_close(reconstruction_nll(r, x), -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1))


def test_reconstruction_nll_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"^recon_logits and x must have the same shape, got \(2, 784\) and \(784,\)"):
        reconstruction_nll(torch.zeros(2, 784), torch.zeros(784))  # would broadcast
