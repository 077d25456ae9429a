"""Interactive figures for the rendered book: the package computes the data, the page only draws it.

Each ``*_figure`` function returns an :class:`InteractiveFigure`: in a notebook it displays as HTML
(``_repr_html_``) with a constant text form (``repr``), so that nbval compares a stable string. The
HTML holds everything it needs, with no network and no library: the data as JSON (numbers computed
here, images as base64 PNG), a short vanilla-JavaScript script that selects and draws with SVG and
canvas, labelled keyboard-reachable controls (``<input type=range>``, ``<select>``, ``<button>``),
and a static PNG of the same figure (matplotlib) shown for print and when scripts do not run.
Element ids derive from the figure's ``name``; the page exposes what it displays as ``data-*``
attributes of the figure's root element (and of its SVG elements), so that a browser test can
compare the drawing with the package's numbers.

The ``*_data`` functions return the numbers behind each figure as NumPy arrays, for tests and for
readers who want them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gstutorial import gumbel
from gstutorial.analysis import kl_per_dimension, predict_clusters
from gstutorial.catvae import CategoricalVAE
from gstutorial.checkpoints import pretrained
from gstutorial.checks import check_int, check_real
from gstutorial.data import load_mnist
from gstutorial.jointvae import JointVAE

__all__ = [
    "InteractiveFigure",
    "catvae_codes_data",
    "catvae_codes_figure",
    "concrete_simplex_data",
    "concrete_simplex_figure",
    "gray_png",
    "gumbel_max_race_data",
    "gumbel_max_race_figure",
    "jointvae_style_data",
    "jointvae_style_figure",
    "simplex_xy",
]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
SIDE = 28  # MNIST images are 28 x 28


@dataclass(frozen=True)
class InteractiveFigure:
    """A self-contained interactive figure: ``html`` is what a notebook or the book page shows."""

    name: str
    html: str

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:  # the text/plain output nbval compares: constant
        return f"InteractiveFigure({self.name!r})"


# --------------------------------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------------------------------

def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not _NAME.match(name):
        raise ValueError(f"name must be lowercase letters, digits and '-', starting with a letter, got {name!r}")
    return name


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def gray_png(pixels: np.ndarray) -> bytes:
    """A lossless 8-bit greyscale PNG of a 2-D ``uint8`` array (no colour profile: browsers draw the
    grey levels unchanged)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be a uint8 array, got {pixels.dtype}")
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"pixels must be a non-empty 2-D array, got shape {pixels.shape}")
    height, width = pixels.shape
    up = np.diff(pixels, axis=0, prepend=np.zeros((1, width), np.uint8))  # PNG filter 2 ("Up"), mod 256
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


def _to_gray(probabilities: torch.Tensor) -> np.ndarray:
    """Pixel probabilities in [0, 1] as uint8 grey levels ``round(255 p)``."""
    return np.rint(probabilities.detach().double().cpu().numpy() * 255.0).astype(np.uint8)


_CSS = """
#ID { margin: 1em 0; font-size: 0.92em; background: #fff; color: #111; padding: 0.4em; border-radius: 4px; }
#ID .gst-live { display: none; }
#ID.gst-ready .gst-live { display: block; }
#ID.gst-ready .gst-fallback { display: none; }
#ID .gst-fallback { max-width: 100%; height: auto; }
#ID .gst-controls { display: flex; flex-wrap: wrap; gap: 0.4em 1.4em; align-items: center; margin-bottom: 0.5em; }
#ID .gst-controls label { font-weight: 600; margin-right: 0.3em; }
#ID .gst-readout { font-family: monospace; white-space: pre-wrap; margin: 0.4em 0; }
#ID canvas.gst-digit { width: 140px; height: 140px; image-rendering: pixelated; border: 1px solid #999; }
#ID button[aria-pressed="true"] { background: #1f77b4; color: #fff; }
#ID button:focus-visible, #ID input:focus-visible, #ID select:focus-visible { outline: 2px solid #d62728; }
@media print { #ID .gst-live { display: none !important; } #ID .gst-fallback { display: block !important; } }
"""

_JS_PRELUDE = """
const ID = __ID__;
// the script's own figure (also in a notebook output not yet attached to the page), else by id
const root = (document.currentScript && document.currentScript.closest('#' + ID)) || document.getElementById(ID);
const byId = suffix => root.querySelector('#' + ID + suffix);
const data = JSON.parse(root.querySelector('script.gst-payload').textContent);
function bytes(b64) { const s = atob(b64); const a = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; }
const SVG = 'http://www.w3.org/2000/svg';
function el(tag, attrs, parent) { const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); if (parent) parent.appendChild(e); return e; }
function fmt(v, d) { return v.toFixed(d); }
"""


def _page(name: str, kind: str, alt: str, fallback: bytes, live: str, payload: dict, script: str,
          css: str = "") -> InteractiveFigure:
    """Assemble the figure: scoped style, fallback image, live part, JSON payload, script."""
    fid = f"gst-{name}"
    style = (_CSS + css).replace("#ID", f"#{fid}")
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    if "<" in body:
        raise ValueError("payload must not contain '<'")
    js = _JS_PRELUDE.replace("__ID__", json.dumps(fid)) + script
    html = (f'<div class="gst-interactive" id="{fid}" data-figure="{kind}">\n<style>{style}</style>\n'
            f'<img class="gst-fallback" alt="{alt}" src="{_png_uri(fallback)}">\n'
            f'<div class="gst-live">\n{live.replace("PFX", fid)}\n</div>\n'
            f'<script type="application/json" class="gst-payload">{body}</script>\n'
            f"<script>\n(function () {{\n{js}\nroot.classList.add('gst-ready');\n}})();\n</script>\n</div>")
    return InteractiveFigure(name, html)


