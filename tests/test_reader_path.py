"""A reader's path outside the repository (Colab, a downloaded chapter): chapter 8 copied alone into an
empty folder and run top to bottom in a fresh environment where gstutorial is not installed. Its first
cell, the setup cell of tools/setup_cell.py, must install the package (here from the wheel of this
checkout, ``$GSTUTORIAL_WHEEL``, with ``pip --no-deps``: no network); the chapter then loads the
weights and recorded results the wheel ships and prints what it prints in the repository.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
CHAPTER = REPO / "book" / "08_joint_vae.ipynb"  # trained weights, recorded results and MNIST: all three
spec = importlib.util.spec_from_file_location("setup_cell", REPO / "tools" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)


def kernel_for(python: Path, folder: Path) -> str:
    """A kernel spec, under ``folder``/kernels, that runs ``python``; return its name."""
    name = "gstutorial-reader"
    spec_dir = folder / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "reader", "language": "python"}))
    return name


def outputs(cell: nbformat.NotebookNode, stream: str = "stdout") -> str:
    return "".join(out.get("text", "") for out in cell.outputs
                   if out.output_type == "stream" and out.name == stream)


def printed(cell: nbformat.NotebookNode) -> str:
    """What a code cell printed and displayed as text (stdout and text/plain), as nbval compares it."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            if "image/png" not in out.data:  # a figure's text is its repr, with a memory address
                parts.append(out.data["text/plain"])
    return "".join(parts)


@pytest.mark.slow  # builds the wheel, makes an environment, runs a chapter in its own kernel
def test_a_chapter_alone_installs_the_package_and_runs_top_to_bottom(
        dist, reader_venv, reader_environ, mnist_root, tmp_path, monkeypatch):
    python = reader_venv("venv")
    folder = tmp_path / "reader"
    folder.mkdir()
    probe = subprocess.run([str(python), "-c", "import gstutorial"], cwd=folder, env=reader_environ,
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "No module named 'gstutorial'" in probe.stderr  # the cell must install it

    committed = nbformat.read(CHAPTER, as_version=4)
    notebook = nbformat.read(CHAPTER, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, folder / CHAPTER.name)
    for name, value in {**reader_environ, "GSTUTORIAL_WHEEL": str(dist["wheel"]),
                        # MNIST from this checkout's copy (absolute: used as is), so nothing is downloaded
                        "GSTUTORIAL_DATA": str(mnist_root), "GSTUTORIAL_NO_PROGRESS": "1",
                        "JUPYTER_PATH": str(tmp_path / "jupyter")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    kernel = kernel_for(python, tmp_path / "jupyter")
    NotebookClient(notebook, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(folder)}}).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    setup = code[0]
    assert setup.id == setup_cell.CELL_ID and "remove-cell" in setup.metadata.tags
    assert outputs(setup) == f"installing gstutorial from {dist['wheel']}\ninstalled gstutorial 0.1.0\n"
    assert "MNIST" not in outputs(setup, "stderr")  # found where GSTUTORIAL_DATA says: nothing fetched
    where = subprocess.run([str(python), "-c", "import gstutorial; print(gstutorial.__file__)"], cwd=folder,
                           env=reader_environ, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(python.parent.parent), f"the chapter imported gstutorial from {where}"
    # every cell prints what it prints in the repository
    committed_code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert len(committed_code) == len(code)
    differing = [i for i, (ours, theirs) in enumerate(zip(code, committed_code, strict=True))
                 if i and printed(ours) != printed(theirs)]
    assert differing == [], f"cells {differing} print otherwise than in the repository"
