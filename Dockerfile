# syntax=docker/dockerfile:1
# s2s-daemon image: `docker build -t s2s-daemon .`
# Stage 1 builds wheels for the project and all its dependencies; stage 2 installs them into a clean
# slim image with no compiler, no pip cache and no source tree, and runs as an unprivileged numeric user
# (numeric so Kubernetes can verify runAsNonRoot).

FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY s2s_daemon ./s2s_daemon
# Wheels for the `otel` extra (tracing, installed by the runtime stage) and the `local` extra (demo image only).
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[local,otel]'


FROM python:3.11-slim-bookworm AS base

LABEL org.opencontainers.image.title="s2s-daemon" \
      org.opencontainers.image.description="Queue-first daemon for reliable server-to-server communication" \
      org.opencontainers.image.licenses="ISC"

# S2S_CONFIG must be mounted (compose volume, Kubernetes ConfigMap): the daemon refuses to start without
# downstreams. The sidecar binds all interfaces here because probes and Prometheus come from outside.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    S2S_CONFIG=/etc/s2s/config.yaml \
    S2S_HTTP__HOST=0.0.0.0 \
    S2S_HTTP__PORT=8080 \
    S2S_LOG_FORMAT=json

RUN groupadd --system --gid 10001 s2s \
    && useradd --system --uid 10001 --gid s2s --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin s2s

# The demo downstreams for docker-compose (`docker build --target demo`): the `local` extra on top of the wheel.
# Never deployed: it exists so the compose stack has service-a and service-b to call.
FROM base AS demo
# DL3013: "$1" is the wheel file built above (its version is the project's); hadolint reads it as a package name.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    set -- /wheels/s2s_daemon-*.whl \
    && pip install --no-cache-dir --no-index --find-links=/wheels "$1[local]"
USER 10001:10001
EXPOSE 8081 8082
ENTRYPOINT ["s2s-daemon"]
CMD ["demo", "--host", "0.0.0.0"]


# The production image (the default target, so it stays last).
FROM base AS runtime

# The wheels are bind-mounted, not copied, so they never become a layer of the final image. One extra, `otel`:
# tracing, off until the standard OTEL_* variables turn it on (docs/tracing.md). The `local` (embedded
# Mongo-wire server for `make run`) and `httpx` (http_client: httpx) extras stay out.
# DL3013: "$1" is the wheel file built above (its version is the project's); hadolint reads it as a package name.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    set -- /wheels/s2s_daemon-*.whl \
    && pip install --no-cache-dir --no-index --find-links=/wheels "$1[otel]"

USER 10001:10001
EXPOSE 8080

# Liveness only (event-loop heartbeat): readiness is for load balancers, not for restarting the container.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('S2S_HTTP__PORT', '8080') + '/livez', timeout=4)"]

# SIGTERM starts the drain: readiness false, consumers stop, in-flight handlers finish (amqp.graceful_timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["s2s-daemon"]
CMD ["run"]
