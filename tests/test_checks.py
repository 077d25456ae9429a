"""gstutorial.checks: argument validation (TypeError for a wrong type, ValueError for a wrong value,
the message naming the argument) and the per-thread switch for scans of tensor values."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import numpy as np
import pytest
import torch

from gstutorial.checks import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_int,
    check_real,
    check_temperature,
    check_tensor,
    value_checks,
    value_checks_enabled,
)

# --------------------------------------------------------------------------------------------------
# check_int
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 7, -3, 2**70, np.int8(7), np.int64(-3), np.uint16(9)])
def test_check_int_returns_a_python_int_of_the_same_value(value):
    got = check_int(value, "count")
    assert type(got) is int and got == int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.0, 2.5, np.float64(3.0), "3", None,
                                   torch.tensor(3), [3]])
def test_check_int_refuses_other_types_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"^count must be an int"):
        check_int(value, "count")


def test_check_int_minimum_is_inclusive():
    assert check_int(1, "epochs", 1) == 1
    assert check_int(np.int32(5), "epochs", 5) == 5
    with pytest.raises(ValueError, match=r"^epochs must be >= 1, got 0$"):
        check_int(0, "epochs", 1)
    with pytest.raises(ValueError, match=r"^seed must be >= 0, got -1$"):
        check_int(np.int64(-1), "seed", 0)
    assert check_int(-10**9, "offset") == -10**9       # no minimum: any int


def test_check_int_tests_the_type_before_the_minimum():
    with pytest.raises(TypeError, match="epochs"):
        check_int(-1.0, "epochs", 0)


# --------------------------------------------------------------------------------------------------
# check_real
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 3, -2.5, 1e-300, np.float32(0.25), np.float64(-4.0), np.int64(7),
                                   Fraction(1, 4)])
def test_check_real_returns_a_python_float_of_the_same_value(value):
    got = check_real(value, "lr")
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(False), "0.1", None, 1j, torch.tensor(0.1)])
def test_check_real_refuses_other_types_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"^lr must be a real number"):
        check_real(value, "lr")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_check_real_refuses_non_finite_values(value):
    with pytest.raises(ValueError, match=r"^lr must be finite"):
        check_real(value, "lr")


def test_check_real_positive_and_nonnegative_bounds():
    assert check_real(1e-12, "tau0", positive=True) == 1e-12
    assert check_real(0, "rate", nonnegative=True) == 0.0
    for bad in (0, -0.0, -1e-12):
        with pytest.raises(ValueError, match=r"^tau0 must be > 0"):
            check_real(bad, "tau0", positive=True)
    with pytest.raises(ValueError, match=r"^rate must be >= 0, got -1e-12$"):
        check_real(-1e-12, "rate", nonnegative=True)
    assert check_real(-5, "shift") == -5.0              # no bound asked: negatives pass


# --------------------------------------------------------------------------------------------------
# check_bool, check_choice
# --------------------------------------------------------------------------------------------------


def test_check_bool_accepts_only_the_two_flags():
    assert check_bool(True, "binarize") is True
    assert check_bool(False, "binarize") is False
    for bad in (0, 1, np.bool_(True), "True", None, torch.tensor(True)):
        with pytest.raises(TypeError, match=r"^binarize must be True or False"):
            check_bool(bad, "binarize")


def test_check_choice_returns_the_value_or_names_the_choices():
    assert check_choice("conv", "architecture", ("mlp", "conv")) == "conv"
    assert check_choice(torch.float16, "dtype", (torch.float16, torch.float32)) is torch.float16
    with pytest.raises(ValueError, match=r"^architecture must be one of \('mlp', 'conv'\), got 'resnet'$"):
        check_choice("resnet", "architecture", ("mlp", "conv"))
    with pytest.raises(ValueError, match="image_size"):
        check_choice(64, "image_size", (28, 32))


# --------------------------------------------------------------------------------------------------
# check_tensor, check_float_tensor
# --------------------------------------------------------------------------------------------------


def test_check_tensor_returns_the_tensor_itself():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "logits") is x
    ints = torch.zeros(4, dtype=torch.long)
    assert check_tensor(ints, "labels", floating=False) is ints
    assert check_tensor(torch.zeros(3), "logits", category_axis=True).shape == (3,)


def test_check_tensor_refuses_non_tensors_and_integer_tensors():
    with pytest.raises(TypeError, match=r"^logits must be a torch.Tensor, got list"):
        check_tensor([0.0, 1.0], "logits")
    with pytest.raises(TypeError, match=r"^logits must be a torch.Tensor, got ndarray"):
        check_tensor(np.zeros(3), "logits")
    with pytest.raises(TypeError, match=r"^logits must be a floating-point tensor, got torch.int64"):
        check_tensor(torch.zeros(3, dtype=torch.long), "logits")
    with pytest.raises(TypeError, match=r"^logits must be a floating-point tensor, got torch.bool"):
        check_tensor(torch.zeros(3, dtype=torch.bool), "logits")


@pytest.mark.parametrize("shape", [(), (4, 0), (0,)])
def test_check_tensor_category_axis_must_be_non_empty(shape):
    with pytest.raises(ValueError, match=r"^logits needs a non-empty category axis"):
        check_tensor(torch.zeros(shape), "logits", category_axis=True)
    check_tensor(torch.zeros(shape), "logits")          # without category_axis the shape is free


def test_check_float_tensor_scans_values_only_while_checks_are_on():
    x = torch.tensor([0.0, 1.0])
    assert check_float_tensor(x, "std") is x
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = torch.tensor([0.0, bad])
        with pytest.raises(ValueError, match=r"^std has NaN or infinite entries"):
            check_float_tensor(y, "std")
        with value_checks(False):
            assert check_float_tensor(y, "std") is y
    with value_checks(False), pytest.raises(TypeError, match="std"):  # the type is always checked
        check_float_tensor(torch.tensor([1]), "std")


# --------------------------------------------------------------------------------------------------
# check_temperature
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.5, 1, np.float32(0.25), np.int64(2), torch.tensor(0.7),
                                 torch.tensor([0.7], dtype=torch.float64)])
def test_check_temperature_returns_a_python_float(tau):
    got = check_temperature(tau)
    assert type(got) is float and got == pytest.approx(float(tau))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf"), torch.tensor(0.0),
                                 torch.tensor(float("nan"))])
def test_check_temperature_refuses_non_positive_and_non_finite_values(tau):
    with pytest.raises(ValueError, match=r"^temperature must be"):
        check_temperature(tau)


@pytest.mark.parametrize("tau", ["1.0", None, True, [1.0]])
def test_check_temperature_refuses_other_types(tau):
    with pytest.raises(TypeError, match=r"^tau must be a real number"):
        check_temperature(tau, "tau")


def test_check_temperature_tensor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^tau must be a single number, got a tensor of shape \(2,\)"):
        check_temperature(torch.tensor([0.5, 1.0]), "tau")
    with pytest.raises(ValueError, match=r"^tau is a tensor that requires grad"):
        check_temperature(torch.tensor(0.5, requires_grad=True), "tau")
    assert check_temperature(torch.tensor(0.5, requires_grad=True).detach(), "tau") == 0.5


def test_check_temperature_differentiable_returns_a_learnable_temperature_as_a_0d_tensor():
    tau = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    got = check_temperature(tau, differentiable=True)
    assert isinstance(got, torch.Tensor) and got.shape == () and got.requires_grad and got.item() == 0.5
    got.backward()
    assert tau.grad.tolist() == [1.0]  # the gradient reaches the caller's tensor
    # one that does not require grad, or a number, is still read as a float
    for value in (torch.tensor(0.5), 0.5, np.float32(0.5)):
        got = check_temperature(value, differentiable=True)
        assert type(got) is float and got == 0.5
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^tau must be a finite number > 0"):
            check_temperature(torch.tensor(bad, requires_grad=True), "tau", differentiable=True)
    with pytest.raises(ValueError, match=r"^tau must be a single number"):
        check_temperature(torch.ones(2, requires_grad=True), "tau", differentiable=True)
    with pytest.raises(TypeError, match=r"^tau must be a real floating-point tensor"):
        check_temperature(torch.tensor(0.5 + 0j, requires_grad=True), "tau", differentiable=True)


# --------------------------------------------------------------------------------------------------
# value_checks: the switch
# --------------------------------------------------------------------------------------------------


def test_value_checks_switch_turns_scans_off_and_restores():
    from gstutorial.gumbel import gumbel_softmax
    from gstutorial.nets import check_images

    grey = torch.full((2, 784), 0.5)
    nan_logits = torch.tensor([[0.0, float("nan")]])
    assert value_checks_enabled()
    with pytest.raises(ValueError, match="binarized"):
        check_images(grey, 784, binary=True)
    with pytest.raises(ValueError, match="NaN"):
        gumbel_softmax(nan_logits, 1.0)
    with value_checks(False):
        assert not value_checks_enabled()
        check_images(grey, 784, binary=True)                         # no scan of the values
        assert torch.isnan(gumbel_softmax(nan_logits, 1.0)).all()   # NaN passes through unexplained
        with pytest.raises(ValueError, match=r"shape \(batch, 784\)"):
            check_images(grey[:, :10], 784)                          # shapes are still checked
        with pytest.raises(ValueError, match="temperature"):
            gumbel_softmax(torch.zeros(2, 3), 0.0)                   # and arguments
    assert value_checks_enabled()


def test_value_checks_nest_and_restore_on_errors():
    with value_checks(False):
        with value_checks(True):
            assert value_checks_enabled()
        assert not value_checks_enabled()
        with pytest.raises(RuntimeError), value_checks(True):
            raise RuntimeError("an error inside the block")
        assert not value_checks_enabled()                           # the enclosing setting is back
    assert value_checks_enabled()
    with value_checks(0):                                           # read as a truth value
        assert value_checks_enabled() is False


def test_value_checks_switch_belongs_to_the_calling_thread():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        assert inside.wait(10)
        seen["other"] = value_checks_enabled()
        with value_checks(False):                                   # and the other thread's switch ...
            seen["other inside"] = value_checks_enabled()
            done.set()
            assert release.wait(10)

    release = threading.Event()
    worker = threading.Thread(target=other_thread)
    worker.start()
    with value_checks(False):
        inside.set()
        assert done.wait(10)
        seen["this"] = value_checks_enabled()
    seen["this after"] = value_checks_enabled()                     # ... does not reach this one
    release.set()
    worker.join(10)
    assert seen == {"this": False, "other": True, "other inside": False, "this after": True}


def test_value_checks_switch_belongs_to_the_asyncio_task():
    async def scenario():
        started, finish = asyncio.Event(), asyncio.Event()

        async def trainer():
            with value_checks(False):
                started.set()
                await finish.wait()
                return value_checks_enabled()

        task = asyncio.create_task(trainer())
        await started.wait()
        here = value_checks_enabled()       # another task, while the trainer is inside its block
        finish.set()
        return here, await task

    assert asyncio.run(scenario()) == (True, False)
