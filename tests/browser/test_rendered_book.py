"""The built book as a reader sees it, in headless Chromium, opened from disk with no network.

Needs the built HTML (`make book`) and Debian's `chromium` + `chromium-driver`; run with
`make test-browser`. For every page in `_toc.yml` it checks that the equations are typeset by the
locally served MathJax, every image loads, every internal link and equation reference resolves,
and the console shows no errors; it saves a full-page screenshot of each page under
`_build/screenshots/` for review.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

selenium = pytest.importorskip("selenium", reason="selenium is part of the dev extra")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

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
