#!/usr/bin/env bash
# Installs everything Ringlog's tests need and runs them all. This is the README's test command
# and exactly what .ci/run calls, on a fresh clone with nothing installed by hand (as root, on
# Debian). Each install is skipped when what it installs is already there, so a second run goes
# straight to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
# kcat for the kcat tests; a C toolchain, make, pkg-config and zlib's headers for the rdkafka
# crate's bundled librdkafka build (its zstd is built by zstd-sys); python3-venv in case the
# machine's python3 is Debian's; Chromium, and Node.js and npm for Playwright, for the web
# console's browser test; iproute2 and nftables for the tests across network namespaces.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "installing $* needs root" >&2; exit 1; fi
}
apt_log=$(mktemp)
trap 'rm -f "$apt_log"' EXIT
quietly() {
  if ! "$@" >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "test-all: failed: $*" >&2
    exit 1
  fi
}
apt_updated=
apt_install() {
  echo "test-all: apt-get install $*"
  if [ -z "$apt_updated" ]; then
    quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "$@"
}
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# --- The Python Kafka clients, in a venv ------------------------------------------------------
venv=target/test-venv
requirements=tools/tests/clients/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.installed" \
  || ! "$venv/bin/python" -c 'import confluent_kafka, kafka, snappy, lz4.frame, zstandard' \
    >/dev/null 2>&1; then
  echo "test-all: creating $venv"
  rm -rf "$venv"
  mkdir -p target
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    apt_install python3 python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  quietly "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.installed"
fi

# --- Playwright, to drive Chromium from the console test -------------------------------------
# playwright-core only (it downloads no browser): the test runs Debian's /usr/bin/chromium.
console_test=tools/tests/console
if ! cmp -s "$console_test/package-lock.json" "$console_test/node_modules/lock.installed"; then
  echo "test-all: npm ci in $console_test"
  (cd "$console_test" && quietly npm ci --no-audit --no-fund)
  cp "$console_test/package-lock.json" "$console_test/node_modules/lock.installed"
fi

# The end-to-end tests fail, rather than skip, when a client is missing.
export RINGLOG_TEST_PYTHON="$PWD/$venv/bin/python"
export RINGLOG_REQUIRE_CLIENTS=1

cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked
# --all-targets leaves out doctests, and the embedded broker's documented example is one.
cargo test --workspace --doc --locked
