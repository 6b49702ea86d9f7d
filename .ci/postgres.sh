#!/usr/bin/env bash
# Install and start a PostgreSQL server on 127.0.0.1 for the tests that need one, and print
# the URL they use (TBXSWEEP_TEST_PG_URL). Safe to run twice. Needs root (CI runs as root).
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -q && break
  sleep 1
done
su postgres -c "psql -q -tAc \"SELECT 1 FROM pg_roles WHERE rolname='tbxsweep'\"" 2>/dev/null | grep -q 1 \
  || su postgres -c "psql -q -c \"CREATE ROLE tbxsweep LOGIN SUPERUSER PASSWORD 'tbxsweep'\""
echo "postgresql://tbxsweep:tbxsweep@127.0.0.1:5432/postgres"
