# The images of the four services, one target each. Build context: the repository root:
#   docker build --target api -t kriten-api .
#   (likewise --target ingress, dispatcher, collector; docker compose builds all four).
# Always name the target: without one, docker builds the last stage, the collector.
#
# Stages: `base` (uv and every workspace member's pyproject.toml: uv resolves the whole
# workspace) -> `deps` (the third-party dependencies every service shares, those of
# kriten-common, installed once) -> `build-<service>` (that service's own dependencies,
# then the workspace code) -> `runtime` (the non-root user and environment) -> `<service>`,
# the runtime plus that service's venv and command. Each image holds only its service and
# the service's dependencies.

FROM python:3.11-slim AS base

# Pinned and from PyPI: PyPI is the one registry CI builders can always reach.
RUN pip install --no-cache-dir uv==0.13.9

# Bytecode compiled at build time; copies, not hard links, so the venv can move stages;
# the interpreter is the image's own, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# The lock and the manifests alone: the dependency layers below are reused until uv.lock
# or a pyproject.toml changes.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/api/pyproject.toml services/api/
COPY services/ingress/pyproject.toml services/ingress/
COPY services/dispatcher/pyproject.toml services/dispatcher/
COPY services/collector/pyproject.toml services/collector/
COPY launcher/pyproject.toml launcher/
# Not in any image, but uv reads every workspace member's manifest.
COPY clients/cli/pyproject.toml clients/cli/


# What all four services need (aiohttp, aio-pika, pydantic, SQLAlchemy, ...), built once.
FROM base AS deps
RUN uv sync --frozen --no-dev --no-install-workspace --package kriten-common


# Per service: its own third-party dependencies on top of the shared ones (uv sync is
# exact, so the venv then holds this service's dependencies and nothing else), then the
# workspace code, installed as wheels (--no-editable): the runtime stage gets the venv
# only, not the sources an editable install would point at.
FROM deps AS build-api
RUN uv sync --frozen --no-dev --no-install-workspace --package kriten-api
COPY libs/ libs/
COPY services/ services/
COPY launcher/ launcher/
RUN uv sync --frozen --no-dev --no-editable --package kriten-api

FROM deps AS build-ingress
RUN uv sync --frozen --no-dev --no-install-workspace --package kriten-ingress
COPY libs/ libs/
COPY services/ services/
COPY launcher/ launcher/
RUN uv sync --frozen --no-dev --no-editable --package kriten-ingress

FROM deps AS build-dispatcher
RUN uv sync --frozen --no-dev --no-install-workspace --package kriten-dispatcher
COPY libs/ libs/
COPY services/ services/
COPY launcher/ launcher/
RUN uv sync --frozen --no-dev --no-editable --package kriten-dispatcher

FROM deps AS build-collector
RUN uv sync --frozen --no-dev --no-install-workspace --package kriten-collector
COPY libs/ libs/
COPY services/ services/
COPY launcher/ launcher/
RUN uv sync --frozen --no-dev --no-editable --package kriten-collector


# What every service image shares. Same base image and venv path as the builders, so the
# venv's interpreter links still resolve.
FROM python:3.11-slim AS runtime

RUN groupadd --system --gid 10001 kriten \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/kriten \
       --shell /usr/sbin/nologin kriten

ENV PATH=/app/.venv/bin:$PATH
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KRITEN_HOST=0.0.0.0 \
    KRITEN_PORT=8080

# Where compose's `init-secrets` service writes the secrets (kriten-init-secrets)
# and the services read them (KRITEN_*_FILE). A new named volume copies this
# directory's owner and mode: the non-root user can write to it, nobody else read it.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/kriten/secrets

WORKDIR /app
EXPOSE 8080


FROM runtime AS api
COPY --from=build-api /app/.venv /app/.venv
USER 10001:10001
CMD ["kriten-api"]


FROM runtime AS ingress
COPY --from=build-ingress /app/.venv /app/.venv
USER 10001:10001
CMD ["kriten-ingress"]


FROM runtime AS dispatcher

# The local executor clones the runner's repository with git and runs the task with sh;
# ca-certificates for https remotes. Not pinned (hadolint's DL3008): the base image's
# Debian release fixes them, and a pinned Debian version disappears from the mirrors.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The local executor's job directories (KRITEN_JOBS_DIR in compose). A new named volume
# copies this directory's ownership, so the non-root user can write to it.
RUN install -d -o 10001 -g 10001 /var/lib/kriten/jobs

COPY --from=build-dispatcher /app/.venv /app/.venv
USER 10001:10001
CMD ["kriten-dispatcher"]


FROM runtime AS collector

# The job directories the dispatcher writes, shared through the same named volume.
RUN install -d -o 10001 -g 10001 /var/lib/kriten/jobs

COPY --from=build-collector /app/.venv /app/.venv
USER 10001:10001
CMD ["kriten-collector"]
