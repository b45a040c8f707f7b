#!/usr/bin/env bash
# One command: a real Linux VM whose disk is served by `vblk serve`.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SIZE_MIB=256
QUEUES=2
JOBS="ext4,write-read,fio,discard"
STRICT="--strict=warn"
KEEP=0

usage() {
    cat <<'USAGE'
Usage: scripts/vm-demo.sh [--size-mib N] [--queues N] [--jobs LIST] [--strict MODE] [--keep]

Builds the test guest if needed (Debian's Linux kernel, busybox initramfs; QEMU runs it
under TCG software emulation), makes a fresh raw disk image, serves it with
`./vblk serve --strict=warn`, and boots the guest with its disk on vhost-user-blk.
The guest's own virtio_blk driver then formats the disk with ext4, mounts it, writes and
checks files, writes and reads a pattern, runs fio with crc32c verification over all
queues, and discards a range; the console scrolls by, and the back-end's log follows.

  --size-mib N    disk size (default 256, at least 128)
  --queues N      vCPUs and queues (default 2)
  --jobs LIST     guest jobs (default ext4,write-read,fio,discard)
  --strict MODE   off, warn or fail: how vblk serve judges the Linux driver (default warn)
  --keep          keep the image and logs
  -h, --help      show this help
USAGE
}

die() { printf 'vm-demo: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) [[ $# -ge 2 ]] || die "--size-mib needs a value"; SIZE_MIB=$2; shift 2 ;;
        --queues) [[ $# -ge 2 ]] || die "--queues needs a value"; QUEUES=$2; shift 2 ;;
        --jobs) [[ $# -ge 2 ]] || die "--jobs needs a value"; JOBS=$2; shift 2 ;;
        --strict) [[ $# -ge 2 ]] || die "--strict needs a value"; STRICT="--strict=$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 128 ]] || die "--size-mib must be a number, at least 128"
[[ $QUEUES =~ ^[0-9]+$ && $QUEUES -ge 1 && $QUEUES -le 8 ]] || die "--queues must be 1..8"

echo "== building the guest (cached after the first time)"
"$SCRIPT_DIR/build-guest.sh"
echo "== building vblk"
"$REPO_ROOT/vblk" --help >/dev/null

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vblk-vm-demo.XXXXXX")
IMG="$WORK/disk.img"
SOCK="$WORK/vblk.sock"
truncate -s "${SIZE_MIB}M" "$IMG"

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP -eq 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

echo "== serving $IMG (${SIZE_MIB} MiB) on $SOCK with $QUEUES queue(s)"
"$REPO_ROOT/vblk" serve "$IMG" --socket "$SOCK" --num-queues "$QUEUES" "$STRICT" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    [[ -S "$SOCK" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; die "vblk serve stopped"; }
    sleep 0.1
done
[[ -S "$SOCK" ]] || die "vblk serve did not create its socket"

echo "== booting Linux under QEMU (TCG) with its disk on vhost-user-blk: jobs $JOBS"
rc=0
"$SCRIPT_DIR/run-guest.sh" --socket "$SOCK" --jobs "$JOBS" --vcpus "$QUEUES" --queues "$QUEUES" \
    --extra-append "vblk.discard_zeroes=1" || rc=$?

kill -TERM "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
echo "== vblk serve's log"
cat "$WORK/serve.log"
if [[ $rc -eq 0 ]]; then
    echo "== every guest job passed"
else
    echo "== some guest jobs failed (exit $rc)"
fi
exit $rc
