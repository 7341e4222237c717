# vlmforge: two entry points, `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On this CPU machine torch is pinned to the on-disk CPU build; pyproject keeps torch>=2.4.
TORCH_PIN ?= torch==2.13.0
# uv installs the rest from the same constraints in ~8 s where pip took ~47 s (this machine,
# cold caches both); it leaves the torch that pip took from disk in place.
UV_PIN ?= uv==0.13.9
export OMP_WAIT_POLICY := PASSIVE
# pip and uv install without compiling bytecode (faster), so Python must be free to cache what
# it compiles: with PYTHONDONTWRITEBYTECODE set (this machine kind sets it) every process compiled each module it
# imports, every time (torch, transformers, prefect, mlflow and great_expectations: 26 s to
# import in a fresh process, 12 s once cached; `make demo` starts a dozen processes).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install lock demo test test-slow test-distributed postgres chromium lint clean stack-up stack-down

install: $(VENV)/.installed

# constraints.txt pins every dependency to the tested versions (a new transformers release
# once changed what the Idefics3 processor counts, between one green run and the next).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH_PIN)" "$(UV_PIN)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[dev]"
	touch $@

# Re-pin constraints.txt to the current .venv (after an upgrade that passes `make test`).
lock: install
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^torch==' -e '^uv=='; } > constraints.tmp
	mv constraints.tmp constraints.txt

demo: install
	$(BIN)/vlmforge run --recipe configs/tiny.yaml

test: install postgres
	$(BIN)/pytest -q

# The MLflow-on-PostgreSQL test needs Debian's postgresql (it starts its own throwaway
# cluster on 127.0.0.1); install it where it is missing and apt is usable, else that test skips.
postgres:
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    apt-get install -y -q postgresql >/dev/null; } || \
	  echo "postgresql not available: the MLflow-on-PostgreSQL test will skip"

test-distributed: install
	$(BIN)/pytest -q -m 'slow or not slow' tests/components/training/test_distributed.py tests/components/training/test_fsdp.py tests/flows/stages/test_launch.py tests/infra

test-slow: install postgres chromium
	$(BIN)/pytest -q -m slow

# The MLflow UI browser test (slow) renders pages with Debian's headless chromium.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium not available: the MLflow UI browser test will skip"

lint: install
	$(BIN)/ruff check .

stack-up:
	docker compose --env-file infra/compose/.env -f infra/compose/docker-compose.yml up -d --build

stack-down:
	docker compose --env-file infra/compose/.env -f infra/compose/docker-compose.yml down

clean:
	rm -rf .vlmforge
