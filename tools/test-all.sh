#!/usr/bin/env bash
# Installs everything Ringlog's tests need and runs them all. This is the README's test command
# and exactly what .ci/run calls, on a fresh clone with nothing installed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# Today every test is a cargo test: the toolchain is all they need. The broker's tests will add
# their real Kafka clients (pip, apt, crates) here, installed by this script.
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked
