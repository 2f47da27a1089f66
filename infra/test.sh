#!/usr/bin/env bash
# The whole test suite from nothing: installs what is missing, then ruff, mypy, the import contracts and pytest.
# The tests start their own PostGIS and Redis on free ports in a temporary folder, never touching the demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
# Browser tests drive Debian's Chromium (Playwright cannot download its own here).
export PLACECAST_EXTRA_PACKAGES="${PLACECAST_EXTRA_PACKAGES:-} chromium"
source infra/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy .
echo "== import contracts (pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/pytest "$@"
