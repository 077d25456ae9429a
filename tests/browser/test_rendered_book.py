"""The built book as a reader sees it, in headless Chromium, opened from disk with no network.

Needs the built HTML (`make book`) and Debian's `chromium` + `chromium-driver`; run with
`make test-browser`. For every page in `_toc.yml` it checks that the equations are typeset by the
locally served MathJax, every image loads, every internal link and equation reference resolves,
and the console shows no errors; it saves a full-page screenshot of each page under
`_build/screenshots/` for review. For each interactive figure (`gstutorial.interactive`, chapters 4, 5,
7 and 8) it moves every slider and menu and several buttons, from the keyboard or the mouse, checks that the page draws what the
package computes, that the controls are labelled and that the static image shows in print and without
the script, and saves screenshots before and after under `_build/screenshots/interactive/`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

selenium = pytest.importorskip("selenium", reason="selenium is part of the dev extra")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def toc_pages() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [c["file"] for c in part.get("chapters", [])]
    return pages


PAGES = toc_pages()


@pytest.fixture(scope="module")
def driver():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} has no built book; run `make book` first")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} not found; install Debian's chromium and chromium-driver")
    profile = tempfile.mkdtemp(prefix="gstutorial-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--allow-file-access-from-files", "--window-size=1280,1400",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_script_timeout(90)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


@cache
def ids_in(page: Path) -> frozenset[str]:
    return frozenset(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


#: Console errors that are not defects of a page: pydata-sphinx-theme logs this once in a fresh browser
#: profile, whose stored light/dark mode is still empty, and then uses "auto".
BENIGN_CONSOLE_ERRORS = ("Got invalid theme mode: . Resetting to auto.",)


def open_page(driver, page: str) -> Path:
    path = HTML / f"{page}.html"
    assert path.is_file(), f"{page}.html was not built"
    driver.get_log("browser")  # drop what earlier pages logged; this page's messages are read after load
    driver.get(path.as_uri())
    return path


def wait_for_mathjax(driver) -> bool:
    """Wait until MathJax has typeset the page; return whether the page loads MathJax at all."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        (function poll() {
          const mj = window.MathJax;
          if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(() => done(true)); return; }
          // no MathJax script once the page is complete, or none typeset after a minute (a loaded CI machine)
          const noScript = document.readyState === 'complete' && !document.querySelector('script[src*="mathjax"]');
          if (noScript || Date.now() - start > 60000) { done(false); return; }
          setTimeout(poll, 50);
        })();
        """
    )


def save_full_screenshot(driver, page: str) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 800), 12000))
    target = SHOTS / f"{page.replace('/', '_')}.png"
    driver.save_screenshot(str(target))
    driver.set_window_size(1280, 1400)
    return target


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(driver, page):
    path = open_page(driver, page)
    source = path.read_text(encoding="utf-8")
    has_math = "class=\"math" in source or "\\(" in source
    loaded = wait_for_mathjax(driver)

    if has_math:
        assert loaded, f"{page}: the page has math but MathJax did not load"
        script = driver.find_element(By.CSS_SELECTOR, 'script[src*="mathjax"]').get_attribute("src")
        assert script.startswith("file://"), f"{page}: MathJax must be served locally, not from {script}"
        typeset = driver.find_elements(By.CSS_SELECTOR, "mjx-container")
        assert typeset, f"{page}: no MathJax output elements"
        errors = driver.find_elements(By.CSS_SELECTOR, "mjx-merror")
        assert not errors, f"{page}: MathJax reports TeX errors: {[e.text for e in errors[:3]]}"
    text = driver.find_element(By.CSS_SELECTOR, "article, main, body").text
    assert "$$" not in text, f"{page}: raw $$ left in the rendered text"
    assert "\\begin{" not in text, f"{page}: raw LaTeX environment left in the rendered text"

    broken_images = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")
    assert not broken_images, f"{page}: images that did not load: {broken_images}"

    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
    for href in hrefs:
        url = urlparse(href)
        if url.scheme != "file":
            continue
        target = Path(unquote(url.path))
        assert target.exists(), f"{page}: broken internal link {href}"
        if url.fragment and target.suffix == ".html":
            assert unquote(url.fragment) in ids_in(target), f"{page}: broken anchor {href}"

    severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and not any(benign in entry["message"] for benign in BENIGN_CONSOLE_ERRORS)]
    assert not severe, f"{page}: JavaScript console errors: {severe}"
    assert save_full_screenshot(driver, page).stat().st_size > 10_000


def test_equation_references_resolve_to_numbered_equations():
    """Every {eq} reference, within a page or across chapters, lands on an equation with a number."""
    numbered: dict[str, str] = {}
    for page in PAGES:
        html = (HTML / f"{page}.html").read_text(encoding="utf-8")
        for label, number in re.findall(r'id="(equation-[^"]+)">\s*<span class="eqno">\((\d+(?:\.\d+)*)\)', html):
            numbered[f"{page}.html#{label}"] = number
    checked = 0
    for page in PAGES:
        path = HTML / f"{page}.html"
        for href in set(re.findall(r'href="([^"]*#equation-[^"]+)"', path.read_text(encoding="utf-8"))):
            target_file, fragment = href.split("#")
            target = (path.parent / target_file).resolve() if target_file else path
            key = f"{target.relative_to(HTML).with_suffix('')}.html#{fragment}"
            assert key in numbered, f"{page}: equation reference {href} does not reach a numbered equation"
            checked += 1
    assert checked > 0 and numbered, "no numbered equations or equation references found in the book"


def test_search_finds_a_chapter(driver):
    driver.get((HTML / "search.html").as_uri() + "?q=divergence")
    found = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        (function poll() {
          const hits = document.querySelectorAll('#search-results li');
          if (hits.length > 0 || Date.now() - start > 20000) { done(hits.length); return; }
          setTimeout(poll, 100);
        })();
        """
    )
    assert found > 0, "the search page returned no result for 'divergence'"


