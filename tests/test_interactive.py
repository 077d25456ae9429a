"""gstutorial.interactive: the numbers behind the book's interactive figures, and the HTML they make.

The browser suite (tests/browser) checks what the page draws against these same functions."""

from __future__ import annotations

import base64
import configparser
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from gstutorial import gumbel, interactive
from gstutorial.analysis import traverse
from gstutorial.checkpoints import pretrained

REPO = Path(__file__).resolve().parents[1]
MEGABYTE = 1_000_000


def payload(figure: interactive.InteractiveFigure) -> dict:
    body = re.search(r'<script type="application/json" class="gst-payload">([^<]*)</script>', figure.html).group(1)
    return json.loads(body)


def decode_png(uri: str) -> np.ndarray:
    raw = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    return np.rint(mpimg.imread(io.BytesIO(raw), format="png") * 255).astype(np.uint8)


def sanitized(html: str) -> str:
    """``html`` under the nbval sanitizer patterns of tests/nbval_sanitize.cfg."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "tests" / "nbval_sanitize.cfg")
    for section in config.sections():
        html = re.sub(config[section]["regex"], config[section]["replace"], html)
    return html


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------

def test_gray_png_is_lossless():
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 61)).astype(np.uint8)
    pixels[5] = 0
    pixels[:, 7] = 255
    assert np.array_equal(decode_png("data:image/png;base64," + base64.b64encode(interactive.gray_png(pixels)).decode()),
                          pixels)


def test_gray_png_checks_its_argument():
    with pytest.raises(TypeError, match="pixels"):
        interactive.gray_png(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="pixels"):
        interactive.gray_png(np.zeros(9, np.uint8))


def test_simplex_xy_puts_the_vertices_and_centre_in_place():
    xy = interactive.simplex_xy(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]]))
    assert np.allclose(xy, [[0, 0], [1, 0], [0.5, math.sqrt(3) / 2], [0.5, math.sqrt(3) / 6]])


# --------------------------------------------------------------------------------------------------
# Chapter 4: the race
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("logits", [(1.0, 0.0, -1.0), (0.3, 0.3, 0.3), (-3.0, 2.5, 0.1)])
def test_race_draws_are_gumbel_max_noise(logits):
    draws = interactive.gumbel_max_race_data(num_draws=2000, seed=4)
    x = torch.tensor(logits, dtype=torch.float64)
    expected = gumbel.gumbel_max(x.expand(2000, 3), generator=torch.Generator().manual_seed(4)).numpy()
    assert np.array_equal(np.argmax(np.array(logits) + draws, axis=1), expected)


def test_race_figure_embeds_the_draws_and_is_deterministic():
    figure = interactive.gumbel_max_race_figure(logits=(0.5, 0.0, -0.5), num_draws=1000, seed=2)
    again = interactive.gumbel_max_race_figure(logits=(0.5, 0.0, -0.5), num_draws=1000, seed=2)
    assert figure.html == again.html
    assert repr(figure) == "InteractiveFigure('gumbel-max-race')"
    data = payload(figure)
    draws = np.frombuffer(base64.b64decode(data["draws"]), dtype="<f8").reshape(-1, 3)
    assert np.array_equal(draws, interactive.gumbel_max_race_data(1000, 2))
    assert data["logits"] == [0.5, 0.0, -0.5]
    for k in range(3):  # a labelled slider per logit, ids from the name
        assert f'<label for="gst-gumbel-max-race-x{k}">' in figure.html
        assert f'<input type="range" id="gst-gumbel-max-race-x{k}"' in figure.html


def test_race_figure_checks_its_arguments():
    with pytest.raises(ValueError, match="logits"):
        interactive.gumbel_max_race_figure(logits=(1.0, 2.0))
    with pytest.raises(ValueError, match="logits"):
        interactive.gumbel_max_race_figure(logits=(4.0, 0.0, 0.0))
    with pytest.raises(TypeError, match="logits"):
        interactive.gumbel_max_race_figure(logits="abc")
    with pytest.raises(ValueError, match="name"):
        interactive.gumbel_max_race_figure(name="Not An Id")
    with pytest.raises(TypeError, match="num_draws"):
        interactive.gumbel_max_race_data(num_draws=10.0)


# --------------------------------------------------------------------------------------------------
# Chapter 5: the simplex
# --------------------------------------------------------------------------------------------------

PRESETS = {"a": (0.4, -0.2, -1.0), "uniform": (0.0, 0.0, 0.0)}
TAUS = (0.3, 1.0, 2.0)


@pytest.fixture(scope="module")
def simplex():
    return interactive.concrete_simplex_data(PRESETS, TAUS, width=40, num_samples=500, seed=3)


def test_simplex_levels_quantise_the_concrete_density(simplex):
    level, lo, hi = simplex["level"], simplex["lo"], simplex["hi"]
    height, width = level.shape[2:]
    assert (height, width) == (round(40 * math.sqrt(3) / 2), 40)
    for i, logits in enumerate(PRESETS.values()):
        for j, tau in enumerate(TAUS):
            rows, cols = np.nonzero(level[i, j] != 255)
            x = (cols + 0.5) / width
            y2 = (height - 0.5 - rows) / height  # pixel centre height over the triangle's height
            y = np.stack([1 - x - 0.5 * y2, x - 0.5 * y2, y2], -1)
            y = y / y.sum(-1, keepdims=True)
            assert (y > 1e-3 * 0.99).all()
            log10_p = gumbel.concrete_log_prob(torch.from_numpy(y), torch.tensor(logits, dtype=torch.float64),
                                               tau).numpy() / math.log(10)
            assert hi[i, j] == pytest.approx(log10_p.max())
            expected = np.rint(254 * np.clip((log10_p - lo[i, j]) / (hi[i, j] - lo[i, j]), 0, 1))
            assert np.abs(level[i, j][rows, cols] - expected).max() <= 1  # the pixel centres round differently
    assert (level[:, :, 0, 0] == 255).all() and (level[:, :, 0, -1] == 255).all()  # the top corners lie outside


def test_simplex_uniform_map_at_tau_one_is_the_closed_form(simplex):
    # K = 3, uniform pi, tau = 1: p(y) = Gamma(3) prod_i (y_i^-2 / 3) / (sum_i y_i^-1 / 3)^3 = 2 prod y_i^-2 / (sum 1/y_i)^3
    level, lo, hi = simplex["level"][1, 1], simplex["lo"][1, 1], simplex["hi"][1, 1]
    height, width = level.shape
    rows, cols = np.nonzero(level != 255)
    x = (cols + 0.5) / width
    y2 = (height - 0.5 - rows) / height
    y = np.stack([1 - x - 0.5 * y2, x - 0.5 * y2, y2], -1)
    closed_form = np.log10(2 * np.prod(y, -1) ** -2 / np.sum(1 / y, -1) ** 3)
    shown = lo + level[rows, cols] / 254 * (hi - lo)
    assert np.abs(shown - np.clip(closed_form, lo, hi)).max() <= 0.5 / 254 * (hi - lo) + 1e-9
    centre = np.argmin(np.abs(y - 1 / 3).sum(-1))
    assert 10 ** shown[centre] == pytest.approx(2.0, rel=0.02)


def test_simplex_samples_are_the_packages_and_share_their_draws(simplex):
    for i, logits in enumerate(PRESETS.values()):
        x = torch.tensor(logits, dtype=torch.float64)
        for j, tau in enumerate(TAUS):
            expected = gumbel.gumbel_softmax(x.expand(500, 3), tau, generator=torch.Generator().manual_seed(3))
            assert np.array_equal(simplex["samples"][i, j], expected.numpy())
            assert np.allclose(simplex["mean"][i, j], expected.mean(0).numpy())
        winners = simplex["samples"][i].argmax(-1)
        assert (winners == winners[0]).all()  # the same Gumbel draws: the same argmax at every temperature
        assert np.array_equal(simplex["frequencies"][i], np.bincount(winners[0], minlength=3) / 500)
        # the argmax frequencies are Gumbel-Max frequencies: within 4 standard errors of pi
        assert np.abs(simplex["frequencies"][i] - simplex["pi"][i]).max() < 4 * math.sqrt(0.25 / 500)


def test_simplex_figure_payload_and_arguments():
    figure = interactive.concrete_simplex_figure(PRESETS, TAUS, start_temperature=2.0, num_samples=50, name="s")
    data = payload(figure)
    assert data["labels"] == list(PRESETS) and data["temperatures"] == list(TAUS) and data["start_tau"] == 2
    positions = np.frombuffer(base64.b64decode(data["positions"]), dtype="<u2").reshape(2, 3, 50, 2)
    numbers = interactive.concrete_simplex_data(PRESETS, TAUS, num_samples=50)
    xy = interactive.simplex_xy(numbers["samples"]) / [1.0, math.sqrt(3) / 2]
    assert np.abs(positions / 65535 - xy).max() <= 0.5 / 65535 + 1e-12
    with pytest.raises(ValueError, match="start_temperature"):
        interactive.concrete_simplex_figure(PRESETS, TAUS, start_temperature=0.5)
    with pytest.raises(ValueError, match="temperatures"):
        interactive.concrete_simplex_data(PRESETS, (1.0, -1.0))
    with pytest.raises(ValueError, match="presets"):
        interactive.concrete_simplex_data({"two": (1.0, 0.0)})


# --------------------------------------------------------------------------------------------------
# Chapters 7 and 8: the trained models
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_images():
    from gstutorial.data import load_mnist
    return load_mnist("test", binarize="fixed", seed=0)[0]


def test_catvae_codes_are_single_variable_changes_of_the_mode_code(test_images):
    model, _ = pretrained("catvae-20x10-gs", device="cpu")
    images = test_images[[3, 61]]
    modes, decoded = interactive.catvae_codes_data(model, images)
    assert modes.shape == (2, 20) and decoded.shape == (2, 20, 10, 28, 28)
    assert np.array_equal(modes, model.encode(images).argmax(-1).numpy())
    for b in range(2):
        mode_image = decoded[b, 0, modes[b, 0]]
        assert all(np.array_equal(decoded[b, v, modes[b, v]], mode_image) for v in range(20))
        for v, c in ((0, 3), (7, 9), (19, 0)):
            z = torch.nn.functional.one_hot(torch.from_numpy(modes[b]), 10).float()
            z[v] = torch.nn.functional.one_hot(torch.tensor(c), 10).float()
            with torch.no_grad():
                expected = torch.sigmoid(model.decode(z[None]))[0].numpy().reshape(28, 28)
            assert np.abs(decoded[b, v, c] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(TypeError, match="model"):
        interactive.catvae_codes_data(torch.nn.Linear(2, 2), images)


def test_jointvae_grid_matches_the_traversal():
    model, _ = pretrained("jointvae-conv", device="cpu")
    values = [-1.5, 0.0, 2.0]
    grid = interactive.jointvae_style_data(model, [9, 0], values)
    assert grid.shape == (10, 3, 3, 28, 28)
    for k, a, b in ((0, 0, 2), (4, 1, 1), (9, 2, 0)):
        base = torch.zeros(model.continuous_dim)
        base[0] = values[b]
        expected = traverse(model, 9, [values[a]], categories=[k], base=base)[0, 0].numpy().reshape(28, 28)
        assert np.abs(grid[k, a, b] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="dims"):
        interactive.jointvae_style_data(model, [3, 3], values)
    with pytest.raises(ValueError, match="dims"):
        interactive.jointvae_style_data(model, [0, 10], values)


@pytest.fixture(scope="module")
def model_figures():
    return {"catvae": interactive.catvae_codes_figure(digits=(3, 61)),
            "jointvae": interactive.jointvae_style_figure(num_images=500)}


def test_model_figures_ship_the_decoded_images_as_sprites(model_figures):
    data = payload(model_figures["catvae"])
    model, _ = pretrained("catvae-20x10-gs", device="cpu")
    from gstutorial.data import load_mnist
    images = load_mnist("test", binarize="fixed", seed=0)[0][[3, 61]]
    modes, decoded = interactive.catvae_codes_data(model, images)
    for b, entry in enumerate(data["digits"]):
        sprite = decode_png(entry["sprite"])
        assert sprite.shape == (20 * 28, 10 * 28)
        assert entry["mode"] == modes[b].tolist()
        assert np.array_equal(sprite[7 * 28:8 * 28, 4 * 28:5 * 28], decoded[b, 7, 4])
    style = payload(model_figures["jointvae"])
    assert len(style["dims"]) == 2 and style["kl"][0] >= style["kl"][1] > 0.1
    sprite = decode_png(style["sprite"])
    v = len(style["values"])
    assert sprite.shape == (10 * v * 28, v * 28)
    grid = interactive.jointvae_style_data(pretrained("jointvae-conv", device="cpu")[0], style["dims"], style["values"])
    k, a, b = 6, 1, v - 1
    assert np.array_equal(sprite[(k * v + a) * 28:(k * v + a + 1) * 28, b * 28:(b + 1) * 28], grid[k, a, b])


def test_every_figure_stays_under_a_megabyte_and_has_a_static_fallback(model_figures):
    figures = [interactive.gumbel_max_race_figure(), interactive.concrete_simplex_figure(),
               interactive.catvae_codes_figure(), model_figures["jointvae"]]
    for figure in figures:
        assert len(figure.html.encode()) < MEGABYTE, figure.name
        fallback = re.search(r'<img class="gst-fallback" alt="[^"]+" src="(data:image/png;base64,[^"]+)"', figure.html)
        assert decode_png(fallback.group(1)).shape[0] > 100, figure.name
        assert "@media print" in figure.html
        assert "http://" not in figure.html.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in figure.html  # nothing is fetched: no CDN


def test_the_compared_output_is_the_same_for_other_data():
    """nbval compares the HTML under tests/nbval_sanitize.cfg: only the embedded data may differ."""
    one = interactive.gumbel_max_race_figure(num_draws=100, seed=1)
    two = interactive.gumbel_max_race_figure(num_draws=100, seed=2)
    assert one.html != two.html
    assert sanitized(one.html) == sanitized(two.html)
    assert len(sanitized(one.html)) < 20_000  # what remains is structure and script, not data
    assert sanitized(interactive.gumbel_max_race_figure(name="other").html) != sanitized(one.html)
