#!/usr/bin/env bash
# Boot the test guest under QEMU (TCG) against a vhost-user-blk back-end that
# is already listening on a unix socket, run jobs in the guest, report verdicts.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

SOCKET=""
JOBS=""
VCPUS=2
MEM=512
QUEUES=""
PACKED=""
TIMEOUT=300
LOG=""
EXTRA_APPEND=""
GUEST_DIR="$REPO_ROOT/.cache/guest"
QUIET=0
RECONNECT=0

usage() {
    cat <<'EOF'
Usage: scripts/run-guest.sh --socket PATH --jobs LIST [options]

Boots the test guest (scripts/build-guest.sh, built on demand) with
qemu-system-x86_64 under TCG, with a vhost-user-blk-pci disk connected to the
back-end listening on PATH, runs the comma-separated guest jobs and prints one
verdict per job.  Exit status 0 only if every job passed.

  --socket PATH        vhost-user-blk back-end socket (must already exist)
  --jobs LIST          guest jobs, e.g. write-read,discard,fio,ext4
                       (write-read read-pattern ext4 discard fio readonly packed resize
                        fio-randread-qd1 fio-randread-qd32 fio-randwrite-qd32
                        fio-seqread-qd8; see scripts/guest-init)
  --vcpus N            guest vCPUs (default 2)
  --mem MiB            guest RAM, shared memfd (default 512)
  --queues N           virtqueues of the disk (default: = vcpus)
  --packed             packed virtqueues (vhost-user-blk-pci packed=on)
  --timeout S          give up after S seconds (default 300)
  --log FILE           serial console log (default: a temp file, path printed)
  --extra-append STR   extra kernel command line (e.g. vblk.runtime=5)
  --guest-dir DIR      where the kernel and initramfs are (default .cache/guest)
  --reconnect          QEMU reconnects to the socket when the back-end goes
                       away (reconnect=1), as for a back-end that restarts
  --quiet              do not echo the console while the guest runs
  -h, --help           show this help

Summary lines printed at the end (stable, for other scripts):
  RESULT <job> PASS|FAIL [reason]
  BOOT-SECONDS <s>      host time from QEMU start to the guest's VBLK-BOOTED
  RUN-SECONDS <s>       host time from QEMU start to QEMU exit
EOF
}

log() { printf '[run-guest] %s\n' "$*"; }
die() { printf '[run-guest] ERROR: %s\n' "$*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --socket|--jobs|--vcpus|--mem|--queues|--timeout|--log|--extra-append|--guest-dir)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case "$1" in
                --socket) SOCKET=$2 ;;
                --jobs) JOBS=$2 ;;
                --vcpus) VCPUS=$2 ;;
                --mem) MEM=$2 ;;
                --queues) QUEUES=$2 ;;
                --timeout) TIMEOUT=$2 ;;
                --log) LOG=$2 ;;
                --extra-append) EXTRA_APPEND=$2 ;;
                --guest-dir) GUEST_DIR=$2 ;;
            esac
            shift 2 ;;
        --quiet) QUIET=1; shift ;;
        --reconnect) RECONNECT=1; shift ;;
        --packed) PACKED=",packed=on"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ -n "$SOCKET" ]] || die "--socket is required (see --help)"
[[ -n "$JOBS" ]] || die "--jobs is required (see --help)"
[[ -S "$SOCKET" ]] || die "no unix socket at $SOCKET (start the back-end first)"
for v in VCPUS MEM TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "--${v,,} must be a positive integer"
done
QUEUES=${QUEUES:-$VCPUS}
[[ $QUEUES =~ ^[0-9]+$ && $QUEUES -gt 0 ]] || die "--queues must be a positive integer"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

"$SCRIPT_DIR/build-guest.sh" --out "$GUEST_DIR" | sed 's/^/  /'
# Prefer the unpacked ELF kernel (PVH boot): the bzImage would spend seconds
# decompressing itself under TCG.
KERNEL="$GUEST_DIR/vmlinux"
[[ -s "$KERNEL" ]] || KERNEL="$GUEST_DIR/vmlinuz"
INITRD="$GUEST_DIR/initramfs.cpio"
[[ -s "$KERNEL" && -s "$INITRD" ]] || die "guest images missing in $GUEST_DIR"

if [[ -z "$LOG" ]]; then
    LOG=$(mktemp "${TMPDIR:-/tmp}/vblk-guest.XXXXXX.log")
fi
: >"$LOG"
QEMU_ERR="$LOG.qemu-stderr"
: >"$QEMU_ERR"

# no_timer_check: on a busy host TCG can starve the kernel's early IO-APIC timer check, which
# then panics ("IO-APIC + timer doesn't work") before the guest runs anything.
APPEND="console=ttyS0 quiet panic=-1 no_timer_check vblk.jobs=$JOBS"
[[ -z "$EXTRA_APPEND" ]] || APPEND="$APPEND $EXTRA_APPEND"

