"""Sphinx extension: each page loads each script once.

sphinx-thebe registers its inline configuration script (``const THEBE_JS_URL = ...``) at a point where
Sphinx 7 records it twice, and the second ``const`` of the same name is a SyntaxError in the browser
console on every page. This drops exact repeats (same file or body, same attributes) from the page's
script list, keeping the first.
"""

from __future__ import annotations


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        # an inline script has no file (None or "", depending on who added it): its body identifies it
        key = (getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
