"""tools/setup_cell.py: the chapters' first code cell. Inside the repository it prints nothing (nbval's
stored outputs stay empty); it installs from _config.yml's repository; inserting it is idempotent.
(Outside the repository, end to end: tests/test_reader_path.py.)"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("setup_cell", REPO / "tools" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)


def notebook(*sources: str, markdown_first: bool = True) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title")] if markdown_first else []
    nb.cells += [nbformat.v4.new_code_cell(s, metadata={"tags": ["nbval-check-output"]}) for s in sources]
    return nb


def run_cell(source: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exec(compile(source, "<setup cell>", "exec"), {})
    return out.getvalue(), err.getvalue()


def test_it_installs_from_the_repository_the_book_names():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert setup_cell.REPOSITORY_URL == config["repository"]["url"]
    assert f'"gstutorial @ git+{config["repository"]["url"]}"' in setup_cell.SETUP_CELL


@pytest.mark.parametrize("name", ["SETUP_CELL", "SETUP_CELL_MNIST"])
def test_inside_the_repository_the_cell_prints_nothing(name, mnist_root, monkeypatch):
    monkeypatch.setenv("GSTUTORIAL_DATA", str(mnist_root))  # MNIST is there (make data): nothing fetched
    monkeypatch.setenv("GSTUTORIAL_WHEEL", "/nonexistent.whl")  # not used: gstutorial is importable
    assert run_cell(getattr(setup_cell, name)) == ("", "")


def test_the_cell_is_inserted_before_the_first_code_cell_with_its_tags_and_id():
    nb = notebook("x = 1", "print(x)")
    assert setup_cell.insert_setup_cell(nb)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    cell = nb.cells[1]
    assert (cell.source, cell.metadata.tags, cell.id) == (setup_cell.SETUP_CELL, ["remove-cell", "nbval-check-output"],
                                                          "gstutorial-setup")
    assert cell.outputs == [] and cell.execution_count is None
    assert not setup_cell.insert_setup_cell(nb)  # idempotent
    assert len(nb.cells) == 4


def test_chapters_that_read_mnist_get_the_mnist_part():
    nb = notebook("x, y = load_mnist('test', DATA_ROOT, download=False)")
    setup_cell.insert_setup_cell(nb)
    assert nb.cells[1].source == setup_cell.SETUP_CELL_MNIST
    assert setup_cell.SETUP_CELL_MNIST.startswith(setup_cell.SETUP_CELL)
    assert not setup_cell.insert_setup_cell(nb)  # the setup cell's own fetch does not count as reading MNIST


def test_an_outdated_cell_is_updated_in_place_and_a_misplaced_one_moved_up():
    nb = notebook("x = 1")
    setup_cell.insert_setup_cell(nb, source="# old setup")
    nb.cells[1].execution_count, nb.cells[1].metadata["tags"] = 1, ["nbval-check-output"]
    assert setup_cell.insert_setup_cell(nb)
    assert (nb.cells[1].source, nb.cells[1].execution_count) == (setup_cell.SETUP_CELL, None)
    assert nb.cells[1].metadata.tags == setup_cell.TAGS and len(nb.cells) == 3

    moved = notebook("x = 1")
    moved.cells.append(nb.cells[1])  # a setup cell below the chapter's first code cell
    assert setup_cell.insert_setup_cell(moved)
    assert [c.source for c in moved.cells[1:]] == [setup_cell.SETUP_CELL, "x = 1"]


def test_update_notebook_rewrites_a_file_only_when_it_changes(tmp_path):
    path = tmp_path / "07_categorical_vae.ipynb"
    nb = nbformat.read(REPO / "book" / "07_categorical_vae.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.get("id") != setup_cell.CELL_ID]  # the chapter before its setup cell
    nbformat.write(nb, path)
    assert setup_cell.update_notebook(path)
    written = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == setup_cell.SETUP_CELL_MNIST and code[0].id == setup_cell.CELL_ID
    assert not setup_cell.update_notebook(path)
    assert path.read_bytes() == written
    assert setup_cell.main([str(path)]) == 0


@pytest.mark.parametrize("name", ["SETUP_CELL", "SETUP_CELL_MNIST"])
def test_the_cell_ends_in_a_statement_so_jupyter_displays_no_value(name):
    import ast

    last = ast.parse(getattr(setup_cell, name)).body[-1]
    assert not isinstance(last, ast.Expr), "a final expression would be shown as the cell's output"
