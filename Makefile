# Everything a developer runs. `make demo` and `make test` install what they need first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
# The SageMaker PyTorch training image as a virtual environment (contract tests, local jobs).
IMAGE_VENV := .venv-image
IMAGE_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) python3.12)
PYTEST := $(BIN)/python -m pytest
# pytest-xdist workers for `make test` and `make test-slow` (0: one process, in file order).
TEST_WORKERS ?= 2

.PHONY: venv sam-venv checkov-venv image-venv test-reliability demo test test-slow lint format sample-data build deploy bench clean

$(VENV)/.installed: requirements/training.txt requirements/lambda.txt requirements/serving.txt requirements/dev.txt requirements/captum.txt pyproject.toml functions/shared/pyproject.toml functions/report_layer/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/captum.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e functions/shared -e functions/report_layer -e .
	touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	touch $@

# checkov pins an older boto3 too: its own virtual environment.
$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/checkov.txt
	touch $@

# The image's own packages first, then training/requirements.txt on top exactly as the
# toolkit installs it when a job starts, then the serving toolkit (the inference contract
# serves model.tar.gz under Python 3.12 too); `pip check` must stay clean
# (docs/training-image.md).
$(IMAGE_VENV)/.installed: requirements/image.txt training/requirements.txt requirements/serving.txt
	test -x $(IMAGE_VENV)/bin/python || $(IMAGE_PYTHON) -m venv $(IMAGE_VENV)
	$(IMAGE_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/image.txt
	$(IMAGE_VENV)/bin/pip install --quiet --disable-pip-version-check -r training/requirements.txt
	$(IMAGE_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/serving.txt
	$(IMAGE_VENV)/bin/pip check
	touch $@

venv: $(VENV)/.installed
image-venv: $(IMAGE_VENV)/.installed
sam-venv: $(SAM_VENV)/.installed
checkov-venv: $(CHECKOV_VENV)/.installed

## The whole pipeline on the local cloud, ending in predictions through the HTTP API.
demo: venv sam-venv image-venv
	$(BIN)/mlops demo

## Unit, integration and the fast end-to-end tests, then lint and template checks.
test: venv sam-venv checkov-venv image-venv
	$(PYTEST) -m "not slow" -n $(TEST_WORKERS) --timeout 900 --durations=25
	$(MAKE) lint

## Slower tests (whole pipelines, many trainings). CI runs them after `make test`.
test-slow: venv sam-venv checkov-venv image-venv
	$(PYTEST) -m slow -n $(TEST_WORKERS) --timeout 1800 --durations=0

## Bad input, fuzzing, load, template security and (slow) fault injection on the local cloud.
test-reliability: venv sam-venv checkov-venv image-venv
	$(PYTEST) tests/reliability --timeout 3600

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample-data: venv
	$(BIN)/mlops sample-data data/digits

## AWS: build with SAM, deploy (guided the first time), publish the training source.
build: sam-venv
	$(SAM_VENV)/bin/sam build

deploy: build venv
	$(SAM_VENV)/bin/sam deploy --guided --parameter-overrides "$$($(BIN)/mlops image-parameters)"
	$(BIN)/mlops publish-training --stack $${STACK:-mlops}

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf .mlops .aws-sam data
