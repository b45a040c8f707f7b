#!/usr/bin/env bash
# The CPU one notification costs a back-end that does nothing but wake, read
# the kick eventfd and write the call eventfd (bench/wakeup-cost.c), for a few
# gaps between kicks.  Compare with the "CPU us/switch" column of vm-bench.sh.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
KICKS=${KICKS:-20000}
GAPS=${GAPS:-"0 50 100 200"}
SPIN_IDLE=0
case "${1:-}" in
    -h|--help)
        echo "Usage: bench/wakeup-cost.sh [--spin-idle]   (env: KICKS=$KICKS GAPS=\"$GAPS\")"
        echo "Prints the worker's CPU microseconds per kick for each gap (microseconds of"
        echo "busy time on the kicking side between two kicks, as a TCG vCPU has)."
        echo "--spin-idle: run one SCHED_IDLE busy loop per CPU, so no CPU halts (as"
        echo "bench/vm-bench.sh --spin-idle); then the figure is the wake-up alone."
        exit 0 ;;
    --spin-idle) SPIN_IDLE=1 ;;
    "") ;;
    *) echo "wakeup-cost: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
command -v cc >/dev/null || { echo "wakeup-cost: a C compiler (cc) is needed: apt-get install -y gcc" >&2; exit 1; }
mkdir -p "$REPO_ROOT/.cache"
BIN="$REPO_ROOT/.cache/wakeup-cost"
cc -O2 -Wall -Wextra -o "$BIN" "$SCRIPT_DIR/wakeup-cost.c"
SPINNERS=()
trap 'for p in "${SPINNERS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
if [[ $SPIN_IDLE -eq 1 ]]; then
    for _ in $(seq 1 "$(nproc)"); do
        chrt -i 0 bash -c 'while :; do :; done' &
        SPINNERS+=($!)
    done
fi
echo "# wakeup-cost $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)$([[ $SPIN_IDLE -eq 0 ]] || echo ", --spin-idle")"
for gap in $GAPS; do
    "$BIN" "$KICKS" "$gap"
done
