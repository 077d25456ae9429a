"""gstutorial.checkpoints: the table of model kinds, compact weights files, and loading a model from a
weights file or a training checkpoint."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from gstutorial.catvae import CategoricalVAE
from gstutorial.checkpoints import (
    MODEL_KINDS,
    PRETRAINED,
    WEIGHTS_FORMAT,
    build_model,
    export_weights,
    load_model,
    pretrained,
)
from gstutorial.data import load_mnist
from gstutorial.engine import CHECKPOINT_NAME, TrainableModel, TrainConfig, train
from gstutorial.jointvae import JointVAE
from gstutorial.resources import weights_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A small model of each kind, as a config() dict (built without touching the global random state).
with torch.random.fork_rng():
    SMALL = {"catvae": CategoricalVAE(8, 4, estimator="st", hidden=(64, 32)).config(),
             "jointvae": JointVAE(3, 4, hidden=(16, 8), architecture="mlp", cont_delay=5).config()}


@pytest.fixture(scope="module")
def train_x(mnist_root):
    return load_mnist("train", mnist_root)[0][:300]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# MODEL_KINDS and build_model
# --------------------------------------------------------------------------------------------------

def test_every_model_kind_is_trainable_and_named_by_its_key():
    assert set(MODEL_KINDS) == set(SMALL)       # a new kind needs its entry here (and in SMALL)
    for name, cls in MODEL_KINDS.items():
        model = cls.from_config(SMALL[name])
        assert isinstance(model, TrainableModel)
        assert model.config()["model"] == name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_build_model_rebuilds_the_model_a_config_describes(name):
    model = build_model(SMALL[name])
    assert type(model) is MODEL_KINDS[name] and model.config() == SMALL[name]


def test_build_model_refuses_an_unknown_model():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; known: \['catvae', 'jointvae'\]"):
        build_model({"model": "resnet"})
    with pytest.raises(ValueError, match="unknown model None"):
        build_model({"latent_dim": 20})
    with pytest.raises(TypeError, match="latent_dim"):
        build_model({**SMALL["catvae"], "latent_dim": 8.0})


# --------------------------------------------------------------------------------------------------
# export_weights and load_model
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_weights_file_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(SMALL[name])
    path = export_weights(model, tmp_path / "sub" / "w16.pt", history=[{"epoch": 1, "loss": 2.5}], note="x")
    assert path == tmp_path / "sub" / "w16.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == WEIGHTS_FORMAT and raw["dtype"] == "float16"
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    loaded, meta = load_model(path, device="cpu")
    assert type(loaded) is type(model) and loaded.config() == model.config() and not loaded.training
    assert meta["history"] == [{"epoch": 1, "loss": 2.5}] and meta["note"] == "x"
    assert meta["model_config"] == model.config() and "state_dict" not in meta
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == torch.float32
        assert torch.equal(got, value.half().float())   # exactly the float16 rounding of each weight


def test_weights_file_in_other_precisions(tmp_path):
    torch.manual_seed(0)
    model = build_model(SMALL["catvae"])
    exact = export_weights(model, tmp_path / "w32.pt", dtype=torch.float32)
    loaded, meta = load_model(exact, device="cpu")
    assert meta["dtype"] == "float32" and same_state(loaded.state_dict(), model.state_dict())
    loaded64, _ = load_model(exact, device="cpu", dtype=torch.float64)
    assert all(v.dtype == torch.float64 for v in loaded64.state_dict().values())
    bf16, meta = load_model(export_weights(model, tmp_path / "bf16.pt", dtype=torch.bfloat16), device="cpu")
    assert meta["dtype"] == "bfloat16"
    torch.testing.assert_close(bf16.state_dict()["encoder.0.weight"], model.state_dict()["encoder.0.weight"],
                               rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match="^dtype must be one of"):
        export_weights(model, tmp_path / "w8.pt", dtype=torch.int8)
    assert not (tmp_path / "w8.pt").exists()


def test_load_model_from_a_training_checkpoint(tmp_path, train_x):
    torch.manual_seed(0)
    result = train(build_model(SMALL["catvae"]), train_x, TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    device = next(result.model.parameters()).device  # CUDA when present: compare where training ran
    model, meta = load_model(tmp_path / CHECKPOINT_NAME, device=device)
    assert same_state(model.state_dict(), result.model.state_dict())
    assert meta["step"] == 3 and meta["train_config"]["epochs"] == 1 and meta["history"] == result.history
    # the training state stays behind: metadata is plain data about the run
    assert not {"model_state", "optimizer_state", "rng"} & set(meta)
    export_weights(result.model, tmp_path / "w16.pt", history=result.history)
    # weights only, in half precision: under a quarter of the checkpoint (weights + two Adam moments)
    assert (tmp_path / "w16.pt").stat().st_size < 0.25 * (tmp_path / CHECKPOINT_NAME).stat().st_size


def test_load_model_reads_checkpoints_that_stored_the_torch_version_object(tmp_path):
    torch.manual_seed(0)
    path = export_weights(build_model(SMALL["jointvae"]), tmp_path / "w.pt", torch_version=torch.__version__)
    _, meta = load_model(path, device="cpu")
    assert meta["torch_version"] == torch.__version__


def test_load_model_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a gstutorial checkpoint nor a weights file"):
        load_model(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="neither a gstutorial checkpoint nor a weights file"):
        load_model(tmp_path / "tensor.pt")
    path = export_weights(build_model(SMALL["catvae"]), tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "args": argparse.Namespace(epochs=1)}, path)   # not plain data: not unpickled
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_model(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_model_names_a_missing_cuda_device(tmp_path):
    path = export_weights(build_model(SMALL["catvae"]), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="PyTorch sees no CUDA device here"):
        load_model(path, device=torch.device("cuda"))


# --------------------------------------------------------------------------------------------------
# The models the package ships
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("catvae-20x10-gs", CategoricalVAE), ("catvae-20x10-st", CategoricalVAE),
                                            ("jointvae", JointVAE), ("jointvae-conv", JointVAE)])
def test_pretrained_loads_each_shipped_model_by_name(name, kind):
    model, meta = pretrained(name, device="cpu")
    assert type(model) is kind and not model.training
    assert meta["format"] == WEIGHTS_FORMAT and meta["dtype"] == "float16" and meta["history"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model64, _ = pretrained(name, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in model64.parameters()} == {torch.float64}
    # the same model as load_model gives from the file
    assert same_state(model.state_dict(), load_model(weights_file(name), device="cpu")[0].state_dict())


def test_pretrained_names_are_the_shipped_ones():
    assert PRETRAINED == ("catvae-20x10-gs", "catvae-20x10-st", "jointvae", "jointvae-conv")
    with pytest.raises(ValueError, match="no pretrained model named 'catvae'; the package ships: catvae-20x10-gs, "):
        pretrained("catvae")
