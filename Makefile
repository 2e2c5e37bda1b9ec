# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use and install tfascl into it; the TensorFlow
# wheel is chosen once per machine: tensorflow[and-cuda] where nvidia-smi
# answers, the much smaller tensorflow-cpu on Linux and Windows, and the plain
# tensorflow wheel where tensorflow-cpu has none (macOS). `make test` adds the
# ONNX and LiteRT extras, whose tests run the exported files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TF_EXTRA := $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || \
	{ [ "$$(uname -s)" = Darwin ] && echo tensorflow || echo cpu; })
MODEL_DIR ?= runs/default
# The recipe of `make run`: ASCL on the embedded digits, with augmentations that suit them.
RUN_FLAGS ?= --flagfile=flags/digits_ascl.flags
# pytest-xdist processes for `make test`: a test keeps about one core busy (TensorFlow's
# small ops), so two workers use both of a 2-core machine; each test file stays on one
# worker (--dist loadfile), so module fixtures are made once.
TEST_WORKERS ?= 2

.PHONY: install run test lint format clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[$(TF_EXTRA),dev]"
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[$(TF_EXTRA),dev,onnx,litert]"
	touch $@

run: install
	$(BIN)/tfascl-train $(RUN_FLAGS) --model_dir=$(MODEL_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=12 tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
