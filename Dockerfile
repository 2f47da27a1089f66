# syntax=docker/dockerfile:1
# Placecast's image: one image, three commands (`placecast api`, `placecast worker`, `placecast migrate`).
#   docker build -t placecast .
#   docker run --env-file prod.env placecast migrate && docker run --env-file prod.env -p 8000:8000 placecast api
# PostgreSQL/PostGIS and Redis are not in it: they are the deployment's (infra/k8s/README.md). No secret is baked in:
# every PLACECAST_* secret comes from the environment at run time (production reads nothing else).
# Tests: tests/deploy/test_artefacts.py checks this file offline (stages, user, COPY sources, commands).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# ---- the admin UI's browser libraries, exactly as admin/package-lock.json pins them ----
FROM ${NODE_IMAGE} AS admin-assets
WORKDIR /build/admin
COPY admin/package.json admin/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error

# ---- the virtual environment: pinned dependencies first (a cached layer while only code changes), then the code ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
COPY admin/ admin/
COPY bench/ bench/
COPY geofences/ geofences/
COPY infra/ infra/
COPY kernel/ kernel/
COPY mobile_api/ mobile_api/
COPY notifications/ notifications/
COPY services/ services/
COPY --from=admin-assets /build/admin/node_modules admin/node_modules
# Editable: the code stays in /app, where admin/ui.py finds admin/node_modules and infra/migrate.py its migrations.
RUN /opt/venv/bin/pip install --no-deps -e . \
    && /opt/venv/bin/python -m compileall -q /app/admin /app/bench /app/geofences /app/infra /app/mobile_api \
        /app/notifications /app/services

# ---- what runs: the venv and the code, no compilers, no npm, an unprivileged numeric user ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 placecast \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin placecast \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/placecast
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# Not secrets: where the process listens and keeps scratch files, and that it is a production process (which reads
# its secrets from the environment only and refuses weak ones). Kubernetes mounts an emptyDir on /var/lib/placecast.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PLACECAST_ENVIRONMENT=production \
    PLACECAST_VAR_DIR=/var/lib/placecast \
    PLACECAST_API_HOST=0.0.0.0 \
    PLACECAST_API_PORT=8000 \
    PLACECAST_LOG_JSON=true
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# The same image runs the worker and the migration, which serve no HTTP: health is checked by the orchestrator's
# probes on the API only (infra/k8s/api.yaml: readiness /ready, liveness /health).
HEALTHCHECK NONE
ENTRYPOINT ["placecast"]
CMD ["api"]
