#!/usr/bin/env bash
# Validate the test guest and scripts/run-guest.sh against the reference
# vhost-user-blk back-end, qemu-storage-daemon, and check the results on the
# host side of the disk image.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

WORKDIR=""
KEEP=0
TIMEOUT=180
IMG_MIB=256
QUIET=0

usage() {
    cat <<'EOF'
Usage: scripts/check-guest-with-qsd.sh [--workdir DIR] [--keep] [--timeout S] [--quiet]

Runs the functional guest jobs against qemu-storage-daemon's vhost-user-blk
export of a raw image, then checks the image on the host:

  boot 1  writable export, 2 vCPUs, 2 queues:
          jobs write-read,discard,fio,ext4
          host: the 1 MiB pattern at 64 MiB matches (cmp), the discarded and
          write-zeroed ranges [80,88) MiB read as zeroes, e2fsck -fn on the
          image is clean (the filesystem covers [0,64) MiB)
  boot 2  read-only export, 1 vCPU, 1 queue:
          jobs readonly,read-pattern (the pattern survived the reconnect)

  --workdir DIR   where the image, sockets and logs go (default: a new
                  directory under .cache/ of the repo)
  --keep          keep the work directory after success
  --timeout S     per-boot timeout (default 180)
  --quiet         do not echo the guest console
  -h, --help      show this help

Prints the boot time (QEMU start to the guest's VBLK-BOOTED) and the run time
of each boot.  Exit status 0 only if every guest job and host check passed.
EOF
}

log() { printf '[check-qsd] %s\n' "$*"; }
die() { printf '[check-qsd] ERROR: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --workdir) [[ $# -ge 2 ]] || die "--workdir needs a value"; WORKDIR=$2; shift 2 ;;
        --timeout) [[ $# -ge 2 ]] || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --quiet) QUIET=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

"$SCRIPT_DIR/build-guest.sh"
for tool in qemu-img qemu-storage-daemon e2fsck cmp; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/build-guest.sh installs it)"
done

if [[ -z "$WORKDIR" ]]; then
    mkdir -p "$REPO_ROOT/.cache"
    WORKDIR=$(mktemp -d "$REPO_ROOT/.cache/qsd-check.XXXXXX")
else
    mkdir -p "$WORKDIR"
fi
WORKDIR=$(cd "$WORKDIR" && pwd)
IMG="$WORKDIR/disk.img"
SOCK="$WORKDIR/vblk.sock"

QSD_PID=""
stop_qsd() {
    if [[ -n "$QSD_PID" ]]; then
        kill "$QSD_PID" 2>/dev/null || true
        wait "$QSD_PID" 2>/dev/null || true
        QSD_PID=""
    fi
    rm -f "$SOCK"
}
trap stop_qsd EXIT

start_qsd() { # writable(on|off) logfile
    local writable=$1 qlog=$2 ro=off
    [[ $writable == on ]] || ro=on
    rm -f "$SOCK" "$SOCK.pid"
    # discard=unmap: pass the guest's discards on to the file (punch holes). The pid file is written
    # once the export listens (qemu-storage-daemon(1)); the socket file exists a moment before that.
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=file0,filename=$IMG,discard=unmap,read-only=$ro" \
        --blockdev "driver=raw,node-name=disk0,file=file0,discard=unmap,read-only=$ro" \
        --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$SOCK,writable=$writable,num-queues=2" \
        --pidfile "$SOCK.pid" >"$qlog" 2>&1 &
    QSD_PID=$!
    for _ in $(seq 1 100); do
        [[ -s "$SOCK.pid" ]] && return 0
        kill -0 "$QSD_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$qlog" >&2 || true
    die "qemu-storage-daemon did not create $SOCK"
}

RUN_ARGS=(--timeout "$TIMEOUT")
[[ $QUIET -eq 0 ]] || RUN_ARGS+=(--quiet)

FAILED=()
SUMMARY=()
T_ALL=$(date +%s.%N)

boot() { # name jobs vcpus queues extra-append
    local name=$1 jobs=$2 vcpus=$3 queues=$4 extra=$5 out rc=0
    log "boot '$name': jobs $jobs ($vcpus vCPU, $queues queue(s))"
    out="$WORKDIR/$name.out"
    "$SCRIPT_DIR/run-guest.sh" --socket "$SOCK" --jobs "$jobs" --vcpus "$vcpus" --queues "$queues" \
        --log "$WORKDIR/$name.console.log" --extra-append "$extra" "${RUN_ARGS[@]}" 2>&1 |
        tee "$out" || rc=$?
    local b r
    b=$(sed -n 's/^BOOT-SECONDS //p' "$out")
    r=$(sed -n 's/^RUN-SECONDS //p' "$out")
    SUMMARY+=("boot '$name': to VBLK-BOOTED ${b:-?} s, whole run ${r:-?} s")
    [[ $rc -eq 0 ]] || FAILED+=("guest jobs of boot '$name'")
}

host_check() { # description command...
    local what=$1
    shift
    if "$@"; then
        log "host check ok: $what"
    else
        log "host check FAILED: $what"
        FAILED+=("host check: $what")
    fi
}

# Same generator as make_pattern in scripts/guest-init.
pattern() { # offset_mib size_mib
    awk -v first="$(($1 * 256))" -v n="$(($2 * 256))" 'BEGIN {
        for (b = 0; b < n; b++)
            for (r = 0; r < 128; r++)
                printf "VBLK-PATTERN-%08d-%09d\n", first + b, r
    }'
}
check_pattern() {
    cmp <(pattern 64 1) <(dd if="$IMG" bs=1M skip=64 count=1 status=none)
}
check_zeroes() { # offset_mib size_mib
    cmp <(head -c $(($2 * 1048576)) /dev/zero) <(dd if="$IMG" bs=1M skip="$1" count="$2" status=none)
}
check_fsck() {
    e2fsck -f -n "$IMG" >"$WORKDIR/e2fsck.out" 2>&1 || { cat "$WORKDIR/e2fsck.out"; return 1; }
}

log "work directory: $WORKDIR"
qemu-img create -q -f raw "$IMG" "${IMG_MIB}M"

start_qsd on "$WORKDIR/qsd-rw.log"
boot rw write-read,discard,fio,ext4 2 2 "vblk.discard_zeroes=1"
stop_qsd

host_check "pattern at 64 MiB" check_pattern
host_check "discarded [80,84) MiB reads as zeroes" check_zeroes 80 4
host_check "write-zeroed [84,88) MiB reads as zeroes" check_zeroes 84 4
host_check "e2fsck -fn of the ext4 filesystem" check_fsck

start_qsd off "$WORKDIR/qsd-ro.log"
boot ro readonly,read-pattern 1 1 ""
stop_qsd

TOTAL=$(awk -v a="$T_ALL" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "================================================================"
for line in "${SUMMARY[@]}"; do
    log "$line"
done
log "total: ${TOTAL} s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    for f in "${FAILED[@]}"; do log "failed: $f"; done
    die "${#FAILED[@]} check(s) failed; logs in $WORKDIR"
fi
log "all guest jobs and host checks passed"
if [[ $KEEP -eq 0 ]]; then
    rm -rf "$WORKDIR"
else
    log "kept $WORKDIR"
fi
