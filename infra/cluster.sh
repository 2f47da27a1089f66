#!/usr/bin/env bash
# The highly available topology, rehearsed on one machine: etcd x3, PostgreSQL/PostGIS x3 under Patroni with
# synchronous replication, HAProxy (the PostgreSQL leader by Patroni's /primary; the two API processes on one
# address), Redis master + replica with three Sentinels, two API processes and two workers. Every node on its own
# loopback port (PLACECAST_CLUSTER_PORT_BASE, default 25000) with its folder under var/cluster/; the cluster's
# secrets are generated there on the first run (0600) like infra/run.sh's. Idempotent: what runs is left running.
#   infra/cluster.sh          bring it up (installs the Debian packages if missing), print the addresses
#   infra/cluster.sh stop     stop all of it (data stays in var/cluster/)
#   infra/cluster.sh status   the topology (ports, pids) as var/cluster/topology.json has it
set -euo pipefail
cd "$(dirname "$0")/.."
export PLACECAST_EXTRA_PACKAGES="${PLACECAST_EXTRA_PACKAGES:-} etcd-server etcd-client patroni haproxy redis-sentinel"
source infra/bootstrap.sh
exec .venv/bin/python -m infra.cluster "$@"
