# syntax=docker/dockerfile:1
# The operator image: `python -m trading_operator`, run as uid/gid 10001 (the chart's runAsUser),
# with nothing written to the root filesystem (the chart mounts it read-only, /tmp is an emptyDir).
#
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t trading-platform/operator:0.1.0 .
# The chart's operator.image.repository/tag default to trading-platform/operator:<appVersion>.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY operator/ operator/
COPY workers/ workers/
COPY devtools/ devtools/
# The pinned versions of requirements.lock, into a venv that the runtime stage copies whole.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c requirements.lock .

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 trading \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trading
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /metrics (TRADING_METRICS_PORT) and the liveness /healthz (TRADING_LIVENESS_PORT).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "trading_operator"]