# TCG on purpose: the KVM offered on some hosts cannot boot stock Debian
# kernels, and TCG behaves the same everywhere.
# shellcheck disable=SC2054  # commas are QEMU option syntax
QEMU_CMD=(
    qemu-system-x86_64
    -accel tcg -cpu max
    -machine q35
    -smp "$VCPUS"
    -m "${MEM}M"
    -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on"
    -numa node,memdev=mem
    -nodefaults -nographic -no-reboot
    -serial "file:$LOG"
    -kernel "$KERNEL" -initrd "$INITRD"
    -append "$APPEND"
    -chardev "socket,id=vblk0,path=$SOCKET$([[ $RECONNECT -eq 0 ]] || echo ,reconnect=1)"
    -device "vhost-user-blk-pci,chardev=vblk0,num-queues=$QUEUES$PACKED"
)

QEMU_PID=""
TAIL_PID=""
# shellcheck disable=SC2317  # called through trap
cleanup() {
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        sleep 0.5
        kill -9 "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n "$TAIL_PID" ]]; then
        kill "$TAIL_PID" 2>/dev/null || true
        wait "$TAIL_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "accelerator: TCG (software emulation), $VCPUS vCPU(s), ${MEM} MiB shared memfd RAM, $QUEUES queue(s)"
log "socket: $SOCKET"
log "jobs: $JOBS"
log "console log: $LOG"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

T0=$(now)
"${QEMU_CMD[@]}" </dev/null >"$QEMU_ERR" 2>&1 &
QEMU_PID=$!

if [[ $QUIET -eq 0 ]]; then
    # tail ends by itself when QEMU does.
    tail -n +1 -F --pid="$QEMU_PID" "$LOG" 2>/dev/null | sed -u 's/\r$//; s/^/  | /' &
    TAIL_PID=$!
fi

BOOT_S=""
STATUS=running
while :; do
    if [[ -z "$BOOT_S" ]] && grep -q 'VBLK-BOOTED' "$LOG"; then
        BOOT_S=$(elapsed "$T0")
    fi
    if grep -q 'VBLK-ALL-DONE' "$LOG"; then
        STATUS=finished
        break
    fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
        STATUS=exited
        break
    fi
    if awk -v a="$T0" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
        STATUS=timeout
        break
    fi
    sleep 0.2
done

# The guest powers off after VBLK-ALL-DONE; give QEMU a moment to exit.
if [[ $STATUS == finished ]]; then
    for _ in $(seq 1 50); do
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.2
    done
fi
if kill -0 "$QEMU_PID" 2>/dev/null; then
    [[ $STATUS == finished ]] || log "stopping QEMU ($STATUS)"
    kill "$QEMU_PID" 2>/dev/null || true
    sleep 1
    kill -9 "$QEMU_PID" 2>/dev/null || true
fi
QEMU_RC=0
wait "$QEMU_PID" 2>/dev/null || QEMU_RC=$?
QEMU_PID=""
RUN_S=$(elapsed "$T0")
sleep 0.3   # let tail print the last lines
if [[ -n "$TAIL_PID" ]]; then
    kill "$TAIL_PID" 2>/dev/null || true
    wait "$TAIL_PID" 2>/dev/null || true
    TAIL_PID=""
fi

if [[ -s "$QEMU_ERR" ]]; then
    log "QEMU stderr:"
    sed 's/^/  ! /' "$QEMU_ERR"
fi

# ---------------------------------------------------------------- verdicts
CLEAN=$(tr -d '\r' <"$LOG")
ok=1
echo "----------------------------------------------------------------"
IFS=',' read -r -a JOB_LIST <<<"$JOBS"
for job in "${JOB_LIST[@]}"; do
    line=$(grep -E "^VBLK-JOB-END $job (PASS|FAIL)" <<<"$CLEAN" | tail -n1 || true)
    if [[ -z "$line" ]]; then
        echo "RESULT $job FAIL no-verdict"
        ok=0
    elif [[ $line == "VBLK-JOB-END $job PASS" ]]; then
        t=$(grep -E "^VBLK-JOB-TIME $job " <<<"$CLEAN" | tail -n1 | awk '{print $3}' || true)
        echo "RESULT $job PASS${t:+ (${t}s in guest)}"
    else
        echo "RESULT $job FAIL ${line#"VBLK-JOB-END $job FAIL "}"
        ok=0
    fi
done
echo "BOOT-SECONDS ${BOOT_S:-none}"
echo "RUN-SECONDS $RUN_S"
echo "----------------------------------------------------------------"

case $STATUS in
    finished) ;;
    exited) log "QEMU exited (status $QEMU_RC) before the guest finished; see $LOG"; ok=0 ;;
    timeout) log "timed out after ${TIMEOUT}s; see $LOG"; ok=0 ;;
esac
if [[ $ok -eq 1 ]]; then
    log "all jobs passed"
    exit 0
fi
printf '[run-guest] ERROR: %s\n' "some jobs failed or did not run; console log: $LOG" >&2
exit 1