NOTEBOOK_PAGES = [p for p in PAGES if (REPO / f"{p}.ipynb").is_file()]


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_chapter_offers_downloads_launch_buttons_and_source_link(page):
    html = (HTML / f"{page}.html").read_text(encoding="utf-8")
    name = Path(page).name
    for suffix in (".ipynb", ".md"):
        match = re.search(rf'href="([^"]*_sources/{re.escape(page)}{re.escape(suffix)})"', html)
        assert match, f"{page}: no {suffix} download entry"
        assert (HTML / f"{page}.html").parent.joinpath(match.group(1)).resolve().is_file()
    assert f"mybinder.org/v2/gh/gstutorial/gstutorial/main?urlpath=tree/book/{name}.ipynb" in html
    assert f"colab.research.google.com/github/gstutorial/gstutorial/blob/main/book/{name}.ipynb" in html
    assert 'href="https://github.com/gstutorial/gstutorial"' in html
    assert 'rel="icon"' in html, f"{page}: no favicon"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_printed_lines_of_a_cell_render_as_one_block(page):
    """A cell that prints in a loop stores one stream output per print; `nb_merge_streams` (in
    `_config.yml`) renders them as one block instead of a stack of separate boxes."""
    html = (HTML / f"{page}.html").read_text(encoding="utf-8")
    assert 'class="output stream' in html, f"{page}: no printed output found"
    split = re.findall(r'</pre></div>\s*</div>\s*<div class="output stream', html)
    assert not split, f"{page}: {len(split)} printed outputs rendered as separate blocks"


# --------------------------------------------------------------------------------------------------
# Interactive figures (gstutorial.interactive): the page draws what the package computed
# --------------------------------------------------------------------------------------------------

INTERACTIVE_SHOTS = SHOTS / "interactive"


