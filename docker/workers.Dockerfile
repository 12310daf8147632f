# syntax=docker/dockerfile:1
# The workers image: `trading-platform worker <role> --session NAMESPACE/NAME` (the operator
# supplies the arguments), run as uid/gid 10001 with a read-only root filesystem.
#
# Build from the repository root:
#   docker build -f docker/workers.Dockerfile -t trading-platform/workers:0.1.0 .
#   docker build -f docker/workers.Dockerfile --build-arg WITH_TORCH=false -t trading-platform/workers:0.1.0 .
# WITH_TORCH=true (default) adds torch for the inference workers and the `model` strategy (large:
# the CUDA wheels); rule-based strategies (momentum, mean-reversion) run without it.
# The chart's workers.image.repository/tag default to trading-platform/workers:<appVersion>.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG WITH_TORCH=true
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY operator/ operator/
COPY workers/ workers/
COPY devtools/ devtools/
RUN python -m venv /opt/venv \
 && if [ "$WITH_TORCH" = "true" ]; then extra='.[ml]'; else extra='.'; fi \
 && /opt/venv/bin/pip install -c requirements.lock "$extra"

FROM ${PYTHON_IMAGE}
# pg_dump/pg_restore for `trading-platform backup` (the Backup Jobs run this image). pg_dump must be at
# least as new as the journal's server (Debian bookworm ships 15, trixie 17); pin a newer one via PGDG if needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 trading \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trading
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /healthz, /readyz and /metrics (TRADING_HTTP_PORT).
EXPOSE 8080
ENTRYPOINT ["trading-platform"]
CMD ["--help"]