# --------------------------------------------------------------------------------------------------
# Chapter 4: the Gumbel-Max race
# --------------------------------------------------------------------------------------------------

def _check_three_logits(logits: object, name: str = "logits") -> list[float]:
    if isinstance(logits, (str, bytes)) or not isinstance(logits, Sequence):
        raise TypeError(f"{name} must be a sequence of 3 real numbers, got {type(logits).__name__}")
    if len(logits) != 3:
        raise ValueError(f"{name} must hold 3 logits (K = 3), got {len(logits)}")
    return [check_real(v, f"{name}[{i}]") for i, v in enumerate(logits)]


def gumbel_max_race_data(num_draws: int = 5000, seed: int = 0) -> np.ndarray:
    """The fixed Gumbel draws of the race figure: ``(num_draws, 3)`` float64, the noise that
    ``gumbel.gumbel_max(logits.expand(num_draws, 3), generator=torch.Generator().manual_seed(seed))``
    adds to float64 logits, so that ``argmax(x + draws)`` is that call's sample for every ``x``."""
    num_draws = check_int(num_draws, "num_draws", 1)
    seed = check_int(seed, "seed", 0)
    like = torch.zeros(num_draws, 3, dtype=torch.float64)
    return gumbel.gumbel_noise(like, generator=torch.Generator().manual_seed(seed)).numpy()


_RACE_LIVE = """
<div class="gst-controls">
<span><label for="PFX-x0">logit x₀</label><input type="range" id="PFX-x0" min="-3" max="3" step="0.1"><output id="PFX-x0-out"></output></span>
<span><label for="PFX-x1">logit x₁</label><input type="range" id="PFX-x1" min="-3" max="3" step="0.1"><output id="PFX-x1-out"></output></span>
<span><label for="PFX-x2">logit x₂</label><input type="range" id="PFX-x2" min="-3" max="3" step="0.1"><output id="PFX-x2-out"></output></span>
</div>
<svg class="gst-bars" viewBox="0 0 600 250" width="600" height="250" role="img" aria-label="softmax probabilities and argmax frequencies of the three classes"></svg>
<svg class="gst-race" viewBox="0 0 600 250" width="600" height="250" role="img" aria-label="the first ten races: x + g for each class, the winner ringed"></svg>
<p class="gst-readout" aria-live="polite"></p>
"""

_RACE_JS = """
const g = new Float64Array(bytes(data.draws).buffer);
const n = data.num_draws, colors = data.colors;
const sliders = [0, 1, 2].map(k => byId('-x' + k));
sliders.forEach((s, k) => { s.value = data.logits[k]; s.addEventListener('input', update); });
const bars = root.querySelector('svg.gst-bars'), race = root.querySelector('svg.gst-race');
const readout = root.querySelector('.gst-readout');
function update() {
  const x = sliders.map(s => parseFloat(s.value));
  sliders.forEach((s, k) => { byId('-x' + k + '-out').textContent = ' ' + fmt(x[k], 1); });
  const m = Math.max(...x), e = x.map(v => Math.exp(v - m)), z = e[0] + e[1] + e[2];
  const p = e.map(v => v / z);
  const counts = [0, 0, 0];
  for (let i = 0; i < n; i++) {
    let best = 0, top = x[0] + g[3 * i];
    for (let k = 1; k < 3; k++) { const v = x[k] + g[3 * i + k]; if (v > top) { top = v; best = k; } }
    counts[best]++;
  }
  const freq = counts.map(c => c / n);
  root.dataset.logits = x.join(','); root.dataset.softmax = p.join(','); root.dataset.counts = counts.join(',');
  bars.replaceChildren();
  el('line', {x1: 40, x2: 590, y1: 220, y2: 220, stroke: '#333'}, bars);
  for (let k = 0; k < 3; k++) {
    const x0 = 70 + 180 * k, hp = 180 * p[k], hf = 180 * freq[k];
    el('rect', {x: x0, y: 220 - hp, width: 60, height: hp, fill: colors[k], 'fill-opacity': 0.35, stroke: colors[k]}, bars);
    el('rect', {x: x0 + 62, y: 220 - hf, width: 60, height: hf, fill: colors[k], 'data-frequency': freq[k]}, bars);
    el('text', {x: x0 + 30, y: 215 - hp, 'text-anchor': 'middle', 'font-size': 12}, bars).textContent = fmt(p[k], 3);
    el('text', {x: x0 + 92, y: 215 - hf, 'text-anchor': 'middle', 'font-size': 12}, bars).textContent = fmt(freq[k], 3);
    el('text', {x: x0 + 61, y: 238, 'text-anchor': 'middle', 'font-size': 13}, bars).textContent = 'class ' + k;
  }
  el('text', {x: 590, y: 12, 'text-anchor': 'end', 'font-size': 12}, bars).textContent =
    'pale bars: softmax(x); solid bars: frequency of argmax(x + g)';
  race.replaceChildren();
  const lo = -4, hi = 10, sx = v => 100 + 480 * (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo);
  el('text', {x: 5, y: 14, 'font-size': 12}, race).textContent = 'first 10 of the ' + n + ' races: x_k + g_k (winner ringed)';
  for (let t = lo; t <= hi; t += 2) {
    el('line', {x1: sx(t), x2: sx(t), y1: 22, y2: 232, stroke: '#ddd'}, race);
    el('text', {x: sx(t), y: 246, 'text-anchor': 'middle', 'font-size': 11}, race).textContent = t;
  }
  for (let i = 0; i < 10; i++) {
    const y = 32 + 21 * i, v = [0, 1, 2].map(k => x[k] + g[3 * i + k]);
    const w = v.indexOf(Math.max(...v));
    el('text', {x: 5, y: y + 4, 'font-size': 11}, race).textContent = 'race ' + (i + 1) + ': ' + w + ' wins';
    for (let k = 0; k < 3; k++) {
      el('circle', {cx: sx(v[k]), cy: y, r: 5, fill: colors[k]}, race);
      if (k === w) el('circle', {cx: sx(v[k]), cy: y, r: 8, fill: 'none', stroke: '#000', 'stroke-width': 1.5}, race);
    }
  }
  readout.textContent = 'softmax(x)            = (' + p.map(v => fmt(v, 3)).join(', ') + ')\\n' +
    'argmax frequencies    = (' + freq.map(v => fmt(v, 3)).join(', ') + ')  over ' + n + ' fixed Gumbel draws';
}
update();
"""


