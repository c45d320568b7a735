# Two commands do all the set-up on a fresh machine:
#   make test     create .venv if missing, install, run the test suite (CI runs this)
#   make report   create .venv if missing, generate SynthCXR, run every notebook with papermill
#                 into book/_generated/, build the book into _build/html/
# Everything else here is a convenience around those two.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.localign-installed
# torch is pinned here (and in environment.yml), not in pyproject.toml: only this pair installs on
# the project's machines; users elsewhere install the torch build that suits their hardware.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PLAN   ?= params/report.yaml
JOBS   ?=

.PHONY: venv test report report-ci book check-book chromium clean-report clean lint

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pip's "Location ... is ignored" warnings come from this machine's extra local indexes: noise.
	$(PY) -m pip install --quiet $(TORCH_PINS) -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(PY) -c "import localign, torch, torchvision, transformers; print('localign', localign.__version__, '| torch', torch.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

# Debian's chromium, for the browser test of the book (tests/test_book_browser.py, `make check-book`):
# installed when missing and running as root (CI, the project's machines); elsewhere a loud note,
# and the browser tests are skipped with the same note.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test of the book"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "!!! could not install chromium: the browser test of the book will be SKIPPED !!!"; \
	else \
	  echo "!!! no chromium and not root: install it (sudo apt-get install chromium), or the browser test of the book is SKIPPED !!!"; \
	fi

test: $(STAMP) chromium
	$(PY) -m pytest -q

# The full report: SynthCXR demo data, pretraining runs, evaluation and figures, then the book.
report: $(STAMP)
	$(VENV)/bin/localign report --plan $(PLAN)
	$(VENV)/bin/jupyter-book build book --all
	@echo "Open _build/html/index.html (make check-book: every page in a browser, screenshots in _build/screenshots)"

# The same pipeline on tiny parameters, with warnings as errors (what the test suite also checks).
report-ci: $(STAMP) chromium
	$(VENV)/bin/localign report --plan params/ci.yaml
	$(VENV)/bin/jupyter-book build book --all -W -n --keep-going
	$(VENV)/bin/localign check-book _build/html

# Open every page of the built book in headless Chromium (offline) and check what a reader sees;
# screenshots of every page go to _build/screenshots/.
check-book: $(STAMP) chromium
	$(VENV)/bin/localign check-book _build/html

book: $(STAMP)
	$(VENV)/bin/jupyter-book build book --all

clean-report:
	rm -rf _build book/_generated

clean: clean-report
	rm -rf $(VENV) .pytest_cache
