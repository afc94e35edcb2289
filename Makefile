# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export QT_QPA_PLATFORM_PLUGIN_PATH :=

.PHONY: run test test-slow install install-dev bench package clean demo

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# without ARGS: the demo project (slide, annotations, the demo model's class map); else ARGS as given.
# On Linux, first checks that Qt's X11 plugin can load and names the Debian packages it lacks.
run: install
	$(PY) tools/check_qt_platform.py
	$(VENV)/bin/crc-viewer $(if $(strip $(ARGS)),$(ARGS),--demo)

# the suite on both cores of a CI machine (pytest-xdist; TEST_WORKERS=0 runs it in one process)
TEST_WORKERS ?= 2
test: install-dev
	$(VENV)/bin/ruff check .
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

test-slow: install-dev
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m slow

package: install
	$(PY) -m pip install -q -e '.[package]'
	$(VENV)/bin/pyinstaller --noconfirm --distpath dist --workpath build/pyinstaller packaging/crc-workbench.spec
	QT_QPA_PLATFORM=offscreen dist/crc-workbench/crc-viewer --selftest

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
