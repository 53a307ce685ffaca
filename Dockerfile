# The broker's production image: one image for both tiers, chosen by the command.
#   docker build -t llm-stream-broker .
#   docker run ... llm-stream-broker                      # a front (broker serve) on port 8000
#   docker run ... llm-stream-broker worker               # a worker
# compose.yaml runs both; docs/pages/operating.md explains the settings below.
#
# BASE_IMAGE: any Debian-like image with python3 (3.11 or newer) and its venv module; the
# official slim image by default. WHEELHOUSE: a directory of the build context; when it holds
# wheels, nothing is fetched from PyPI (see wheelhouse/README.md).
ARG BASE_IMAGE=python:3.12-slim

# --- build: the broker and its dependencies as wheels, installed into a virtualenv ----------
FROM ${BASE_IMAGE} AS build
# On both stages: a builder can find (and prune) what builds of this image left untagged.
LABEL org.opencontainers.image.title="llm-stream-broker"
ARG WHEELHOUSE=wheelhouse
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY ${WHEELHOUSE}/ /wheelhouse/
COPY pyproject.toml README.md /src/
COPY broker /src/broker
COPY workers /src/workers
# The virtualenv is made here and copied whole into the final stage, at the same path on the
# same base, so the final stage gets the installed broker and nothing that built it: no pip,
# no setuptools, no wheels, no caches.
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        sources="--no-index --find-links /wheelhouse"; \
    else \
        sources=""; \
    fi; \
    python3 -m venv /opt/broker; \
    /opt/broker/bin/pip wheel $sources --wheel-dir /wheels /src; \
    /opt/broker/bin/pip install --no-index --find-links /wheels llm-stream-broker; \
    /opt/broker/bin/pip uninstall --yes pip setuptools; \
    /opt/broker/bin/broker --help >/dev/null

# --- the image ----------------------------------------------------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="llm-stream-broker"
RUN groupadd --system --gid 10001 broker \
 && useradd --system --uid 10001 --gid broker --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin broker
COPY --from=build /opt/broker /opt/broker
ENV PATH=/opt/broker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER broker:broker
EXPOSE 8000
# Both tiers stop in order on SIGTERM: a front tells its SSE clients to reconnect elsewhere,
# a worker takes no new job and lets running ones finish for BROKER_SHUTDOWN_GRACE_SECONDS.
# Docker's wait before SIGKILL (compose `stop_grace_period`, `docker run --stop-timeout`) must
# be longer than that grace: compose.yaml gives workers 25 s of grace and 30 s before SIGKILL.
STOPSIGNAL SIGTERM
# A front is healthy when /readyz answers 200, which includes a Redis round trip. A worker has
# no HTTP port of its own: compose.yaml gives it a check of its metrics port instead.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8000/readyz', timeout=2)"]
ENTRYPOINT ["broker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
