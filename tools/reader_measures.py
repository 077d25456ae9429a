"""What a reader of each rendered chapter sees: prose words, code lines not folded, visible assert lines
and figures, one line per notebook. Usage: python tools/reader_measures.py [book/NN_name.ipynb ...]"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FOLDED = {"remove-cell", "remove-input", "hide-input", "hide-cell"}


def measures(path: Path) -> dict[str, int]:
    words = code = asserts = figures = 0
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            words += len(source.split())
        elif cell["cell_type"] == "code":
            tags = set(cell.get("metadata", {}).get("tags", []))
            if not tags & FOLDED:
                lines = source.splitlines()
                code += len(lines)
                asserts += sum(1 for line in lines if re.match(r"\s*assert\b", line))
            if "remove-cell" not in tags:
                figures += sum(1 for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))
    return {"words": words, "code": code, "asserts": asserts, "figures": figures}


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(Path("book").glob("[0-9]*.ipynb"))
    for path in paths:
        m = measures(path)
        print(f"{path.name:32s} {m['words']:6d} words {m['code']:5d} visible code lines "
              f"{m['asserts']:4d} visible asserts {m['figures']:3d} figures")


if __name__ == "__main__":
    main(sys.argv[1:])
