#!/usr/bin/env bash
# Build (once, cached) and run librdkafka's own benchmark tool
# `rdkafka_performance`, to cross-check the numbers of our load generator.
#
# The librdkafka source is the one vendored in the `rdkafka-sys` crate pinned
# in Cargo.lock (the same librdkafka our Rust tools link against). It is copied
# into <cargo target dir>/rdkafka-perf/ and built there with only a C toolchain
# and zlib: ssl, sasl/gssapi, zstd, external lz4 and curl are disabled, and
# mklove is told never to download anything.
#
# Usage:
#   bench/scripts/rdkafka-performance.sh --build-only
#       Build if needed and print the path of the rdkafka_performance binary.
#   bench/scripts/rdkafka-performance.sh [--rebuild] [--] <rdkafka_performance args...>
#       Build if needed, then exec rdkafka_performance with the given args, e.g.
#         bench/scripts/rdkafka-performance.sh -P -t topic -b 127.0.0.1:9092 \
#             -s 100 -c 1000000 -a -1 -X linger.ms=5 -u
#         bench/scripts/rdkafka-performance.sh -C -t topic -p 0 -o beginning -e \
#             -b 127.0.0.1:9092 -c 1000000 -u
#       (consumer mode -C needs explicit -p <partition>; -e exits at end of
#       partition.)
#
# Options (must come before the rdkafka_performance arguments):
#   --build-only   only build, print the binary path on stdout
#   --rebuild      rebuild even if the cached binary is up to date
#   --help         show this help (use `... -- -h` for the tool's own usage)
#
# Environment:
#   RDKAFKA_PERF_NO_APT=1   never run apt-get; fail if build deps are missing
#   CC                      C compiler (passed through to librdkafka's configure)
#
# Build output goes to <target>/rdkafka-perf/build.log; all messages of this
# script go to stderr so that stdout only carries the binary path / tool output.

set -euo pipefail

PROG="rdkafka-performance.sh"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKSPACE="$(cd "$SCRIPT_DIR/../.." && pwd)"

# Features that would need extra (non-default) packages are disabled.
CONFIGURE_FLAGS=(
    --no-download
    --disable-ssl
    --disable-gssapi
    --disable-zstd
    --disable-curl
    --disable-lz4-ext
    --enable-zlib
)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------- arguments --
BUILD_ONLY=0
REBUILD=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build-only) BUILD_ONLY=1; shift ;;
        --rebuild) REBUILD=1; shift ;;
        --help) usage; exit 0 ;;  # stdout
        --) shift; break ;;
        *) break ;;
    esac
