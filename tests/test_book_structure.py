"""The book's table of contents and notebooks: nothing missing, nothing unexecuted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "book").glob("*.ipynb"))
DEVICE_TAGS = {"nbval-check-output", "gpu-may-differ"}


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def resolve(entry: str) -> Path | None:
    for suffix in ("", ".md", ".ipynb"):
        candidate = REPO / f"{entry}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def test_there_are_notebooks():
    assert NOTEBOOKS, "book/ holds no notebooks"


def test_every_toc_entry_exists():
    missing = [entry for entry in toc_files() if resolve(entry) is None]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc():
    listed = {resolve(entry) for entry in toc_files()}
    absent = [nb.name for nb in NOTEBOOKS if nb not in listed]
    assert not absent, f"notebooks missing from _toc.yml: {absent}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_fully_executed_in_order(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were never executed; nbval would compare nothing"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not executed top to bottom in one run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_outputs_are_clean(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path.name}: code cell {i} stored an error"
            text = json.dumps(output)
            assert "Traceback" not in text, f"{path.name}: code cell {i} stored a traceback"
            for machine_path in ("/root/", "/tmp/", "/work/", "/home/"):
                assert machine_path not in text, f"{path.name}: cell {i} output holds a machine path"
            if output.get("name") == "stderr":
                pytest.fail(f"{path.name}: code cell {i} wrote to stderr (warnings or progress bars make nbval flaky)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_carries_no_execution_timestamps(path):
    """`make execute` writes none, so re-executing an unchanged chapter gives an empty diff."""
    nb = json.loads(path.read_text())
    stamped = [i for i, c in enumerate(nb["cells"]) if "execution" in c.get("metadata", {})]
    assert not stamped, (f"{path.name}: cells {stamped} carry execution timestamps (from `jupyter execute`); "
                         "re-execute with `make execute NB=...`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_declares_its_gpu_behaviour(path):
    """On GPU runners nbval runs in lax mode and compares only cells tagged `nbval-check-output`.

    Each code cell must say which it is: `nbval-check-output` (its output does not depend on the
    device) or `gpu-may-differ` (it may legitimately print different numbers on a GPU).
    """
    nb = json.loads(path.read_text())
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        tags = set(cell.get("metadata", {}).get("tags", []))
        assert len(tags & DEVICE_TAGS) == 1, f"{path.name}: code cell {i} needs exactly one of {sorted(DEVICE_TAGS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_the_package_kernel(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    source = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "gstutorial" in source, f"{path.name} does not import the gstutorial package"


def test_shipped_weights_stay_under_15_mib():
    """The trained weights the package ships (fp16 exports) together under 15 MiB: the wheel stays small."""
    checkpoints = sorted((REPO / "gstutorial" / "weights").glob("*.pt"))
    assert len(checkpoints) >= 4
    total = sum(p.stat().st_size for p in checkpoints)
    assert total < 15 * 2**20, f"{total / 2**20:.1f} MiB in {[p.name for p in checkpoints]}"


# --------------------------------------------------------------------------------------------------
# The presentation convention (CONTRIBUTING.md, "What a reader sees")
# --------------------------------------------------------------------------------------------------

#: Tags that fold or remove a cell's code on the rendered page (its output still shows unless removed).
FOLDED = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
#: Chapters still being rewritten under the convention by their own issue (and why they are exempt).
CONVENTION_EXCEPTIONS: dict[str, str] = {}
MAX_VISIBLE_ASSERTS = 5
MAX_VISIBLE_PLOT_LINES = 10
MACHINERY = re.compile(r"\bassert(?:s|ed|ion|ions)?\b|\bnbval\b|\bCI\b|continuous integration|results file"
                       r"|\bthreads?\b|CPU[- ]hours?|next cell (?:checks|asserts)", re.I)
CHAPTERS = [nb for nb in NOTEBOOKS if nb.name[:2].isdigit() or nb.name.startswith("appendix_")]  # chapters and appendices


def _visible_code(cell: dict) -> list[str]:
    tags = set(cell.get("metadata", {}).get("tags", []))
    return [] if tags & FOLDED else "".join(cell["source"]).splitlines()


def _reader_sees_output(cell: dict) -> bool:
    return not set(cell.get("metadata", {}).get("tags", [])) & {"remove-cell", "remove-output"}


def _prose(markdown: str) -> str:
    """The prose of a markdown cell: fenced code blocks and inline code left out (a command's
    ``--threads`` option is code, not talk about the machinery)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", markdown, flags=re.S))


def _convention_applies(path: Path) -> None:
    if path.name in CONVENTION_EXCEPTIONS:
        pytest.skip(f"{path.name}: {CONVENTION_EXCEPTIONS[path.name]}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_shows_few_asserts(path):
    _convention_applies(path)
    cells = json.loads(path.read_text())["cells"]
    visible = [line for c in cells if c["cell_type"] == "code" for line in _visible_code(c)
               if re.match(r"\s*assert\b", line)]
    assert len(visible) <= MAX_VISIBLE_ASSERTS, (
        f"{path.name}: {len(visible)} visible assert lines; fold the check (hide-input) or move the "
        "assertion to a remove-cell cell or to tests/")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_prose_speaks_of_the_subject_only(path):
    _convention_applies(path)
    cells = json.loads(path.read_text())["cells"]
    found = sorted({m.group(0) for c in cells if c["cell_type"] == "markdown"
                    for m in MACHINERY.finditer(_prose("".join(c["source"])))})
    assert found == [], f"{path.name}: the prose talks about the book's machinery: {found}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_check_prints_a_bare_true(path):
    _convention_applies(path)
    cells = json.loads(path.read_text())["cells"]
    bare = [line for c in cells if c["cell_type"] == "code" and _reader_sees_output(c)
            for o in c.get("outputs", []) if o.get("output_type") == "stream"
            for line in "".join(o["text"]).splitlines() if re.search(r":\s*(True|False)\s*$", line)]
    assert bare == [], f"{path.name}: outputs a reader sees end in a bare True/False: {bare[:3]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_long_plotting_code_is_folded(path):
    _convention_applies(path)
    cells = json.loads(path.read_text())["cells"]
    long_plots = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
                  and len(lines := _visible_code(c)) > MAX_VISIBLE_PLOT_LINES
                  and any(re.search(r"\b(plt|ax|axes|fig)\.", line) for line in lines)]
    assert long_plots == [], (f"{path.name}: cells {long_plots} show more than {MAX_VISIBLE_PLOT_LINES} lines of "
                              "plotting code; fold them (hide-input) or call a plotting helper")


def test_the_convention_scan_sees_folded_and_visible_asserts():
    visible = {"cell_type": "code", "metadata": {"tags": ["nbval-check-output"]}, "source": ["assert x\n"]}
    folded = {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": ["assert x\n"]}
    assert _visible_code(visible) == ["assert x"] and _visible_code(folded) == []
    assert MACHINERY.search("as the CI checks") and not MACHINERY.search("a circle")
    assert _prose("run `make --threads 1`:\n```bash\npython --threads 2\n```\nthreads") == "run :\n\nthreads"