def open_figure(driver, page: str, figure_id: str):
    """Open ``page`` and return the figure's root element once its script has run."""
    open_page(driver, page)
    WebDriverWait(driver, 30).until(
        lambda d: "gst-ready" in (d.find_element(By.ID, figure_id).get_attribute("class") or ""))
    root = driver.find_element(By.ID, figure_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", root)
    return root


def figure_payload(root) -> dict:
    return json.loads(root.find_element(By.CSS_SELECTOR, "script.gst-payload").get_attribute("textContent"))


def figure_shot(root, name: str) -> Path:
    INTERACTIVE_SHOTS.mkdir(parents=True, exist_ok=True)
    target = INTERACTIVE_SHOTS / f"{name}.png"
    root.screenshot(str(target))
    assert target.stat().st_size > 5_000, f"{target} is nearly empty"
    return target


def floats(root, attribute: str) -> list[float]:
    return [float(v) for v in root.get_attribute(attribute).split(",")]


def wait_for(root, attribute: str, value: str) -> None:
    WebDriverWait(root.parent, 20).until(lambda d: root.get_attribute(attribute) == value,
                                         f"{attribute} never became {value!r}")


def canvas_gray(driver, root, selector: str) -> np.ndarray:
    """The red channel of a 28 x 28 canvas of the figure (the digits are drawn grey)."""
    pixels = driver.execute_script(
        "const c = arguments[0].querySelector(arguments[1]);"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", root, selector)
    return np.array(pixels, dtype=np.int64).reshape(28, 28, 4)[..., 0]


def check_controls_and_fallback(driver, root) -> None:
    """Every control is labelled and keyboard-reachable; the static image stands in for print and no-JS."""
    controls = root.find_elements(By.CSS_SELECTOR, ".gst-live input, .gst-live select, .gst-live button")
    assert controls, "the figure has no controls"
    for control in controls:
        control_id = control.get_attribute("id")
        labelled = control.get_attribute("aria-label") or (
            control_id and root.find_elements(By.CSS_SELECTOR, f'label[for="{control_id}"]'))
        assert labelled, f"control {control.get_attribute('outerHTML')[:80]} has no label"
        assert int(control.get_attribute("tabIndex")) >= 0, "a control is not reachable by keyboard"
    fallback = root.find_element(By.CSS_SELECTOR, "img.gst-fallback")
    live = root.find_element(By.CSS_SELECTOR, ".gst-live")
    assert live.is_displayed() and not fallback.is_displayed()
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", fallback)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert fallback.is_displayed() and not live.is_displayed(), "print does not show the static image"
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    driver.execute_script("arguments[0].classList.remove('gst-ready')", root)  # as before the script ran
    assert fallback.is_displayed() and not live.is_displayed(), "without its script the figure shows no image"
    driver.execute_script("arguments[0].classList.add('gst-ready')", root)


def no_console_errors(driver, page: str) -> None:
    severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and not any(benign in entry["message"] for benign in BENIGN_CONSOLE_ERRORS)]
    assert not severe, f"{page}: JavaScript console errors: {severe}"


def test_interactive_gumbel_max_race(driver):
    """Chapter 4: the page's softmax and argmax counts for each slider setting are the package's."""
    import torch

    from gstutorial import gumbel

    root = open_figure(driver, "book/04_gumbel_max", "gst-gumbel-max-race")
    data = figure_payload(root)
    n, seed = data["num_draws"], data["seed"]

    def check(expected_logits):
        WebDriverWait(driver, 20).until(
            lambda d: np.allclose(floats(root, "data-logits"), expected_logits, rtol=0, atol=1e-9),
            f"the sliders never showed the logits {expected_logits}")
        x = floats(root, "data-logits")
        xt = torch.tensor(x, dtype=torch.float64)
        assert floats(root, "data-softmax") == pytest.approx(torch.softmax(xt, -1).tolist(), abs=1e-12)
        winners = gumbel.gumbel_max(xt.expand(n, 3), generator=torch.Generator().manual_seed(seed))
        counts = torch.bincount(winners, minlength=3).tolist()
        assert [int(c) for c in floats(root, "data-counts")] == counts
        drawn = [float(r.get_attribute("data-frequency")) for r in root.find_elements(By.CSS_SELECTOR, "rect[data-frequency]")]
        assert drawn == pytest.approx([c / n for c in counts], abs=1e-15)
        return counts

    check(data["logits"])
    figure_shot(root, "gumbel-max-race-before")
    sliders = [driver.find_element(By.ID, f"gst-gumbel-max-race-x{k}") for k in range(3)]
    expected = list(data["logits"])
    seen = {tuple(check(expected))}
    for k, keys, value in ((0, [Keys.ARROW_LEFT] * 15, expected[0] - 1.5), (1, [Keys.ARROW_RIGHT] * 12, expected[1] + 1.2),
                           (2, [Keys.END], 3.0)):
        sliders[k].send_keys(*keys)
        expected[k] = value
        seen.add(tuple(check(expected)))
    assert len(seen) == 4, "moving a slider did not change the counts"
    figure_shot(root, "gumbel-max-race-after")
    check_controls_and_fallback(driver, root)
    no_console_errors(driver, "book/04_gumbel_max")


def test_interactive_concrete_simplex(driver):
    """Chapter 5: heat map, samples, mean and frequencies for each preset and temperature are the package's."""
    from gstutorial import interactive

    root = open_figure(driver, "book/05_gumbel_softmax", "gst-concrete-simplex")
    data = figure_payload(root)
    numbers = interactive.concrete_simplex_data(dict(zip(data["labels"], data["logits"], strict=True)),
                                                data["temperatures"], width=data["width"],
                                                num_samples=data["num_samples"], seed=data["seed"])
    colormap = np.frombuffer(bytes(bytearray(driver.execute_script(
        "return Array.from(atob(arguments[0]), c => c.charCodeAt(0));", data["colormap"]))), np.uint8).reshape(-1, 3)
    h = data["triangle_height"]

    def check(preset, tau_index):
        assert int(root.get_attribute("data-preset")) == preset
        assert float(root.get_attribute("data-tau")) == data["temperatures"][tau_index]
        assert floats(root, "data-mean") == pytest.approx(numbers["mean"][preset, tau_index].tolist(), abs=1e-9)
        assert floats(root, "data-frequencies") == pytest.approx(numbers["frequencies"][preset].tolist(), abs=1e-12)
        circles = driver.execute_script(
            "return Array.from(arguments[0].querySelectorAll('g.gst-samples circle'),"
            " c => [parseFloat(c.getAttribute('cx')), parseFloat(c.getAttribute('cy'))]);", root)
        xy = interactive.simplex_xy(numbers["samples"][preset, tau_index])
        assert np.abs(np.array(circles) - np.stack([xy[:, 0], h - xy[:, 1]], -1)).max() < 3e-5
        pixels = np.array(driver.execute_script(
            "const c = arguments[0].querySelector('canvas.gst-heat');"
            "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", root),
            dtype=np.int64).reshape(data["height"], data["width"], 4)
        level = numbers["level"][preset, tau_index]
        inside = level != 255
        assert (pixels[~inside, 3] == 0).all() and (pixels[inside, 3] == 255).all()
        difference = np.abs(pixels[inside, :3] - colormap[level[inside]]).max(-1)
        assert (difference == 0).mean() > 0.99 and difference.max() <= 8  # a level may round the other way
        return root.find_element(By.CSS_SELECTOR, "svg.gst-simplex image").get_attribute("href")

    start = data["start_tau"]
    images = {check(0, start)}
    figure_shot(root, "concrete-simplex-before")
    slider = driver.find_element(By.ID, "gst-concrete-simplex-tau")
    slider.send_keys(*[Keys.ARROW_LEFT] * 3)
    wait_for(root, "data-tau", str(data["temperatures"][start - 3]).removesuffix(".0"))
    images.add(check(0, start - 3))
    select = driver.find_element(By.ID, "gst-concrete-simplex-preset")
    select.send_keys(Keys.ARROW_DOWN)
    wait_for(root, "data-preset", "1")
    images.add(check(1, start - 3))
    slider.send_keys(Keys.END)
    wait_for(root, "data-tau", str(data["temperatures"][-1]).removesuffix(".0"))
    images.add(check(1, len(data["temperatures"]) - 1))
    assert len(images) == 4, "the heat map did not change with the controls"
    figure_shot(root, "concrete-simplex-after")
    check_controls_and_fallback(driver, root)
    no_console_errors(driver, "book/05_gumbel_softmax")


@cache
def _test_images():
    from gstutorial.data import load_mnist

    return load_mnist("test", binarize="fixed", seed=0)[0]


def test_interactive_catvae_codes(driver):
    """Chapter 7 (the cell `interactive.catvae_codes_figure()`): the decoded image for each code is the package's."""
    import torch

    from gstutorial import interactive
    from gstutorial.checkpoints import pretrained

    root = open_figure(driver, "book/07_categorical_vae", "gst-catvae-codes")
    data = figure_payload(root)
    model, _ = pretrained("catvae-20x10-gs", device="cpu")
    images = _test_images()
    computed = {}

    def check(digit, variable, cls):
        wait_for(root, "data-drawn", f"{digit},{variable},{cls}")
        index = data["digits"][digit]["index"]
        if index not in computed:
            computed[index] = interactive.catvae_codes_data(model, images[[index]])
        modes, decoded = computed[index]
        assert data["digits"][digit]["mode"] == modes[0].tolist()
        assert np.abs(canvas_gray(driver, root, "canvas.gst-changed") - decoded[0, variable, cls]).max() <= 1
        assert np.abs(canvas_gray(driver, root, "canvas.gst-mode-image") - decoded[0, 0, modes[0, 0]]).max() <= 1
        assert np.array_equal(canvas_gray(driver, root, "canvas.gst-input"),
                              torch.round(images[index] * 255).numpy().astype(np.int64).reshape(28, 28))
        return canvas_gray(driver, root, "canvas.gst-changed").tobytes()

    drawn = {check(0, 0, data["digits"][0]["mode"][0])}
    figure_shot(root, "catvae-codes-before")
    driver.find_element(By.ID, "gst-catvae-codes-digit").send_keys(Keys.ARROW_DOWN)  # the next test digit
    mode = data["digits"][1]["mode"]
    drawn.add(check(1, 0, mode[0]))
    button = root.find_element(By.CSS_SELECTOR, f'button[data-variable="5"][data-class="{(mode[5] + 3) % 10}"]')
    button.send_keys(Keys.ENTER)  # keyboard
    drawn.add(check(1, 5, (mode[5] + 3) % 10))
    assert button.get_attribute("aria-pressed") == "true"
    root.find_element(By.CSS_SELECTOR, f'button[data-variable="12"][data-class="{(mode[12] + 1) % 10}"]').click()
    drawn.add(check(1, 12, (mode[12] + 1) % 10))
    assert len(drawn) == 4, "the decoded image did not change with the controls"
    figure_shot(root, "catvae-codes-after")
    check_controls_and_fallback(driver, root)
    no_console_errors(driver, "book/07_categorical_vae")


def test_interactive_jointvae_style(driver):
    """Chapter 8 (the cell `interactive.jointvae_style_figure()`): the decoded digit for each class and slider
    setting is the package's."""
    from gstutorial import interactive
    from gstutorial.checkpoints import pretrained

    root = open_figure(driver, "book/08_joint_vae", "gst-jointvae-style")
    data = figure_payload(root)
    grid = interactive.jointvae_style_data(pretrained("jointvae-conv", device="cpu")[0], data["dims"], data["values"])
    middle = len(data["values"]) // 2

    def check(cls, a, b):
        wait_for(root, "data-drawn", f"{cls},{a},{b}")
        assert np.abs(canvas_gray(driver, root, "canvas.gst-decoded") - grid[cls, a, b]).max() <= 1
        return canvas_gray(driver, root, "canvas.gst-decoded").tobytes()

    drawn = {check(data["start_class"], middle, middle)}
    figure_shot(root, "jointvae-style-before")
    root.find_element(By.CSS_SELECTOR, 'button[data-class="3"]').send_keys(Keys.ENTER)
    drawn.add(check(3, middle, middle))
    driver.find_element(By.ID, "gst-jointvae-style-s0").send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    drawn.add(check(3, middle + 2, middle))
    driver.find_element(By.ID, "gst-jointvae-style-s1").send_keys(Keys.HOME)
    drawn.add(check(3, middle + 2, 0))
    root.find_element(By.CSS_SELECTOR, 'button[data-class="7"]').click()
    drawn.add(check(7, middle + 2, 0))
    assert len(drawn) == 5, "the decoded digit did not change with the controls"
    figure_shot(root, "jointvae-style-after")
    check_controls_and_fallback(driver, root)
    no_console_errors(driver, "book/08_joint_vae")
