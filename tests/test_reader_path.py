"""A reader's path outside the repository (Colab, a downloaded chapter): a notebook alone in an empty
folder, run top to bottom in a fresh environment where gstutorial is not installed. Its first cell, the
setup cell of tools/setup_cell.py, must install the package (here from the wheel of this checkout,
``$GSTUTORIAL_WHEEL``, with ``pip --no-deps``: no network), after which the chapter's code loads the
shipped weights and recorded results and computes the same numbers as in the repository.

Until the chapters are switched to ``pretrained``/``recorded_results``, the notebook is a stand-in
generated here, with a chapter-8-like computation; it then becomes a copy of a real chapter.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from gstutorial import analysis
from gstutorial.checkpoints import pretrained
from gstutorial.data import load_mnist
from gstutorial.resources import recorded_results

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("setup_cell", REPO / "tools" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)

IMAGES = 500  # test images the stand-in scores (a few seconds)

CHAPTER_CELLS = [
    """\
import json
from pathlib import Path

import torch

import gstutorial
from gstutorial import analysis
from gstutorial.checkpoints import pretrained
from gstutorial.data import load_mnist
from gstutorial.resources import recorded_results
from gstutorial.runtime import chapter_settings, set_seed

set_seed(0)
DATA_ROOT, RETRAIN, SMOKE_TEST = chapter_settings()
print(json.dumps({"package": str(Path(gstutorial.__file__).resolve()), "data_root": str(DATA_ROOT)}))""",
    f"""\
model, meta = pretrained("jointvae-conv", device="cpu", dtype=torch.float64)
test_x, test_y = load_mnist("test", DATA_ROOT, binarize="fixed", seed=0, dtype=torch.float64, download=False)
scored = analysis.cluster_accuracy(analysis.predict_clusters(model, test_x[:{IMAGES}]), test_y[:{IMAGES}], 10, 10)
bench = recorded_results("jointvae")
print(json.dumps({{"accuracy": scored.accuracy, "epochs": meta["history"][-1]["epoch"],
                  "recorded_mean": bench["cluster_accuracy_mean"]}}))""",
]


def stand_in_chapter() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# A chapter, alone"),
                      *(nbformat.v4.new_code_cell(source, metadata={"tags": ["nbval-check-output"]})
                        for source in CHAPTER_CELLS)]
    assert setup_cell.insert_setup_cell(notebook)  # the MNIST variant: the chapter calls load_mnist
    return notebook


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


@pytest.mark.slow  # builds the wheel, makes an environment, runs a notebook in its own kernel
def test_a_chapter_alone_installs_the_package_and_runs_top_to_bottom(
        dist, reader_venv, reader_environ, mnist_root, tmp_path, monkeypatch):
    python = reader_venv("venv")
    folder = tmp_path / "reader"
    folder.mkdir()
    probe = subprocess.run([str(python), "-c", "import gstutorial"], cwd=folder, env=reader_environ,
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "No module named 'gstutorial'" in probe.stderr  # the cell must install it

    notebook = stand_in_chapter()
    nbformat.write(notebook, folder / "chapter.ipynb")
    for name, value in {**reader_environ, "GSTUTORIAL_WHEEL": str(dist["wheel"]),
                        # MNIST from this checkout's copy (absolute: used as is), so nothing is downloaded
                        "GSTUTORIAL_DATA": str(mnist_root), "GSTUTORIAL_NO_PROGRESS": "1",
                        "JUPYTER_PATH": str(tmp_path / "jupyter")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    kernel = kernel_for(python, tmp_path / "jupyter")
    NotebookClient(notebook, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(folder)}}).execute()

    setup, where, numbers = (cell for cell in notebook.cells if cell.cell_type == "code")
    assert setup.id == setup_cell.CELL_ID and "remove-cell" in setup.metadata.tags
    assert outputs(setup) == f"installing gstutorial from {dist['wheel']}\ninstalled gstutorial 0.1.0\n"
    assert "MNIST" not in outputs(setup, "stderr")  # found where GSTUTORIAL_DATA says: nothing fetched
    where = json.loads(outputs(where))
    assert Path(where["package"]).is_relative_to(python.parent.parent), f"imported from {where['package']}"
    assert where["data_root"] == str(mnist_root)

    # the same numbers as the repository's package computes from the same files
    model, _ = pretrained("jointvae-conv", device="cpu", dtype=torch.float64)
    test_x, test_y = load_mnist("test", mnist_root, binarize="fixed", seed=0, dtype=torch.float64, download=False)
    expected = analysis.cluster_accuracy(analysis.predict_clusters(model, test_x[:IMAGES]), test_y[:IMAGES], 10, 10)
    assert json.loads(outputs(numbers)) == {"accuracy": expected.accuracy, "epochs": 150,
                                            "recorded_mean": recorded_results("jointvae")["cluster_accuracy_mean"]}
