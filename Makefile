# seld_d2 — the two commands of the README, each doing its own set-up (idempotent).
#   make demo   the main job (see README): data -> features -> detector -> submission -> score
#   make test   lint + the test suite (what CI runs)
PY := .venv/bin/python
OUT ?= output/demo

.PHONY: setup demo demo-features test lint format
setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py --out $(OUT)

demo-features: setup
	$(PY) tools/demo_features.py --out $(OUT)-features

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q tests

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
