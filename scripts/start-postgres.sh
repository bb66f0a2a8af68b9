#!/usr/bin/env bash
# Start the local PostgreSQL cluster (Debian package `postgresql`) and make sure a role and a
# database exist for the storage tests. Prints the line to export, so callers can do:
#   pg_env=$(bash scripts/start-postgres.sh) && eval "$pg_env"
# Needs root (pg_ctlcluster drops to the postgres user itself). Safe to run twice.
set -euo pipefail
role="${LAWCLF_PG_ROLE:-lawclf}"
password="${LAWCLF_PG_PASSWORD:-lawclf}"
db="${LAWCLF_PG_DB:-lawclf_test}"

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "start-postgres: PostgreSQL is not installed (scripts/install-system-deps.sh ci installs it)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-postgres: needs root to start the cluster (or set LAWCLF_TEST_PG_URL to a running server)" >&2
  exit 1
fi

# The first cluster of the newest installed version; create one when the package made none.
read -r version cluster port status _ < <(pg_lsclusters -h | sort -k1,1nr | head -n 1) || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  cluster=main
  pg_createcluster "$version" "$cluster" >/dev/null
  read -r version cluster port status _ < <(pg_lsclusters -h | sort -k1,1nr | head -n 1)
fi
if [ "$status" != online ]; then
  pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "start-postgres: server on port $port did not come up" >&2; exit 1; }

psql_admin() { runuser -u postgres -- psql -p "$port" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE \"$role\" LOGIN PASSWORD '$password';
  END IF;
END \$\$;" >&2
if [ -z "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
  psql_admin -c "CREATE DATABASE \"$db\" OWNER \"$role\"" >&2
fi
echo "export LAWCLF_TEST_PG_URL=postgresql+psycopg://$role:$password@127.0.0.1:$port/$db"
