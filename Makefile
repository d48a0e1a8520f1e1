# InferOps: every task a developer or CI runs. `make demo` and `make test` bootstrap everything they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
SAM_VENV  := .venv-sam
SCAN_VENV := .venv-scan
PY        := $(VENV)/bin/python
SAM       := $(SAM_VENV)/bin/sam
# pip's configured extra indexes may not exist on every machine; their warnings are noise.
PIP_QUIET := 2> >(grep -v 'is ignored: it is neither' >&2)

export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1
# Nothing here may reach AWS: fake credentials and a fixed region for every tool.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true

STATE_MACHINES := $(wildcard statemachines/*.asl.json)

.PHONY: help venv sam-venv scan-venv lint format typecheck template statemachines catalog-check openapi api-docs \
        security unit test demo bench chaos fuzz catalog clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.txt requirements/constraints.txt layers/shared/requirements.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $$(./scripts/find-python)"; "$$(./scripts/find-python)" -m venv $(VENV); }
	$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt $(PIP_QUIET)
	# The project itself (editable): puts the `inferops` CLI on $(VENV)/bin.
	$(PY) -m pip install -q --no-deps -e . $(PIP_QUIET)
	@touch $@

$(SAM_VENV)/.installed: requirements/sam.txt requirements/constraints-sam.txt
	@test -x $(SAM_VENV)/bin/python || "$$(./scripts/find-python)" -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q -r requirements/sam.txt -c requirements/constraints-sam.txt $(PIP_QUIET)
	@touch $@

$(SCAN_VENV)/.installed: requirements/scan.txt requirements/constraints-scan.txt
	@test -x $(SCAN_VENV)/bin/python || "$$(./scripts/find-python)" -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install -q -r requirements/scan.txt -c requirements/constraints-scan.txt $(PIP_QUIET)
	@touch $@

venv: $(VENV)/.installed ## Create the project virtualenv (pinned)

sam-venv: $(SAM_VENV)/.installed ## Create aws-sam-cli's own virtualenv (pinned)

scan-venv: $(SCAN_VENV)/.installed ## Create checkov's own virtualenv (pinned)

lint: venv ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: venv ## mypy (strict) on the layer, the functions, the twin, the CLI and the scripts
	$(VENV)/bin/mypy layers/shared functions twin cli scripts/build_catalog.py scripts/openapi.py scripts/openapi_html.py

template: venv sam-venv ## cfn-lint and sam validate --lint on template.yaml
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --region $(AWS_DEFAULT_REGION) --template-file template.yaml

statemachines: venv ## statelint on every state machine definition
	@if [ -z "$(STATE_MACHINES)" ]; then echo "statelint: no state machines yet"; fi
	@for f in $(STATE_MACHINES); do echo "statelint $$f"; $(VENV)/bin/statelint --ignore=URI,FLOAT "$$f"; done

catalog-check: venv ## Fail if the committed catalog differs from what scripts/build_catalog.py generates
	$(PY) scripts/build_catalog.py --check

openapi: venv ## Regenerate docs/openapi.json from the API's routes, and its HTML page docs/api.html
	$(PY) scripts/openapi.py --write
	$(PY) scripts/openapi_html.py --write

api-docs: venv ## Render docs/openapi.json to the static page docs/api.html (no network, no CDN)
	$(PY) scripts/openapi_html.py --write

security: scan-venv ## checkov on template.yaml (skips justified in .checkov.yaml and inline), offline
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE $(SCAN_VENV)/bin/checkov --config-file .checkov.yaml -f template.yaml

unit: venv ## pytest (unit, property, flows, short chaos and fuzz runs)
	$(PY) -m pytest -n auto --dist loadfile

test: lint typecheck template statemachines catalog-check security unit ## Every check and test (what CI runs)

demo: venv ## Play the scenarios offline
	$(PY) -m twin.demo

.PHONY: up invoke
PORT ?= 8080
up: venv ## Serve the real API on 127.0.0.1 (PORT=8080) with the twin behind it; SigV4 header required, not verified
	$(PY) -m twin.server --port $(PORT)

invoke: venv ## In-process `sam local invoke`: make invoke FUNCTION=ApiFunction EVENT=events/api/create_plan.json
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || { echo "usage: make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	$(PY) -m twin.invoke $(FUNCTION) $(EVENT)

bench: venv ## Benchmarks: print figures and ratios
	$(PY) tests/perf/bench_catalog.py
	$(PY) tests/perf/bench_imports.py
	$(PY) tests/perf/bench_deployment.py
	$(PY) tests/perf/bench_async_results.py
	$(PY) tests/perf/bench_shadow.py --quick --week --judge-minutes 15
	$(PY) tests/perf/bench_scaling.py
	$(PY) tests/perf/bench_delivery.py
	$(PY) tests/perf/bench_cost.py

CHAOS_RUNS ?= 200
CHAOS_BUDGET ?= 3600
chaos: venv ## Chaos suite: every flow under random faults, invariants checked (CHAOS_RUNS, CHAOS_BUDGET s, SEED)
	$(PY) tests/chaos/chaos.py --runs $(CHAOS_RUNS) --budget $(CHAOS_BUDGET) $(if $(SEED),--seed $(SEED))

FUZZ_EXAMPLES ?= 50
fuzz: venv ## API fuzzing (schemathesis) over docs/openapi.json against the twin's API (FUZZ_EXAMPLES, SEED)
	$(PY) tests/fuzz/fuzz_api.py --examples $(FUZZ_EXAMPLES) $(if $(SEED),--seed $(SEED))

catalog: venv ## Regenerate the instance & accelerator catalog
	$(PY) scripts/build_catalog.py

clean: ## Remove virtualenvs and build output
	rm -rf $(VENV) $(SAM_VENV) $(SCAN_VENV) .aws-sam .mypy_cache .ruff_cache
