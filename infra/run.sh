#!/usr/bin/env bash
# Run Placecast: install what is missing, start PostGIS + Redis on loopback, migrate, load the demo,
# serve the API, the worker and the admin UI. Ctrl-C stops everything; `infra/run.sh stop` too.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/bootstrap.sh
if [ "${1:-}" = "stop" ]; then exec .venv/bin/placecast stop; fi
exec .venv/bin/placecast up "$@"
