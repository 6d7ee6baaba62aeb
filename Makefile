# `make demo` and `make test` set everything up on a fresh machine: a virtual environment, torch and torchvision,
# vlmtune and its test tools.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch with torchvision, as on a user's machine: the folders vlmtune writes are tested to load with plain
# transformers, whose Qwen-VL, LLaVA-OneVision, SmolVLM and InternVL processors need torchvision (the tests without
# it hide it in a subprocess). One pair for every machine: these are CUDA builds (about 5.5 GB), which also run on
# CPU; the CPU wheel of torch 2.13 has no working torchvision on PyPI.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup browser demo test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"
	$(DEEPSPEED_INSTALL)
	touch $@

# The DeepSpeed engine tests (tests/train/test_engines.py; they skip without it). DeepSpeed builds from source
# against the torch installed above (no build isolation, or pip would fetch another torch) and compiles one
# collective op with g++ the first time it runs; without g++ it is left out.
DEEPSPEED_INSTALL = command -v g++ >/dev/null && DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation \
	"deepspeed>=0.19,<0.20" || echo "deepspeed not installed (it needs g++): its engine tests will be skipped"

setup: $(VENV)/.installed

# The browser tests render report.html and drive `vlmtune ui` (playwright) in headless chromium. Install it where
# apt-get runs without a prompt (root); anywhere else only say so, and those tests skip.
APT := DEBIAN_FRONTEND=noninteractive apt-get -qq -y --no-install-recommends
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(APT) install chromium >/dev/null || { apt-get -qq update && $(APT) install chromium >/dev/null; } || \
		echo "chromium did not install: the browser tests (report, web UI) will be skipped"; \
	else echo "no chromium (install the Debian package chromium as root): the browser tests (report, web UI) will be skipped"; fi

demo: setup
	$(VENV)/bin/vlmtune demo

test: setup browser
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest

# The inner loop: every test but the slow and the multi-process ones (under 2 minutes on 2 CPU cores).
test-fast: setup
	$(PY) -m pytest -m "not slow and not multiprocess"

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) demo runs
