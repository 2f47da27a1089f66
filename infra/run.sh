#!/usr/bin/env bash
# Run Placecast: install what is missing, start PostGIS + Redis on loopback, migrate, load the demo,
# serve the API, the worker and the admin UI. Ctrl-C stops everything; `infra/run.sh stop` too.
# Secure by default: the first run generates a random secret key, database password and Redis password in
# var/secrets/ (mode 0600; `placecast up` does it) and every later run reuses them. PostgreSQL asks for the
# password (SCRAM), Redis runs with requirepass; there is no public default to fall back on.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/bootstrap.sh
if [ "${1:-}" = "stop" ]; then exec .venv/bin/placecast stop; fi
exec .venv/bin/placecast up "$@"