done
if [[ $BUILD_ONLY -eq 0 && $# -eq 0 ]]; then
    usage >&2
    die "no rdkafka_performance arguments given (use --build-only to just build)"
fi

# ------------------------------------------------------------ build deps --
have_build_deps() {
    command -v make >/dev/null 2>&1 || return 1
    command -v "${CC:-cc}" >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || return 1
    command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 || return 1
    # zlib headers: ask the compiler rather than guessing include paths.
    printf '#include <zlib.h>\nint main(void){return 0;}\n' |
        "${CC:-cc}" -x c -E - -o /dev/null >/dev/null 2>&1 || return 1
}

ensure_build_deps() {
    have_build_deps && return 0
    local pkgs=(build-essential zlib1g-dev)
    if [[ "${RDKAFKA_PERF_NO_APT:-0}" == 1 ]]; then
        die "C toolchain or zlib headers missing and RDKAFKA_PERF_NO_APT=1; install: ${pkgs[*]}"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "C toolchain (cc, c++, make) or zlib headers missing and apt-get not available; install them manually"
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "build deps missing; run as root or install: ${pkgs[*]}"
        sudo=(sudo)
    fi
    log "installing build dependencies: ${pkgs[*]}"
    "${sudo[@]}" apt-get update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
        die "apt-get install ${pkgs[*]} failed"
    have_build_deps || die "build deps still missing after apt-get install (cc/c++/make/zlib.h)"
}

# ------------------------------------------------- locate librdkafka source --
command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH"
LOCKFILE="$WORKSPACE/Cargo.lock"
[[ -f "$LOCKFILE" ]] || die "no Cargo.lock at $LOCKFILE"

mapfile -t SYS_VERSIONS < <(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = / { gsub(/"/, "", $3); name = $3 }
    /^version = / && name == "rdkafka-sys" { gsub(/"/, "", $3); print $3 }
' "$LOCKFILE" | sort -u)
case ${#SYS_VERSIONS[@]} in
    0) die "rdkafka-sys is not in $LOCKFILE" ;;
    1) SYS_VERSION="${SYS_VERSIONS[0]}" ;;
    *) die "several rdkafka-sys versions in $LOCKFILE: ${SYS_VERSIONS[*]}" ;;
esac

# cargo metadata: offline first (fast, no network); if the crate sources are
# not downloaded yet, fetch them (exactly as locked) and retry. If cargo
# metadata cannot be used at all (e.g. Cargo.lock is momentarily out of date
# with a Cargo.toml someone is editing), fall back to $CARGO_TARGET_DIR (or
# <workspace>/target) and the crates.io cache under $CARGO_HOME.
metadata() {
    cargo metadata --format-version 1 --locked --manifest-path "$WORKSPACE/Cargo.toml" "$@"
}
META=""
META_ERR=""
if ! META="$(metadata --offline 2>&1)"; then
    META_ERR="$META"; META=""
    if grep -q -- "--locked" <<<"$META_ERR"; then
        log "warning: cargo metadata --locked refused (Cargo.lock not up to date with the manifests); using fallbacks"
    else
        log "cargo metadata --offline failed (crate sources not downloaded?); running cargo fetch --locked"
        if (cd "$WORKSPACE" && cargo fetch --locked >&2); then
            if ! META="$(metadata 2>&1)"; then
                META_ERR="$META"; META=""
                log "warning: cargo metadata failed; using fallbacks"
            fi
        else
            META_ERR="cargo fetch --locked failed"
            log "warning: cargo fetch --locked failed; using fallbacks"
        fi
    fi
fi

TARGET_DIR=""
SYS_MANIFEST=""
if [[ -n "$META" ]]; then
    TARGET_DIR="$(printf '%s' "$META" | grep -o '"target_directory":"[^"]*"' | head -n1 |
        sed 's/^"target_directory":"//; s/"$//' || true)"
    SYS_MANIFEST="$(printf '%s' "$META" | grep -o '"manifest_path":"[^"]*"' |
        sed 's/^"manifest_path":"//; s/"$//' |
        grep -F "/rdkafka-sys-$SYS_VERSION/Cargo.toml" | head -n1 || true)"
fi
if [[ -z "$TARGET_DIR" ]]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$WORKSPACE/target}"
    [[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$WORKSPACE/$TARGET_DIR"
fi
if [[ -z "$SYS_MANIFEST" ]]; then
    # Fallback: the crates.io registry cache under CARGO_HOME.
    for m in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$SYS_VERSION"/Cargo.toml; do
        [[ -f "$m" ]] && { SYS_MANIFEST="$m"; break; }
    done
fi
if [[ -z "$SYS_MANIFEST" ]]; then
    [[ -n "$META_ERR" ]] && printf '%s\n' "$META_ERR" | tail -n 5 >&2
    die "source of rdkafka-sys $SYS_VERSION not found via cargo metadata or \$CARGO_HOME/registry/src (try: cd $WORKSPACE && cargo fetch --locked)"
fi
SRC_DIR="$(dirname "$SYS_MANIFEST")/librdkafka"
[[ -x "$SRC_DIR/configure" && -f "$SRC_DIR/examples/rdkafka_performance.c" ]] ||
    die "librdkafka source incomplete at $SRC_DIR (configure or examples/rdkafka_performance.c missing)"

# ------------------------------------------------------------------- build --
PERF_DIR="$TARGET_DIR/rdkafka-perf"
BUILD_DIR="$PERF_DIR/librdkafka-$SYS_VERSION"
BIN="$BUILD_DIR/examples/rdkafka_performance"
STAMP="$BUILD_DIR/.rdkafka-perf-stamp"
BUILD_LOG="$PERF_DIR/build.log"
STAMP_CONTENT="src=$SRC_DIR flags=${CONFIGURE_FLAGS[*]} cc=${CC:-}"

up_to_date() {
    [[ $REBUILD -eq 0 && -x "$BIN" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$STAMP_CONTENT" ]] || return 1
    # Any source file newer than the binary -> rebuild.
    [[ -z "$(find "$SRC_DIR" -type f -newer "$BIN" -print -quit)" ]]
}

build() {
    ensure_build_deps
    case "$BUILD_DIR" in
        "$PERF_DIR"/librdkafka-*) ;;
        *) die "refusing to use unexpected build dir $BUILD_DIR" ;;
    esac
    log "building rdkafka_performance (librdkafka from rdkafka-sys $SYS_VERSION)"
    log "  source: $SRC_DIR"
    log "  build:  $BUILD_DIR (log: $BUILD_LOG)"
    local start=$SECONDS jobs
    jobs="$(nproc 2>/dev/null || echo 2)"
    rm -rf "$BUILD_DIR"
    mkdir -p "$BUILD_DIR"
    cp -a "$SRC_DIR/." "$BUILD_DIR/"
    chmod -R u+w "$BUILD_DIR"
    : >"$BUILD_LOG"
    local step
    for step in configure lib example; do
        local rc=0
        case $step in
            configure) (cd "$BUILD_DIR" && ./configure "${CONFIGURE_FLAGS[@]}") >>"$BUILD_LOG" 2>&1 || rc=$? ;;
            lib) make -C "$BUILD_DIR/src" -j"$jobs" librdkafka.a >>"$BUILD_LOG" 2>&1 || rc=$? ;;
            example) make -C "$BUILD_DIR/examples" rdkafka_performance >>"$BUILD_LOG" 2>&1 || rc=$? ;;
        esac
        if [[ $rc -ne 0 ]]; then
            tail -n 30 "$BUILD_LOG" >&2 || true
            die "build step '$step' failed (exit $rc); full log: $BUILD_LOG"
        fi
    done
    [[ -x "$BIN" ]] || die "build finished but $BIN is missing; see $BUILD_LOG"
    printf '%s' "$STAMP_CONTENT" >"$STAMP"
    touch "$BIN"
    log "built $BIN in $((SECONDS - start))s (configure: ${CONFIGURE_FLAGS[*]})"
}

mkdir -p "$PERF_DIR"
# Serialise concurrent invocations (two builds in one dir would clash).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$PERF_DIR/.lock"
    flock 9
fi
if ! up_to_date; then
    build
fi
if command -v flock >/dev/null 2>&1; then
    exec 9>&-
fi

if [[ $BUILD_ONLY -eq 1 ]]; then
    printf '%s\n' "$BIN"
    exit 0
fi
exec "$BIN" "$@"
