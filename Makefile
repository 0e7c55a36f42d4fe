# failsafe.recovery — every target sets up what it needs first (scripts/setup.sh).
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export CONTAINERS_CONF := $(CURDIR)/extensions/podman/containers.conf
STAGES := scripts/stages.py

.PHONY: setup test lint sanity unit integration molecule bench sandbox-up sandbox-down sandbox-status demo build changelog clean

setup:
	@scripts/setup.sh

test: setup
	@.venv/bin/python $(STAGES) lint sanity unit integration molecule

lint: setup
	@.venv/bin/python $(STAGES) lint

sanity: setup
	@.venv/bin/python $(STAGES) sanity

unit: setup
	@.venv/bin/python $(STAGES) unit

integration: setup
	@.venv/bin/python $(STAGES) integration

molecule: setup
	@.venv/bin/python $(STAGES) molecule

bench: setup
	@.venv/bin/python tests/bench/run.py

sandbox-up: setup
	@PYTHONPATH=extensions .venv/bin/python -m sandbox up

sandbox-status:
	@PYTHONPATH=extensions .venv/bin/python -m sandbox status

sandbox-down:
	@PYTHONPATH=extensions .venv/bin/python -m sandbox down

demo: setup
	@PYTHONPATH=extensions .venv/bin/python -m sandbox demo

build: setup
	@.venv/bin/ansible-galaxy collection build --force --output-path .build/dist

# Fold changelogs/fragments into changelogs/changelog.yaml under galaxy.yml's version and write
# CHANGELOG.rst. Run again while that version is unreleased and it adds what is new to the same release.
changelog: setup
	@scripts/changelog.sh

clean:
	rm -rf .build .cache tests/output