def gumbel_max_race_figure(logits: Sequence[float] = (1.0, 0.0, -1.0), num_draws: int = 5000, seed: int = 0,
                           name: str = "gumbel-max-race") -> InteractiveFigure:
    """Chapter 4: sliders for three logits; the softmax probabilities next to the frequencies of
    ``argmax(x + g)`` over ``num_draws`` fixed Gumbel draws (:func:`gumbel_max_race_data`), and the
    first ten races drawn as points.

    The page computes the softmax and the argmax counts for the sliders' logits (a browser test
    compares them with ``torch.softmax`` and :func:`gstutorial.gumbel.gumbel_max` on the same
    draws); ``logits`` (3 reals in [-3, 3]) are the sliders' starting values.
    """
    x = _check_three_logits(logits)
    if any(abs(v) > 3 for v in x):
        raise ValueError(f"logits must lie in [-3, 3] (the sliders' range), got {x}")
    name = _check_name(name)
    draws = gumbel_max_race_data(num_draws, seed)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]

    from matplotlib.figure import Figure

    xt = torch.tensor(x, dtype=torch.float64)
    p = torch.softmax(xt, -1).numpy()
    counts = np.bincount(np.argmax(x + draws, axis=1), minlength=3)
    fig = Figure(figsize=(6.5, 2.6))
    ax = fig.add_subplot()
    ax.bar(np.arange(3) - 0.2, p, 0.4, color=colors, alpha=0.35, edgecolor=colors, label="softmax(x)")
    ax.bar(np.arange(3) + 0.2, counts / num_draws, 0.4, color=colors, label=f"frequency of argmax(x + g), {num_draws} draws")
    ax.set_xticks(range(3), [f"class {k}" for k in range(3)])
    ax.set_title(f"x = ({x[0]:g}, {x[1]:g}, {x[2]:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    payload = {"draws": _b64(draws.astype("<f8")), "num_draws": int(num_draws), "seed": int(seed), "logits": x,
               "colors": colors}
    alt = "Softmax probabilities and argmax frequencies of three classes (static image; the interactive version needs JavaScript)"
    return _page(name, "gumbel-max-race", alt, _figure_png(fig), _RACE_LIVE, payload, _RACE_JS)


# --------------------------------------------------------------------------------------------------
# Chapter 5: temperature on the simplex
# --------------------------------------------------------------------------------------------------

HEIGHT = float(np.sqrt(3.0) / 2.0)


