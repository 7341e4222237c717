# vlmforge: two entry points, `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On this CPU machine torch is pinned to the on-disk CPU build; pyproject keeps torch>=2.4.
TORCH_PIN ?= torch==2.13.0
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test test-slow lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(BIN)/vlmforge run --recipe configs/tiny.yaml

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .vlmforge
