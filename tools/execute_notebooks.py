"""Execute chapters in place, top to bottom, for committing (``make execute [NB=book/X.ipynb]``).

The same as ``jupyter execute --inplace`` except that no per-cell timestamps are written into the
notebook (nbclient's ``record_timing``) and consecutive prints to one stream are stored as one
output, so re-executing an unchanged chapter leaves ``git diff`` empty where its outputs did not
change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from gstutorial.cli import HelpFormatter
from gstutorial.files import atomic_write


def execute(path: Path, timeout: int) -> float:
    """Run every cell of the notebook at ``path`` in its own folder; write it back only if all ran."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # timestamps left by an earlier `jupyter execute`
        cell.metadata.pop("execution", None)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = _merged_streams(cell.outputs)
    atomic_write(path, lambda tmp: nbformat.write(notebook, tmp))
    return time.perf_counter() - start


def _merged_streams(outputs: list) -> list:
    """Join consecutive stdout (or stderr) outputs into one: how a cell's printing is split depends on
    when the kernel flushed, which would otherwise show up as diffs of unchanged text."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to execute in place")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a single cell may run")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        try:
            seconds = execute(path, args.timeout)
        except CellExecutionError as exc:
            print(f"error: {path} failed; the file is left as it was.\n{exc}", file=sys.stderr)
            return 1
        print(f"executed {path} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
