# composenet — set-up and checks. Every target installs what it needs itself
# (Debian packages, then a venv from pyproject.toml), so a fresh Debian 12 machine
# only needs `make test` or `make demo`, as root. Packages are installed with services kept
# stopped (policy-rc.d): etcd-server is only the binary the cluster tests start themselves, in
# their own namespace; its packaged service must not start on the host.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := nftables iproute2 python3 python3-venv python3-pip conntrack dnsperf dnsmasq-base procps iputils-ping \
	etcd-server graphviz
STAMP := $(VENV)/.installed

.PHONY: deps venv test test-unit test-integration lint golden demo bench clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
	  [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) deps
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check composenet tests bench examples
	$(VENV)/bin/mypy composenet

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/golden

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

# The test command of the README and of .ci/run: lint, then every test tier.
test: deps $(STAMP) lint
	$(PY) -m pytest -q tests

golden: $(STAMP)
	$(PY) -m pytest -q tests/golden --update-goldens

demo: deps $(STAMP)
	$(PY) examples/demo.py

bench: deps $(STAMP)
	$(PY) bench/up_down.py
	$(PY) bench/dns.py
	$(PY) bench/cluster.py
	$(PY) bench/edit.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
