# chatapp — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps make re-runs instant: pip runs again only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --editable .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --editable ".[test]"
	@touch $@ $(VENV)/.installed

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install chatapp

.PHONY: run
run: install ## Set everything up and serve on http://127.0.0.1:8000 (HOST=, PORT=, WORKERS= override; one worker per core; embedded PostgreSQL unless DATABASE_URL)
	$(BIN)/chatapp serve --migrate --host $(HOST) --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: voice
voice: install ## Talk to the agent: a LiveKit server on loopback, the app and the worker (needs an OpenAI key or OpenAI-compatible STT/TTS/LLM; see README)
	HOST=$(HOST) PORT=$(PORT) scripts/voice

.PHONY: chromium
chromium: ## Install Debian's Chromium for the browser tests (when missing and root)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "The browser tests need Debian's chromium: run 'sudo apt-get install -y chromium'." >&2; exit 1; fi

# The operations tests run deploy/ for real: Debian's nginx, PostgreSQL server and redis-server (CHATAPP_CHANNELS=redis), network namespaces (iproute2),
# openssl, envsubst (gettext-base) for deploy/bin/render-nginx and systemd-analyze. apt starts nothing here
# (no init), but where it did start nginx it holds port 80 with Debian's default site: stop it and drop the site.
DEPLOY_PACKAGES := nginx postgresql redis-server iproute2 openssl gettext-base systemd util-linux

.PHONY: deploy-deps
deploy-deps: ## Install the Debian packages the multi-host tests run (when missing and root)
	@if [ "$$(id -u)" != "0" ]; then \
		echo "The multi-host tests need root (network namespaces) and: apt-get install -y $(DEPLOY_PACKAGES)" >&2; \
	else \
		if ! dpkg-query -W -f='$${Status}\n' $(DEPLOY_PACKAGES) 2>/dev/null | grep -c 'install ok installed' \
			| grep -qx "$(words $(DEPLOY_PACKAGES))"; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPLOY_PACKAGES) >/dev/null; \
		fi; \
		if [ -s /run/nginx.pid ]; then nginx -s quit 2>/dev/null || true; fi; \
		rm -f /etc/nginx/sites-enabled/default; \
	fi

# The voice tests speak (espeak-ng) and resample (sox) with Debian's tools.
.PHONY: speech-tools
speech-tools: ## Install espeak-ng and sox for the voice tests (when missing and root)
	@if command -v espeak-ng >/dev/null 2>&1 && command -v sox >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null; \
	else echo "The voice tests need Debian's espeak-ng and sox: run 'sudo apt-get install -y espeak-ng sox'." >&2; exit 1; fi

.PHONY: livekit
livekit: ## Find the LiveKit server for the voice tests (LIVEKIT_SERVER_BIN, PATH), else build it once per user with Go 1.26+
	@scripts/livekit-server >/dev/null

.PHONY: lint
lint: $(VENV)/.installed-test ## ruff and mypy
	$(BIN)/ruff check src tests bench piccolo_migrations piccolo_conf.py
	$(BIN)/ruff format --check src tests bench piccolo_migrations piccolo_conf.py
	$(BIN)/mypy

# As root the suite runs in a network namespace of its own (scripts/loopback-only): nothing it starts, the
# LiveKit server's WebRTC media included, can send a packet beyond loopback. SEAL= runs it unsealed.
SEAL ?= $(shell [ "$$(id -u)" = 0 ] && scripts/loopback-only true 2>/dev/null && echo scripts/loopback-only)

.PHONY: test
test: $(VENV)/.installed-test chromium deploy-deps speech-tools livekit lint ## Set everything up, lint, and run the whole test suite
	$(SEAL) $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: bench
bench: $(VENV)/.installed-test ## Run the benchmarks and print their tables
	$(BIN)/python -m bench

.PHONY: format
format: $(VENV)/.installed-test ## Format the code with ruff
	$(BIN)/ruff check --fix src tests bench piccolo_migrations piccolo_conf.py
	$(BIN)/ruff format src tests bench piccolo_migrations piccolo_conf.py

.PHONY: vendor
vendor: ## Re-fetch the vendored JavaScript from npm (versions below)
	rm -rf /tmp/chatapp-vendor && mkdir -p /tmp/chatapp-vendor
	cd /tmp/chatapp-vendor && npm init -y >/dev/null && npm install --silent htmx.org@2.0.11 htmx-ext-sse@2.2.4 livekit-client@2.23.0
	cp /tmp/chatapp-vendor/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx/
	cp /tmp/chatapp-vendor/node_modules/htmx.org/LICENSE static/vendor/htmx/LICENSE
	cp /tmp/chatapp-vendor/node_modules/htmx-ext-sse/sse.js static/vendor/htmx-ext-sse/
	cp /tmp/chatapp-vendor/node_modules/htmx-ext-sse/LICENSE static/vendor/htmx-ext-sse/LICENSE
	mkdir -p static/vendor/livekit-client
	cp /tmp/chatapp-vendor/node_modules/livekit-client/dist/livekit-client.umd.js static/vendor/livekit-client/
	cp /tmp/chatapp-vendor/node_modules/livekit-client/LICENSE static/vendor/livekit-client/LICENSE

.PHONY: clean
clean: ## Remove the virtualenv, caches and test artifacts (keeps .data/)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
