#!/usr/bin/env bash
# The whole test suite: starts what the tests need (an S3-compatible server on 127.0.0.1 for the
# object-store tier), runs every test with every feature, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

s3_started=0
cleanup() {
  if [ "$s3_started" = 1 ]; then
    ./scripts/s3-server.sh stop || true
  fi
}
trap cleanup EXIT

if [ -x ./scripts/s3-server.sh ]; then
  # Prints `export NAME=value` lines for the tests.
  eval "$(./scripts/s3-server.sh start)"
  s3_started=1
  export DARAMJWEE_S3_REQUIRED=1
fi

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
