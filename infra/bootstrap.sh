# Sourced by infra/run.sh and infra/test.sh: install what is missing, fast when nothing is.
# Debian/Ubuntu: PostgreSQL + PostGIS, Redis and pgBackRest from the distribution's packages, the project in .venv.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if [ ! -f /var/lib/placecast-apt-updated ] || [ -n "$(find /var/lib/apt/lists -maxdepth 0 -mmin +1440 2>/dev/null)" ]; then
    as_root apt-get update -qq
    as_root touch /var/lib/placecast-apt-updated
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_major() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1; }

missing=()
if [ -z "$(pg_major)" ]; then missing+=(postgresql); fi
major=$(pg_major)
if [ -z "$major" ] || ! ls /usr/share/postgresql/"$major"/extension/postgis.control >/dev/null 2>&1; then
  missing+=("postgresql-${major:-15}-postgis-3")
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Backups: WAL archiving and point-in-time restore of the project's cluster (infra/backup.py).
command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
for extra in ${PLACECAST_EXTRA_PACKAGES:-}; do
  dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "placecast: installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
  # A fresh postgresql package may start its own cluster on 5432; ours runs on its own port, so leave it.
fi

# The admin UI's map and chart libraries come from the npm registry, served by the app (no CDN).
if [ -f admin/package-lock.json ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  npm_stamp=admin/node_modules/.placecast-installed
  npm_want=$(sha256sum admin/package-lock.json | cut -c1-16)
  if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_want" ]; then
    echo "placecast: installing the admin UI's npm packages"
    npm ci --prefix admin --no-audit --no-fund --loglevel=error
    echo "$npm_want" > "$npm_stamp"
  fi
fi

stamp=.venv/.placecast-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "placecast: installing Python dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
