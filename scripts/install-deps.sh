#!/usr/bin/env bash
# Installs what dbsync's tests, demo and benchmarks need on a fresh Debian machine:
# PostgreSQL server binaries (initdb, pg_ctl, postgres). Idempotent and quiet when all is there.
set -euo pipefail

have_pg() {
  command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! have_pg; then
  echo "install-deps: installing PostgreSQL server binaries (Debian package postgresql)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
