# trading-platform — every set-up step a fresh machine needs lives here.
# `make test` and `make demo` are the two entry points the README promises.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTHON ?= python3
TP_CACHE ?= $(or $(TRADING_DEV_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/trading-platform)
# kubectl of the cluster's own Kubernetes version (built by node-binaries) before the machine's.
export PATH := $(TP_CACHE)/path:$(PATH)
KUBERNETES_OLDEST = $(shell sed -n 's/^KUBERNETES_OLDEST = "\(.*\)"/\1/p' devtools/trading_dev/controlplane/build.py)

.PHONY: plugin plugin-archive up down help deps sysdeps pydeps controlplane crds crds-check cluster cluster-api cluster-platform images node-deps node-binaries lint typecheck test test-unit test-oldest demo bench clean helm objectstore chart-crds chart-schema argocd-cm promql-check

help:
	@echo "make test     - install everything, lint, type-check, run the whole test suite"
	@echo "make demo     - the whole platform on a real single-node cluster here, narrating one trading day"
	@echo "                (DEMO_ARGS=--runtime=process: the light process runtime, ready in seconds)"
	@echo "make cluster  - run a real single-node cluster (kubelet, containerd, ...) until Ctrl-C"
	@echo "make cluster-api - run the API-server-only control plane (kube-apiserver + etcd) until Ctrl-C"
	@echo "make crds     - regenerate crds/ from the pydantic models"

# System packages the tests and the demo start for real: Redis, PostgreSQL, Lua.
sysdeps:
	@bash hack/install-sysdeps.sh

# pip's own output (progress, build warnings, notices) goes to a log; the terminal gets one line
# saying what is being installed and roughly how long it takes, then how long it took.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned Python dependencies into $(VENV) (the first time several minutes: torch's wheels are large; log: $(VENV)/install.log) ..."
	@start=$$(date +%s); \
	if PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
	   $(PIP) install -q --upgrade pip setuptools wheel >$(VENV)/install.log 2>&1 && \
	   PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
	   $(PIP) install -q -c requirements.lock -e '.[dev,ml]' >>$(VENV)/install.log 2>&1; then \
	  echo "    Python dependencies installed in $$(( $$(date +%s) - start ))s"; \
	else \
	  tail -n 30 $(VENV)/install.log; echo "pip install failed; the whole log: $(VENV)/install.log"; exit 1; \
	fi
	@touch $(STAMP)

pydeps: $(STAMP)

# Go's build cache of the builds below (Kubernetes, etcd, CoreDNS, helm, versitygw: 6-8 GB) is of no
# use once their binaries are cached, and the real node's images need the disk (a node short of it is
# tainted disk-pressure and runs nothing): the builds use a cache of their own, removed by deps at the end.
GOCACHE := $(or $(TRADING_DEV_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/trading-platform)/go-build
export GOCACHE

deps: sysdeps pydeps controlplane node-deps node-binaries helm promql-check objectstore
	@rm -rf "$(GOCACHE)"

# kube-apiserver of the oldest and the newest supported Kubernetes minor, and etcd, built from Go
# modules and cached outside the repo (docs/decisions/0006-supported-kubernetes-and-a-real-node.md).
controlplane: pydeps
	@$(PY) -m trading_dev.controlplane.build --all-supported

# What a real node needs: containerd, runc, CNI plugins, iptables, conntrack, debootstrap (Debian),
# and kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl (Go modules, cached).
node-deps: sysdeps
	@bash hack/install-node-deps.sh

node-binaries: pydeps
	@$(PY) -m trading_dev.controlplane.build --node

# helm built from Go modules (go install), cached outside the repo; see hack/install-helm.sh.
helm: sysdeps
	@bash hack/install-helm.sh >/dev/null

# versitygw, the S3-compatible server of local runs and tests, built from Go modules (go install),
# cached outside the repo keyed by version; see hack/install-versitygw.sh.
objectstore: sysdeps
	@bash hack/install-versitygw.sh >/dev/null

# Prometheus' PromQL parser, for the chart tests' check of every alert and dashboard query.
promql-check: sysdeps
	@bash hack/install-promql-check.sh >/dev/null

# Copy crds/ into the chart's templates (gated by crds.create) and regenerate the values schema.
chart-crds:
	python3 hack/sync-chart-crds.py

chart-schema: pydeps
	$(PY) hack/gen-values-schema.py

# The Argo CD health checks and actions as an argocd-cm patch (argocd/argocd-cm.yaml).
argocd-cm:
	python3 hack/gen-argocd-cm.py

crds: pydeps
	$(PY) -m trading_operator.crdgen --out crds
	$(PY) hack/sync-chart-crds.py

crds-check: pydeps
	$(PY) -m trading_operator.crdgen --out crds --check

# A real single-node cluster in the foreground (CLUSTER_ARGS=--no-gpu: no GPU pool on the node).
cluster: deps
	$(PY) -m trading_dev.cluster --kubeconfig .dev/kubeconfig $(CLUSTER_ARGS)

# The operator, workers and services images built here without Docker (debootstrap + pinned wheels),
# cached in ~/.cache/trading-platform/images; make cluster's tests and demo load them into the node.
images: deps
	$(PY) -m trading_dev.cluster.rootfs

# The platform onto the node `make cluster` runs (in another terminal): images, Redis, PostgreSQL,
# helm install into a namespace enforcing the restricted Pod Security profile.
cluster-platform: deps
	$(PY) -m trading_dev.cluster.deploy

# The API-server-only control plane (kube-apiserver + etcd), as the fast tests use it.
cluster-api: deps
	$(PY) -m trading_dev.controlplane --kubeconfig .dev/kubeconfig

lint: pydeps
	$(VENV)/bin/ruff check operator workers devtools tests benchmarks

typecheck: pydeps
	$(VENV)/bin/mypy operator/trading_operator workers/trading_workers devtools/trading_dev benchmarks

test: deps lint typecheck
	$(VENV)/bin/pytest -p no:cacheprovider
	@$(MAKE) --no-print-directory test-oldest

# The CRDs and the chart against the oldest supported Kubernetes minor too (the suite above runs on
# the newest): the API-server-only tests that exercise the API server's own validation.
test-oldest: deps
	TRADING_DEV_KUBERNETES_VERSION=$(KUBERNETES_OLDEST) $(VENV)/bin/pytest -p no:cacheprovider \
	  tests/test_crds_cluster.py tests/deploy/test_chart_cluster.py tests/security

test-unit: pydeps
	$(VENV)/bin/pytest -p no:cacheprovider -m "not cluster and not services and not e2e"

# The kubectl plugin (kubectl trading): a single dependency-free script.
PLUGIN_DIR ?= $(HOME)/.local/bin
plugin:
	install -D -m 0755 plugin/kubectl-trading $(PLUGIN_DIR)/kubectl-trading
	@echo "installed $(PLUGIN_DIR)/kubectl-trading; try: kubectl trading --help"

# The plugin's krew archive (dist/kubectl-trading.tar.gz, reproducible) and its sha256 stamped into
# the krew manifest plugin/krew/trading.yaml. Run it after changing plugin/kubectl-trading.
plugin-archive:
	@python3 hack/build-plugin-archive.py

# A playground that stays up (the demo's platform without the story) until Ctrl-C or `make down`.
up: deps
	$(PY) -m trading_dev.up $(UP_ARGS)

down: pydeps
	$(PY) -m trading_dev.up --down

# Default: images, the real node, helm install, then the story (root); DEMO_ARGS=--runtime=process for the
# light process runtime (docs/decisions/0016-the-process-runtime-after-the-real-node.md).
demo: deps
	$(PY) -m trading_dev.demo $(DEMO_ARGS)

bench: deps
	$(PY) -m benchmarks $(BENCH_ARGS)

# Fault drills on the local platform with figures (tests/chaos; minutes, not part of `make test`).
.PHONY: chaos
chaos: deps
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

clean:
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache
