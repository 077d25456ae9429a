"""gstutorial.port: the copied port's flaws as options of chapter 7's model."""

from __future__ import annotations

import math

import pytest
import torch

from gstutorial import catvae as cv
from gstutorial.engine import train
from gstutorial.gumbel import gumbel_softmax
from gstutorial.nets import reconstruction_nll
from gstutorial.port import (
    PORT_FLAWS,
    TRAINING_FLAWS,
    PortVAE,
    check_flaws,
    port_temperature,
    port_test_nelbo,
    port_train_config,
)


def _pair(flaws=(), seed=0, **kwargs):
    torch.manual_seed(seed)
    ours = cv.CategoricalVAE(3, 4, input_dim=12, hidden=(8,), **kwargs)
    torch.manual_seed(seed)
    port = PortVAE(3, 4, input_dim=12, hidden=(8,), flaws=flaws, **kwargs)
    return ours, port


def _binary(n=5, d=12, seed=1):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def test_the_port_schedule_restarts_every_epoch_and_decays_by_batch_index():
    # the port updates tau after each batch b with b % 100 == 1, so batch 2 is the first one it lowers
    assert port_temperature(0) == port_temperature(1) == 1.0
    assert port_temperature(2) == math.exp(-3e-5 * 1)
    assert port_temperature(102) == math.exp(-3e-5 * (1 + 101))
    assert port_temperature(599) == math.exp(-3e-5 * 1506)  # 1 + 101 + ... + 501
    assert port_temperature(600) == 1.0 and port_temperature(1199) == port_temperature(599)
    assert min(port_temperature(t) for t in range(600)) > 0.95
    assert port_temperature(599, rate=1e-3) == 0.5  # the floor: exp(-1.506) < 0.5
    assert port_temperature(599, rate=1e-3, tau_min=0.0) == math.exp(-1.506)
    assert port_temperature(150, steps_per_epoch=100) == math.exp(-3e-5 * 1)


def test_the_flaws_are_checked_and_ordered():
    assert check_flaws(["grey_levels", "relu_logits"]) == ("relu_logits", "grey_levels")
    assert TRAINING_FLAWS == PORT_FLAWS[:3] and "relaxed_eval" not in TRAINING_FLAWS
    with pytest.raises(ValueError, match=r"flaws: unknown \['relu'\]"):
        check_flaws(["relu"])
    with pytest.raises(TypeError, match="flaws must be a list"):
        check_flaws("relu_logits")
    with pytest.raises(ValueError, match="flaws: unknown"):
        PortVAE(flaws=["relaxed_eval"])  # an evaluation flaw, not a model option
    with pytest.raises(ValueError, match="estimator must be 'gs' or 'st'"):
        PortVAE(estimator="reinmax")


def test_without_flaws_the_port_model_is_chapter_7s():
    ours, port = _pair()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), port.state_dict().values(), strict=True))
    x = _binary()
    for step in (0, 599):
        a = ours.loss(x, 0.7, torch.Generator().manual_seed(3), step)
        b = port.loss(x, 0.7, torch.Generator().manual_seed(3), step)
        assert all(torch.equal(a[k], b[k]) for k in ("loss", "recon", "kl"))


def test_relu_on_the_logits_clips_every_evaluation_too():
    ours, port = _pair(flaws=["relu_logits"])
    assert list(port.state_dict()) == list(ours.state_dict())  # the ReLU has no parameters
    x = _binary()
    assert torch.equal(port.encode(x), torch.relu(ours.encode(x)))
    # negative_elbo reads the encoder directly: it sees the ReLU as well
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    relu_logits = torch.relu(ours.encode(x))
    z = gumbel_softmax(relu_logits, 1.0, generator=g2)
    expected = reconstruction_nll(ours.decode(z), x) + cv.kl_to_uniform(relu_logits)
    torch.testing.assert_close(cv.negative_elbo(port, x, 1.0, generator=g1), expected.detach(), rtol=0, atol=0)


def test_the_resetting_schedule_replaces_the_engines_temperature():
    ours, port = _pair(flaws=["epoch_reset"])
    x = _binary()
    for step in (2, 599, 600):
        got = port.loss(x, 0.5, torch.Generator().manual_seed(5), step)["loss"]
        want = ours.loss(x, port_temperature(step), torch.Generator().manual_seed(5), step)["loss"]
        assert torch.equal(got, want)


def test_grey_levels_train_on_intensities():
    ours, port = _pair(flaws=["grey_levels"])
    grey = torch.rand(4, 12, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError):
        ours.loss(grey, 1.0, torch.Generator().manual_seed(7))
    recon = port.loss(grey, 1.0, torch.Generator().manual_seed(7))["recon"]
    # the Bernoulli "likelihood" of grey levels: its minimum over the decoder is the entropy, not 0
    assert recon.item() > 0
    with pytest.raises(ValueError):
        port.loss(grey * 2, 1.0)  # intensities must stay in [0, 1]
    assert port_train_config(["grey_levels"], epochs=3).binarize is False
    assert port_train_config(["relu_logits"]).binarize is True
    with pytest.raises(ValueError, match="binarize: set it through flaws"):
        port_train_config([], binarize=False)


def test_the_ports_test_number_is_the_relaxed_nelbo_at_tau_1():
    _, port = _pair(flaws=TRAINING_FLAWS)
    x = _binary(n=7)
    got = port_test_nelbo(port, x, 1.0, generator=torch.Generator().manual_seed(8), batch_size=3)
    g = torch.Generator().manual_seed(8)
    parts = [cv.negative_elbo(port, x[i:i + 3], 1.0, generator=g) for i in (0, 3, 6)]
    assert got == pytest.approx(torch.cat(parts).double().mean().item(), rel=1e-12)


def test_the_engine_trains_and_resumes_a_flawed_model(tmp_path):
    data = torch.rand(40, 12, generator=torch.Generator().manual_seed(9))
    flaws = TRAINING_FLAWS
    torch.manual_seed(0)
    model = PortVAE(3, 4, input_dim=12, hidden=(8,), flaws=flaws, steps_per_epoch=4)
    first = train(model, data, port_train_config(flaws, epochs=1, batch_size=10), out_dir=tmp_path, progress=False)
    assert first.step == 4 and model.config()["flaws"] == list(flaws)
    torch.manual_seed(0)
    again = PortVAE.from_config(model.config())
    second = train(again, data, port_train_config(flaws, epochs=2, batch_size=10), out_dir=tmp_path, progress=False)
    assert second.resumed_from_epoch == 1 and second.step == 8
    with pytest.raises(ValueError, match="flaws"):  # a run written with other flaws is not resumed
        train(PortVAE(3, 4, input_dim=12, hidden=(8,), steps_per_epoch=4), data,
              port_train_config(flaws, epochs=3, batch_size=10), out_dir=tmp_path, progress=False)
