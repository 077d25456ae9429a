"""The first code cell of each chapter: it makes a chapter run where a reader opens it on its own.

Inside the book's repository (``make book``, ``make test``, Binder) gstutorial is installed and the
cell does nothing and prints nothing, so nbval's stored outputs stay empty. Anywhere else (Colab, a
chapter downloaded on its own) it installs gstutorial with pip from the book's repository (the
package carries the trained weights and the benchmark results the chapters read), or from the wheel
named by ``$GSTUTORIAL_WHEEL`` (tests/test_reader_path.py). Chapters that read MNIST get a second
part that fetches it into the data root the chapter reads (:func:`gstutorial.runtime.chapter_settings`:
``./data`` outside the repository); it is silent when the files are already there.

The cell is tagged ``remove-cell`` (the rendered book leaves it out) and ``nbval-check-output``.
Insert it, or bring it up to date, in place (idempotent; a notebook already up to date is not
rewritten)::

    .venv/bin/python tools/setup_cell.py book/*.ipynb

A notebook that changed has an unexecuted cell afterwards: re-execute it (``make execute NB=...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from gstutorial.files import atomic_write

#: _config.yml's repository.url: where pip installs gstutorial from outside the repository.
REPOSITORY_URL = "https://github.com/gstutorial/gstutorial"

#: The cell's id, which also finds it again on an update.
CELL_ID = "gstutorial-setup"
TAGS = ["remove-cell", "nbval-check-output"]

SETUP_CELL = f'''\
# Setup. Inside the book's repository (and on Binder) gstutorial is installed: this does nothing.
# Elsewhere (Colab, a chapter downloaded on its own) it installs gstutorial from the book's
# repository, with the trained weights and recorded results the chapters read.
import importlib.util

if importlib.util.find_spec("gstutorial") is None:
    import os
    import subprocess
    import sys

    wheel = os.environ.get("GSTUTORIAL_WHEEL")  # a local wheel instead (tests/test_reader_path.py)
    pip_args = ["--no-deps", wheel] if wheel else ["gstutorial @ git+{REPOSITORY_URL}"]
    print("installing gstutorial from", pip_args[-1])
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pip_args], check=True)
    importlib.invalidate_caches()
    import gstutorial

    print("installed gstutorial", gstutorial.__version__)'''

#: Appended to :data:`SETUP_CELL` in chapters that read MNIST.
MNIST_PART = '''

# MNIST, once, into the data root the chapter reads (./data outside the repository); silent when present
from gstutorial.data import fetch_mnist
from gstutorial.runtime import chapter_settings

raw_mnist = fetch_mnist(chapter_settings().data_root, verbose=True)'''

SETUP_CELL_MNIST = SETUP_CELL + MNIST_PART


def needs_mnist(notebook: nbformat.NotebookNode) -> bool:
    """Whether a chapter reads MNIST (a code cell other than the setup cell calls ``load_mnist``)."""
    return any(cell.cell_type == "code" and cell.get("id") != CELL_ID and "load_mnist(" in cell.source
               for cell in notebook.cells)


def setup_source(notebook: nbformat.NotebookNode) -> str:
    """The setup cell's source for this notebook: :data:`SETUP_CELL`, plus MNIST if it reads MNIST."""
    return SETUP_CELL_MNIST if needs_mnist(notebook) else SETUP_CELL


def _is_setup_cell(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and (cell.get("id") == CELL_ID or cell.source.startswith(SETUP_CELL[:40]))


def insert_setup_cell(notebook: nbformat.NotebookNode, source: str | None = None) -> bool:
    """Make the notebook's first code cell the setup cell (``source``, default :func:`setup_source`),
    tagged :data:`TAGS`: insert it before the first code cell, or update the one there. Return whether
    the notebook changed (False when it was already up to date)."""
    source = setup_source(notebook) if source is None else source
    codes = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    first = codes[0] if codes else len(notebook.cells)
    if codes and _is_setup_cell(notebook.cells[first]):
        cell = notebook.cells[first]
        if cell.source == source and cell.metadata.get("tags") == TAGS and cell.get("id", CELL_ID) == CELL_ID:
            return False
        cell.source, cell.outputs, cell.execution_count = source, [], None
        cell.metadata["tags"] = list(TAGS)
        if "id" in cell:
            cell["id"] = CELL_ID
        return True
    for i in reversed(codes):  # a setup cell further down (the first code cell is not one): moved up
        if _is_setup_cell(notebook.cells[i]):
            del notebook.cells[i]
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(TAGS)})
    if (notebook.nbformat, notebook.nbformat_minor) >= (4, 5):
        cell["id"] = CELL_ID
    else:  # cell ids came with nbformat 4.5
        cell.pop("id", None)
    notebook.cells.insert(first, cell)
    return True


def update_notebook(path: str | Path) -> bool:
    """:func:`insert_setup_cell` on the notebook file ``path``, written back (atomically) only if it
    changed; return whether it did."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    if not insert_setup_cell(notebook):
        return False
    nbformat.validate(notebook)
    atomic_write(path, lambda tmp: nbformat.write(notebook, tmp))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to update in place")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"{path}: {'setup cell written' if update_notebook(path) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
