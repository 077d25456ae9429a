"""Sphinx extension: offer every notebook chapter as MyST Markdown in the page's download menu.

sphinx-book-theme's download menu lists the source `.ipynb` and a print-to-PDF entry. Readers who
prefer a plain-text copy (to diff, read in an editor, or open with jupytext) get a `.md` entry too:
at the end of the build each notebook is converted with jupytext (outputs dropped) and written
beside its copy in `_sources/`.
"""

from __future__ import annotations

from pathlib import Path

import jupytext


def _add_markdown_button(app, pagename, templatename, context, doctree):
    source = context.get("sourcename") or ""
    if not source.endswith(".ipynb"):
        return
    url = f"{context['pathto']('_sources', 1)}/{source[: -len('.ipynb')]}.md"
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].insert(1, {
                "type": "link",
                "url": url,
                "text": ".md",
                "tooltip": "Download as MyST Markdown",
                "icon": "fab fa-markdown",
                "label": "download-markdown-button",
            })


def _write_markdown(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for docname in app.env.found_docs:
        source = Path(app.env.doc2path(docname))
        if source.suffix != ".ipynb":
            continue
        notebook = jupytext.read(source)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        target = Path(app.outdir) / "_sources" / f"{docname}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(jupytext.writes(notebook, fmt="md:myst"), encoding="utf-8")


def setup(app):
    # after sphinx-book-theme has assembled its header buttons (default priority 500)
    app.connect("html-page-context", _add_markdown_button, priority=900)
    app.connect("build-finished", _write_markdown)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
