# The few verbs a newcomer needs. Every target sets up the virtual environment first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# cargo builds the compiled window core (core/); rustup installs it in ~/.cargo/bin.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CORE_SOURCES := core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs)

.PHONY: setup kafka flink-jars core demo test lint typecheck unit proto bench clean

setup: $(STAMP) kafka flink-jars

# Apache Kafka's jars from Maven Central (deploy/kafka/pom.xml), cached in ~/.cache/streamwarden/kafka:
# the test suite's broker. Refetched only when the pom changes.
kafka: $(STAMP)
	$(BIN)/python -m streamwarden.deploy.kraft

# The Flink job's Java side (jobs/flink/java/pom.xml): the Kafka connector jars from Maven Central and the
# job's own classes, cached in ~/.cache/streamwarden/flink-java (else built at the first Flink job start).
flink-jars: $(STAMP)
	$(BIN)/streamwarden flink jars

$(STAMP): pyproject.toml constraints.txt $(CORE_SOURCES)
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) to build core/"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

# Rebuild only the compiled window core after editing core/src (the editable install puts it in place).
core:
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt -e .

demo: $(STAMP)
	$(BIN)/streamwarden demo

test: $(STAMP) kafka lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not engine"

# Regenerate schemas/*_pb2.py(i) from the .proto sources (tests check they are current).
proto: $(STAMP)
	$(BIN)/python -m streamwarden.schemas.generate

bench: $(STAMP)
	$(BIN)/streamwarden bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
