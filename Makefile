# Two commands on a fresh machine (Python only):
#   make run    install everything into .venv, then run the quickstart pipeline
#   make test   install everything into .venv, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(patsubst %/pyproject.toml,%,$(sort $(wildcard plugins/*/pyproject.toml)))
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# every pipeline under examples/ (the *.toml files with a [run] table; sweep files included)
EXAMPLES = $(shell grep -rlE --include='*.toml' '^\[run\]' examples | sort)
# the third-party example's plugin comes from its source folder (its entry point, if installed, is disabled)
EXAMPLE_PLUGIN_ENV := PYTHONPATH=examples/third-party-plugin DEEPSCOPE_PLUGINS_MODULES=deepscope_example \
	DEEPSCOPE_DISABLE_PLUGINS=deepscope-example DEEPSCOPE_STRICT_PLUGINS=1

.PHONY: install run test validate-examples bench clean

$(VENV)/.installed: Makefile pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[ui,test]" $(foreach p,$(PLUGINS),-e $(p))
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/deepscope run

test: install
	DEEPSCOPE_STRICT_PLUGINS=1 $(BIN)/python -m pytest -q

validate-examples: install
	@status=0; for f in $(EXAMPLES); do \
		$(EXAMPLE_PLUGIN_ENV) $(BIN)/deepscope validate $$f || status=1; \
	done; exit $$status

bench: install
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) mlflow.db mlartifacts