def simplex_xy(y: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` of the simplex drawn in the triangle with class 0 at (0, 0), class 1 at
    (1, 0) and class 2 at (1/2, √3/2): ``(..., 2)`` coordinates (y up)."""
    y = np.asarray(y, dtype=float)
    return np.stack([y[..., 1] + 0.5 * y[..., 2], HEIGHT * y[..., 2]], -1)


_DEFAULT_PRESETS = {
    "π = (0.5, 0.3, 0.2)": (np.log(0.5), np.log(0.3), np.log(0.2)),
    "π = (0.8, 0.1, 0.1)": (np.log(0.8), np.log(0.1), np.log(0.1)),
    "π = (1/3, 1/3, 1/3)": (0.0, 0.0, 0.0),
}
_DEFAULT_TAUS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)


def concrete_simplex_data(presets: Mapping[str, Sequence[float]] | None = None,
                          temperatures: Sequence[float] = _DEFAULT_TAUS, width: int = 120, num_samples: int = 300,
                          seed: int = 0, decades: float = 6.0) -> dict[str, np.ndarray]:
    """The numbers behind the simplex figure, for ``P`` presets (label → 3 logits) and ``T`` temperatures.

    Returns a dict of arrays:

    - ``level`` ``(P, T, H, W)`` uint8: the Concrete log-density (:func:`gstutorial.gumbel.concrete_log_prob`,
      float64) at the centre of each pixel of a ``W × H`` raster of the triangle (row 0 at the top,
      ``H = round(W √3/2)``), quantised per map to 0..254 over ``[lo, hi]``; 255 marks pixels outside
      the triangle or within 0.001 of an edge (every ``y_i`` > 0.001 inside);
    - ``lo``, ``hi`` ``(P, T)``: each map's range of log10 density (``hi`` its maximum, ``lo`` its
      minimum but at most ``decades`` below ``hi``);
    - ``samples`` ``(P, T, M, 3)``: ``gumbel_softmax(logits.expand(M, 3), τ, generator=seed)`` in
      float64, the same Gumbel draws at every τ; ``mean`` ``(P, T, 3)`` their mean;
    - ``frequencies`` ``(P, 3)``: the share of samples whose argmax is each class (the same at every τ);
    - ``pi`` ``(P, 3)``: softmax of each preset's logits; ``temperatures`` ``(T,)``.
    """
    presets = dict(_DEFAULT_PRESETS if presets is None else presets)
    if not presets:
        raise ValueError("presets must hold at least one logit vector")
    logits = torch.tensor([_check_three_logits(v, f"presets[{k!r}]") for k, v in presets.items()], dtype=torch.float64)
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
        raise TypeError("temperatures must be a non-empty sequence of numbers")
    taus = [check_real(t, "temperatures", positive=True) for t in temperatures]
    width = check_int(width, "width", 8)
    num_samples = check_int(num_samples, "num_samples", 1)
    seed = check_int(seed, "seed", 0)
    decades = check_real(decades, "decades", positive=True)
    height = int(round(width * HEIGHT))
    px, py = np.meshgrid((np.arange(width) + 0.5) / width, (height - 0.5 - np.arange(height)) / height * HEIGHT)
    y2 = py / HEIGHT
    y1 = px - 0.5 * y2
    grid = np.stack([1 - y1 - y2, y1, y2], -1)
    inside = (grid > 1e-3).all(-1)
    points = torch.from_numpy(grid[inside])
    points = points / points.sum(-1, keepdim=True)
    num_p, num_t = len(presets), len(taus)
    level = np.full((num_p, num_t, height, width), 255, np.uint8)
    lo, hi = np.zeros((num_p, num_t)), np.zeros((num_p, num_t))
    samples = np.zeros((num_p, num_t, num_samples, 3))
    for i, x in enumerate(logits):
        for j, tau in enumerate(taus):
            log10_p = (gumbel.concrete_log_prob(points, x, tau) / np.log(10.0)).numpy()
            hi[i, j] = log10_p.max()
            lo[i, j] = max(log10_p.min(), hi[i, j] - decades)
            span = max(hi[i, j] - lo[i, j], 1e-12)
            level[i, j][inside] = np.rint(254 * np.clip((log10_p - lo[i, j]) / span, 0, 1)).astype(np.uint8)
            generator = torch.Generator().manual_seed(seed)
            samples[i, j] = gumbel.gumbel_softmax(x.expand(num_samples, 3), tau, generator=generator).numpy()
    winners = samples[:, 0].argmax(-1)
    frequencies = np.stack([np.bincount(w, minlength=3) / num_samples for w in winners])
    return {"level": level, "lo": lo, "hi": hi, "samples": samples, "mean": samples.mean(2),
            "frequencies": frequencies, "pi": torch.softmax(logits, -1).numpy(), "temperatures": np.array(taus)}


_SIMPLEX_LIVE = """
<div class="gst-controls">
<span><label for="PFX-preset">logits</label><select id="PFX-preset"></select></span>
<span><label for="PFX-tau">temperature τ</label><input type="range" id="PFX-tau" min="0" step="1"><output id="PFX-tau-out"></output></span>
</div>
<canvas class="gst-heat" hidden></canvas>
<svg class="gst-simplex" viewBox="-0.1 -0.08 1.2 1.02" width="480" height="408" role="img" aria-label="Concrete density on the triangle with samples and their mean"></svg>
<p class="gst-readout" aria-live="polite"></p>
"""

_SIMPLEX_JS = """
const P = data.labels.length, T = data.temperatures.length, W = data.width, H = data.height, M = data.num_samples;
const level = bytes(data.level), cmap = bytes(data.colormap);
const pos = new Uint16Array(bytes(data.positions).buffer);
const select = byId('-preset'), slider = byId('-tau');
data.labels.forEach((label, i) => { const o = document.createElement('option'); o.value = i; o.textContent = label; select.appendChild(o); });
slider.max = T - 1; slider.value = data.start_tau;
select.addEventListener('change', update); slider.addEventListener('input', update);
const canvas = root.querySelector('canvas.gst-heat'); canvas.width = W; canvas.height = H;
const ctx = canvas.getContext('2d'), svg = root.querySelector('svg.gst-simplex');
const readout = root.querySelector('.gst-readout'), h = data.triangle_height;
function update() {
  const i = parseInt(select.value), j = parseInt(slider.value), map = i * T + j, tau = data.temperatures[j];
  byId('-tau-out').textContent = ' ' + tau;
  slider.setAttribute('aria-valuetext', 'tau = ' + tau);
  const img = ctx.createImageData(W, H), off = map * W * H;
  for (let q = 0; q < W * H; q++) {
    const v = level[off + q];
    if (v === 255) { img.data[4 * q + 3] = 0; continue; }
    img.data[4 * q] = cmap[3 * v]; img.data[4 * q + 1] = cmap[3 * v + 1]; img.data[4 * q + 2] = cmap[3 * v + 2];
    img.data[4 * q + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  svg.replaceChildren();
  el('image', {href: canvas.toDataURL(), x: 0, y: 0, width: 1, height: h, preserveAspectRatio: 'none'}, svg);
  el('polygon', {points: '0,' + h + ' 1,' + h + ' 0.5,0', fill: 'none', stroke: '#333', 'stroke-width': 0.004}, svg);
  [['class 0', -0.02, h + 0.05, 'start'], ['class 1', 1.02, h + 0.05, 'end'], ['class 2', 0.5, -0.025, 'middle']].forEach(
    ([t, x, y, a]) => { el('text', {x: x, y: y, 'font-size': 0.04, 'text-anchor': a}, svg).textContent = t; });
  const dots = el('g', {class: 'gst-samples', fill: '#fff', 'fill-opacity': 0.75, stroke: '#000', 'stroke-width': 0.0015}, svg);
  for (let s = 0; s < M; s++) {
    const a = 2 * (map * M + s), x = pos[a] / 65535, y = pos[a + 1] / 65535 * h;
    el('circle', {cx: x, cy: h - y, r: 0.006}, dots);
  }
  const mean = data.mean[map], mx = mean[1] + 0.5 * mean[2], my = h * mean[2];
  el('circle', {class: 'gst-mean', cx: mx, cy: h - my, r: 0.016, fill: '#d62728', stroke: '#fff', 'stroke-width': 0.004}, svg);
  const pi = data.pi[i], px = pi[1] + 0.5 * pi[2], py = h * pi[2];
  el('path', {class: 'gst-pi', d: 'M' + (px - 0.018) + ',' + (h - py) + 'h0.036M' + px + ',' + (h - py - 0.018) + 'v0.036',
              stroke: '#000', 'stroke-width': 0.006}, svg);
  const f = data.frequencies[i];
  root.dataset.preset = i; root.dataset.tau = tau; root.dataset.map = map;
  root.dataset.mean = mean.join(','); root.dataset.frequencies = f.join(',');
  readout.textContent = 'τ = ' + tau + ': colour = log10 density from ' + fmt(data.lo[map], 2) + ' (dark) to ' +
    fmt(data.hi[map], 2) + ' (yellow)\\n' +
    'mean of the ' + M + ' samples (red dot) = (' + mean.map(v => fmt(v, 3)).join(', ') + ')   π (cross) = (' +
    pi.map(v => fmt(v, 3)).join(', ') + ')\\n' +
    'argmax frequencies = (' + f.map(v => fmt(v, 3)).join(', ') + ')   (the same at every τ)';
}
update();
"""


def concrete_simplex_figure(presets: Mapping[str, Sequence[float]] | None = None,
                            temperatures: Sequence[float] = _DEFAULT_TAUS, start_temperature: float = 1.0,
                            num_samples: int = 300, seed: int = 0, name: str = "concrete-simplex") -> InteractiveFigure:
    """Chapter 5: the Concrete density on the triangle (K = 3) as a heat map, a cloud of
    ``num_samples`` Gumbel-Softmax samples (the same Gumbel draws at every τ), their mean and the
    argmax frequencies; a select for the preset logits (label → 3 logits; default three π's) and a
    slider over ``temperatures``. The data are :func:`concrete_simplex_data`'s; the page only draws.
    """
    name = _check_name(name)
    numbers = concrete_simplex_data(presets, temperatures, num_samples=num_samples, seed=seed)
    taus = numbers["temperatures"]
    start = check_real(start_temperature, "start_temperature", positive=True)
    if start not in taus:
        raise ValueError(f"start_temperature must be one of temperatures {list(taus)}, got {start}")
    labels = list(_DEFAULT_PRESETS if presets is None else presets)
    level, samples = numbers["level"], numbers["samples"]
    num_p, num_t, height, width = level.shape
    xy = simplex_xy(samples) / np.array([1.0, HEIGHT])
    positions = np.rint(np.clip(xy, 0, 1) * 65535).astype("<u2")

    from matplotlib import colormaps
    from matplotlib.figure import Figure

    colormap = np.rint(colormaps["viridis"](np.linspace(0, 1, 255))[:, :3] * 255).astype(np.uint8)
    shown = [t for t in (0.2, 1.0, 3.0) if t in taus] or list(taus[:3])
    fig = Figure(figsize=(7.5, 2.7))
    axes = fig.subplots(1, len(shown))
    for ax, tau in zip(np.atleast_1d(axes), shown, strict=True):
        j = int(np.flatnonzero(taus == tau)[0])
        rgba = np.zeros((height, width, 4))
        inside = level[0, j] != 255
        rgba[inside, :3] = colormap[level[0, j][inside]] / 255.0
        rgba[inside, 3] = 1.0
        ax.imshow(rgba, extent=(0, 1, 0, HEIGHT), interpolation="bilinear")
        pts = simplex_xy(samples[0, j])
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="w", edgecolors="k", linewidths=0.2)
        mean = simplex_xy(numbers["mean"][0, j])
        ax.plot(*mean, "o", color="#d62728", ms=6)
        ax.set_title(f"{labels[0]}, τ = {tau:g}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    payload = {
        "labels": labels, "logits": [_check_three_logits(v) for v in (_DEFAULT_PRESETS if presets is None else presets).values()],
        "seed": int(seed), "temperatures": [float(t) for t in taus], "start_tau": int(np.flatnonzero(taus == start)[0]),
        "width": width, "height": height, "num_samples": int(num_samples), "triangle_height": HEIGHT,
        "level": _b64(level), "colormap": _b64(colormap), "positions": _b64(positions),
        "mean": numbers["mean"].reshape(num_p * num_t, 3).tolist(), "lo": numbers["lo"].reshape(-1).tolist(),
        "hi": numbers["hi"].reshape(-1).tolist(), "frequencies": numbers["frequencies"].tolist(),
        "pi": numbers["pi"].tolist(),
    }
    alt = "Concrete density on the triangle at three temperatures, with samples and their mean (static image)"
    return _page(name, "concrete-simplex", alt, _figure_png(fig), _SIMPLEX_LIVE, payload, _SIMPLEX_JS)


# --------------------------------------------------------------------------------------------------
# Chapter 7: inside the trained categorical VAE
# --------------------------------------------------------------------------------------------------

def _test_images(count: int | None = None, data_root: str | os.PathLike | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test images with the fixed binarization the shipped models were evaluated on, from
    ``data_root`` (see :func:`gstutorial.data.resolve_data_root`; a chapter passes its ``DATA_ROOT``)."""
    images, labels = load_mnist("test", data_root, binarize="fixed", seed=0)
    return (images, labels) if count is None else (images[:count], labels[:count])


def _check_indices(indices: object, limit: int) -> list[int]:
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or not indices:
        raise TypeError("digits must be a non-empty sequence of test-set indices")
    out = [check_int(i, "digits", 0) for i in indices]
    if max(out) >= limit:
        raise ValueError(f"digits must be test-set indices below {limit}, got {max(out)}")
    return out


@torch.no_grad()
def catvae_codes_data(model: CategoricalVAE, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """For each image: its mode code (``argmax`` of the encoder's logits per latent variable) and the
    decoded image of every single-variable change of it.

    Returns ``modes`` ``(B, N)`` int and ``decoded`` ``(B, N, K, 28, 28)`` uint8: entry ``[b, v, c]`` is
    ``round(255 · sigmoid(decode(z)))`` for the mode code of image b with variable v set to class c
    (``c = modes[b, v]`` gives the mode code's own image).
    """
    if not isinstance(model, CategoricalVAE):
        raise TypeError(f"model must be a CategoricalVAE, got {type(model).__name__}")
    model.eval()
    n, k = model.latent_dim, model.num_categories
    modes = model.encode(images).argmax(-1)
    codes = F.one_hot(modes, k).to(images.dtype)  # (B, N, K)
    z = codes[:, None, None].repeat(1, n, k, 1, 1)  # (B, N, K, N, K): [b, v, c] is the code to decode
    variable, cls = torch.meshgrid(torch.arange(n), torch.arange(k), indexing="ij")
    z[:, variable, cls, variable] = F.one_hot(cls, k).to(images.dtype)
    decoded = torch.sigmoid(model.decode(z.reshape(-1, n, k)))
    return modes.numpy(), _to_gray(decoded).reshape(images.shape[0], n, k, SIDE, SIDE)


_CODES_LIVE = """
<div class="gst-controls">
<span><label for="PFX-digit">test digit</label><select id="PFX-digit"></select></span>
</div>
<div style="display:flex; gap:1.5em; flex-wrap:wrap; align-items:flex-start">
<div><div>the test image</div><canvas class="gst-digit gst-input" width="28" height="28" aria-label="the test image"></canvas></div>
<div><div>its mode code, decoded</div><canvas class="gst-digit gst-mode-image" width="28" height="28" aria-label="decoded mode code"></canvas></div>
<div><div>the changed code, decoded</div><canvas class="gst-digit gst-changed" width="28" height="28" aria-label="decoded changed code"></canvas></div>
</div>
<p class="gst-readout" aria-live="polite"></p>
<table class="gst-grid" role="grid" aria-label="latent variables (rows) and their classes (columns)"></table>
"""

_CODES_CSS = """
#ID table.gst-grid { border-collapse: collapse; font-size: 0.8em; margin: 0; }
#ID table.gst-grid td, #ID table.gst-grid th { padding: 0 1px; border: none; }
#ID table.gst-grid button { width: 2.1em; padding: 0; font-size: 0.95em; border: 1px solid #bbb; background: #f6f6f6; }
#ID table.gst-grid button.gst-is-mode { border: 2px solid #333; font-weight: 700; }
#ID table.gst-grid button[aria-pressed="true"] { background: #1f77b4; color: #fff; }
"""

_CODES_JS = """
const N = data.latent_dim, K = data.num_categories, S = 28;
const select = byId('-digit');
data.digits.forEach((d, i) => { const o = document.createElement('option'); o.value = i;
  o.textContent = 'test image ' + d.index + ' (a ' + d.label + ')'; select.appendChild(o); });
const sprites = data.digits.map(d => { const im = new Image(); im.src = d.sprite; return im; });
const inputs = data.digits.map(d => { const im = new Image(); im.src = d.input; return im; });
const table = root.querySelector('table.gst-grid'), readout = root.querySelector('.gst-readout');
const head = document.createElement('tr'); head.appendChild(document.createElement('th'));
for (let c = 0; c < K; c++) { const th = document.createElement('th'); th.textContent = c; head.appendChild(th); }
table.appendChild(head);
const buttons = [];
for (let v = 0; v < N; v++) {
  const tr = document.createElement('tr'), th = document.createElement('th');
  th.textContent = 'z' + (v + 1); tr.appendChild(th); buttons.push([]);
  for (let c = 0; c < K; c++) {
    const td = document.createElement('td'), b = document.createElement('button');
    b.type = 'button'; b.textContent = c; b.dataset.variable = v; b.dataset.class = c;
    b.setAttribute('aria-label', 'latent variable ' + (v + 1) + ', class ' + c);
    b.addEventListener('click', () => { state.variable = v; state.cls = c; draw(); });
    td.appendChild(b); tr.appendChild(td); buttons[v].push(b);
  }
  table.appendChild(tr);
}
const state = {digit: 0, variable: 0, cls: data.digits[0].mode[0]};
select.addEventListener('change', () => { state.digit = parseInt(select.value);
  state.cls = data.digits[state.digit].mode[state.variable]; draw(); });
function paint(cls, image, sx, sy) { const c = root.querySelector('canvas.' + cls).getContext('2d');
  c.imageSmoothingEnabled = false; c.clearRect(0, 0, S, S); c.drawImage(image, sx, sy, S, S, 0, 0, S, S); }
function draw() {
  const d = data.digits[state.digit], sprite = sprites[state.digit];
  for (let v = 0; v < N; v++) for (let c = 0; c < K; c++) {
    const b = buttons[v][c];
    b.classList.toggle('gst-is-mode', d.mode[v] === c);
    b.setAttribute('aria-pressed', String(v === state.variable && c === state.cls));
  }
  const show = () => {
    paint('gst-input', inputs[state.digit], 0, 0);
    paint('gst-mode-image', sprite, d.mode[0] * S, 0);
    paint('gst-changed', sprite, state.cls * S, state.variable * S);
    root.dataset.digit = state.digit; root.dataset.variable = state.variable; root.dataset.class = state.cls;
    root.dataset.drawn = [state.digit, state.variable, state.cls].join(',');
  };
  if (sprite.complete && inputs[state.digit].complete) show();
  else { sprite.onload = show; inputs[state.digit].onload = show; }
  const same = d.mode[state.variable] === state.cls;
  readout.textContent = 'mode code: (' + d.mode.join(' ') + ')\\n' + (same ?
    'variable z' + (state.variable + 1) + ' at its mode class ' + state.cls + ': the changed code is the mode code' :
    'changed: variable z' + (state.variable + 1) + ' from class ' + d.mode[state.variable] + ' to class ' + state.cls);
}
draw();
"""


def catvae_codes_figure(weights: str = "catvae-20x10-gs", digits: Sequence[int] = (3, 2, 1, 18, 4, 8, 11, 0, 61, 7),
                        name: str = "catvae-codes", data_root: str | os.PathLike | None = None
                        ) -> InteractiveFigure:
    """Chapter 7: inside the trained categorical VAE (``pretrained(weights)``). A select picks one of
    the MNIST test images ``digits`` (indices into the fixed-binarized test set; the default is the
    first test image of each digit 0 to 9, in that order); a grid of buttons,
    one per latent variable (rows) and class (columns), sets that variable of the image's mode code to
    that class, and the page shows the decoded image. All ``N × K`` decoded images of each digit are
    precomputed (:func:`catvae_codes_data`) and shipped as one greyscale PNG sprite per digit.
    ``data_root`` is the MNIST root (a chapter passes its ``DATA_ROOT``).
    """
    name = _check_name(name)
    model, _ = pretrained(weights, device="cpu")
    if not isinstance(model, CategoricalVAE):
        raise ValueError(f"weights must name a categorical VAE, got {weights!r}")
    images, labels = _test_images(data_root=data_root)
    indices = _check_indices(digits, images.shape[0])
    modes, decoded = catvae_codes_data(model, images[indices])
    n, k = model.latent_dim, model.num_categories
    entries = []
    for b, index in enumerate(indices):
        sprite = decoded[b].transpose(0, 2, 1, 3).reshape(n * SIDE, k * SIDE)  # rows: variables, cols: classes
        entries.append({"index": index, "label": int(labels[index]), "mode": modes[b].tolist(),
                        "sprite": _png_uri(gray_png(sprite)),
                        "input": _png_uri(gray_png(_to_gray(images[index]).reshape(SIDE, SIDE)))})

    from matplotlib.figure import Figure

    changes = [(v, (modes[0, v] + 1 + s) % k) for s, v in enumerate(range(0, n, 4))]
    fig = Figure(figsize=(1.2 * (2 + len(changes)), 1.6))
    axes = fig.subplots(1, 2 + len(changes))
    axes[0].imshow(_to_gray(images[indices[0]]).reshape(SIDE, SIDE), cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("test image", fontsize=7)
    axes[1].imshow(decoded[0, 0, modes[0, 0]], cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("mode code", fontsize=7)
    for ax, (v, c) in zip(axes[2:], changes, strict=True):
        ax.imshow(decoded[0, v, c], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"z{v + 1} → {c}", fontsize=7)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    payload = {"latent_dim": n, "num_categories": k, "digits": entries}
    alt = "A test digit, its decoded mode code and decodings of single-variable changes (static image)"
    return _page(name, "catvae-codes", alt, _figure_png(fig), _CODES_LIVE, payload, _CODES_JS, _CODES_CSS)


# --------------------------------------------------------------------------------------------------
# Chapter 8: class and style in the convolutional Joint VAE
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def jointvae_style_data(model: JointVAE, dims: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """Decoded images on a grid: ``(K, V, V, 28, 28)`` uint8 (for two ``dims``), entry ``[k, a, b]``
    is ``round(255 · sigmoid(decode(z_cont, one_hot(k))))`` with ``z_cont`` zero except
    ``z_cont[dims[0]] = values[a]`` and ``z_cont[dims[1]] = values[b]``."""
    if not isinstance(model, JointVAE):
        raise TypeError(f"model must be a JointVAE, got {type(model).__name__}")
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) != 2:
        raise ValueError("dims must be two continuous latent indices")
    dims = [check_int(d, "dims", 0) for d in dims]
    if max(dims) >= model.continuous_dim or dims[0] == dims[1]:
        raise ValueError(f"dims must be two different indices below {model.continuous_dim}, got {dims}")
    grid = torch.tensor([check_real(v, "values") for v in values], dtype=torch.float32)
    model.eval()
    k, v = model.num_categories, grid.numel()
    z_cont = torch.zeros(k, v, v, model.continuous_dim)
    z_cont[..., dims[0]] = grid[None, :, None]
    z_cont[..., dims[1]] = grid[None, None, :]
    z_disc = F.one_hot(torch.arange(k), k).float()[:, None, None].expand(k, v, v, k)
    decoded = torch.sigmoid(model.decode(z_cont.reshape(-1, model.continuous_dim), z_disc.reshape(-1, k)))
    return _to_gray(decoded).reshape(k, v, v, SIDE, SIDE)


_STYLE_LIVE = """
<div class="gst-controls gst-classes" role="group" aria-label="discrete class"></div>
<div class="gst-controls">
<span><label for="PFX-s0" class="gst-s0-label"></label><input type="range" id="PFX-s0" min="0" step="1"><output id="PFX-s0-out"></output></span>
<span><label for="PFX-s1" class="gst-s1-label"></label><input type="range" id="PFX-s1" min="0" step="1"><output id="PFX-s1-out"></output></span>
</div>
<canvas class="gst-digit gst-decoded" width="28" height="28" aria-label="decoded digit"></canvas>
<p class="gst-readout" aria-live="polite"></p>
"""

_STYLE_JS = """
const K = data.num_categories, V = data.values.length, S = 28;
const sprite = new Image(); sprite.src = data.sprite;
const box = root.querySelector('.gst-classes'), readout = root.querySelector('.gst-readout');
const state = {cls: data.start_class, a: Math.floor(V / 2), b: Math.floor(V / 2)};
const buttons = [];
for (let k = 0; k < K; k++) {
  const b = document.createElement('button'); b.type = 'button'; b.dataset.class = k;
  b.textContent = 'class ' + k + ' (' + data.majority[k] + ')';
  b.setAttribute('aria-label', 'discrete class ' + k + ', mostly test digits ' + data.majority[k]);
  b.addEventListener('click', () => { state.cls = k; draw(); }); box.appendChild(b); buttons.push(b);
}
const sliders = [0, 1].map(s => byId('-s' + s));
sliders.forEach((s, i) => {
  root.querySelector('.gst-s' + i + '-label').textContent = 'z' + data.dims[i] + ' (KL ' + fmt(data.kl[i], 2) + ' nats)';
  s.max = V - 1; s.value = Math.floor(V / 2);
  s.addEventListener('input', () => { state[i ? 'b' : 'a'] = parseInt(s.value); draw(); });
});
function draw() {
  buttons.forEach((b, k) => b.setAttribute('aria-pressed', String(k === state.cls)));
  [state.a, state.b].forEach((j, i) => { const t = 'z' + data.dims[i] + ' = ' + data.values[j];
    byId('-s' + i + '-out').textContent = ' ' + data.values[j]; sliders[i].setAttribute('aria-valuetext', t); });
  const show = () => { const c = root.querySelector('canvas.gst-decoded').getContext('2d');
    c.imageSmoothingEnabled = false; c.clearRect(0, 0, S, S);
    c.drawImage(sprite, state.b * S, (state.cls * V + state.a) * S, S, S, 0, 0, S, S);
    root.dataset.drawn = [state.cls, state.a, state.b].join(','); };
  root.dataset.class = state.cls; root.dataset.values = data.values[state.a] + ',' + data.values[state.b];
  if (sprite.complete) show(); else sprite.onload = show;
  readout.textContent = 'class ' + state.cls + ' (mostly ' + data.majority[state.cls] + '), z' + data.dims[0] + ' = ' +
    data.values[state.a] + ', z' + data.dims[1] + ' = ' + data.values[state.b] + ', the other continuous latents 0';
}
draw();
"""


def jointvae_style_figure(weights: str = "jointvae-conv", values: Sequence[float] = tuple(np.linspace(-2, 2, 9)),
                          num_images: int = 2000, name: str = "jointvae-style",
                          data_root: str | os.PathLike | None = None) -> InteractiveFigure:
    """Chapter 8: class and style in a trained Joint VAE (``pretrained(weights)``). Buttons for the
    discrete classes (each labelled with the test digit it holds most often, over the first
    ``num_images`` test images), sliders over ``values`` for the two continuous latents with the
    largest KL (:func:`gstutorial.analysis.kl_per_dimension` on those images), the others at 0; the
    decoded digit for every class and pair of values is precomputed (:func:`jointvae_style_data`)
    and shipped as one greyscale PNG sprite. ``data_root`` is the MNIST root (a chapter passes its
    ``DATA_ROOT``).
    """
    name = _check_name(name)
    num_images = check_int(num_images, "num_images", 1)
    model, _ = pretrained(weights, device="cpu")
    if not isinstance(model, JointVAE):
        raise ValueError(f"weights must name a Joint VAE, got {weights!r}")
    model.eval()
    images, labels = _test_images(num_images, data_root)
    kl = kl_per_dimension(model, images)
    dims = [int(d) for d in torch.argsort(kl, descending=True)[:2]]
    clusters = predict_clusters(model, images)
    k = model.num_categories
    majority = []
    for c in range(k):
        held = labels[clusters == c]
        majority.append("digit " + str(int(torch.bincount(held, minlength=10).argmax())) if held.numel() else "no test digit")
    grid = [round(float(v), 6) for v in values]
    decoded = jointvae_style_data(model, dims, grid)
    v = len(grid)
    sprite = decoded.transpose(0, 1, 3, 2, 4).reshape(k * v * SIDE, v * SIDE)  # rows: class, a; cols: b

    from matplotlib.figure import Figure

    middle = v // 2
    fig = Figure(figsize=(0.7 * v, 0.7 * k))
    axes = fig.subplots(k, v)
    for c in range(k):
        for a in range(v):
            axes[c, a].imshow(decoded[c, a, middle], cmap="gray", vmin=0, vmax=255)
            axes[c, a].set_axis_off()
    fig.suptitle(f"rows: discrete class; columns: z{dims[0]} from {grid[0]:g} to {grid[-1]:g}", fontsize=8)
    payload = {"num_categories": k, "values": grid, "dims": dims, "kl": [float(kl[d]) for d in dims],
               "majority": majority, "start_class": 0, "sprite": _png_uri(gray_png(sprite))}
    alt = "Decoded digits of each discrete class as one continuous latent varies (static image)"
    return _page(name, "jointvae-style", alt, _figure_png(fig), _STYLE_LIVE, payload, _STYLE_JS)
