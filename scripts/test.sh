#!/usr/bin/env bash
# The whole test suite: starts what the tests need (an S3-compatible server on 127.0.0.1 for the
# object-store tier; installed from PyPI on first use), runs every test with every feature, and
# stops what it started (by its own PID).
set -euo pipefail
cd "$(dirname "$0")/.."

# A state dir of our own, so a server someone else started is never reused or stopped.
export DARAMJWEE_S3_DIR="$(mktemp -d "${TMPDIR:-/tmp}/daramjwee-s3.XXXXXX")"
cleanup() {
  ./scripts/s3-server.sh stop >/dev/null 2>&1 || true
  rm -rf "$DARAMJWEE_S3_DIR"
}
trap cleanup EXIT

# `start` prints `export NAME=value` lines for the tests; fail loudly if it cannot start.
exports="$(./scripts/s3-server.sh start)"
eval "$exports"
export DARAMJWEE_S3_REQUIRED=1
# The disk-full test mounts a tmpfs: as root it must run, not skip.
if [ "$(id -u)" = 0 ]; then export DARAMJWEE_DISK_FULL_REQUIRED=1; fi

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
