# seld_d2 — the two commands of the README, each doing its own set-up (idempotent).
#   make demo   the main job (see README)
#   make test   lint + the test suite (what CI runs)
PY := .venv/bin/python
OUT ?= output/demo

.PHONY: setup demo test lint format
setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo_features.py --out $(OUT)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q tests

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
