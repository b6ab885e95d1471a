# Two commands for a fresh machine: `make demo` and `make test`. Both install what they need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MODEL   ?= gpt2-small
OUT     ?= artifacts/$(MODEL)
PROMPT  ?= 464,2068,7586,21831
# Parallel test workers are not used: CI has 2 cores and torch already uses both.

.PHONY: demo test test-slow test-all test-fuzz test-fuzz-trained bench bench-gpu install install-gpu clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# CUDA build of ONNX Runtime in place of the CPU one (both are the module `onnxruntime`; only one may be installed)
install-gpu: install
	$(BIN)/pip uninstall -y onnxruntime
	$(BIN)/pip install --quiet 'onnxruntime-gpu[cuda,cudnn]'
	$(BIN)/python -c "import onnxruntime as o; p = o.get_available_providers(); print(p); assert 'CUDAExecutionProvider' in p, 'no CUDA provider: check the NVIDIA driver'"

demo: install
	$(BIN)/zoo list
	$(BIN)/zoo build $(MODEL) -o $(OUT)
	$(BIN)/zoo run $(OUT)
	$(BIN)/zoo generate $(OUT) --ids $(PROMPT) --max-new-tokens 24
	$(BIN)/zoo generate $(OUT) --ids $(PROMPT) --max-new-tokens 24 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 1

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Property tests with many random examples (hypothesis profile `long`), ~30 min
test-fuzz: install
	ZOO_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/test_properties.py --hypothesis-show-statistics

# The same, every valid build on trained-like weights (compiler.trained_like), ~30 min
test-fuzz-trained: install
	ZOO_HYPOTHESIS_PROFILE=trained $(BIN)/python -m pytest -q tests/test_properties.py -k valid_spec --hypothesis-show-statistics

test-all: install
	$(BIN)/python -m pytest -q -m 'slow or not slow'

# Generation speed against transformers and onnxruntime-genai (where its wheel installs): fp32, int8, int4, ~30 min
bench: install
	$(BIN)/pip install --quiet onnxruntime-genai || echo "onnxruntime-genai does not install here; benchmarking without it"
	$(BIN)/python benchmarks/generate.py --optimize --kv-cache shared

# The same on an NVIDIA GPU: fp16 and int4 with IO binding, against onnxruntime-genai's CUDA build and torch eager on CUDA
bench-gpu: install-gpu
	$(BIN)/pip uninstall -y onnxruntime-genai
	$(BIN)/pip install --quiet onnxruntime-genai-cuda || echo "onnxruntime-genai-cuda does not install here; benchmarking without it"
	$(BIN)/python benchmarks/generate.py --device cuda --out benchmarks/results/generate-cuda.json

clean:
	rm -rf $(VENV) artifacts .pytest_cache
