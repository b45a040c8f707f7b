#!/usr/bin/env bash
# Build the test guest: a Debian kernel plus a small initramfs holding busybox,
# the virtio/ext4 modules, fio, e2fsprogs and blkdiscard, with scripts/guest-init
# as /init.  Everything comes from Debian packages.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
GUEST_INIT="$SCRIPT_DIR/guest-init"
OUT="$REPO_ROOT/.cache/guest"
FORCE=0

usage() {
    cat <<'EOF'
Usage: scripts/build-guest.sh [--out DIR] [--force]

Builds the virtio-blk test guest used by scripts/run-guest.sh.

  --out DIR   output directory (default: .cache/guest under the repo root)
  --force     rebuild even when the outputs are up to date
  -h, --help  show this help

Outputs in DIR:
  vmlinuz          the kernel of Debian's linux-image-amd64 (its versioned
                   dependency, downloaded with apt-get download, never installed)
  vmlinux          the same kernel unpacked (ELF with a PVH entry point); QEMU
                   boots it without the slow self-decompression under TCG
  initramfs.cpio   uncompressed newc initramfs (busybox, modules, fio,
                   mkfs.ext4/e2fsck, blkdiscard, /init from scripts/guest-init)
  kernel-release   the kernel's release string (uname -r)
  modules.order    the modules /init loads, in dependency order
  build-info       what went in (kernel package, modules, tool versions)

The build is skipped when the images and build-info exist and build-info is
newer than this script and scripts/guest-init.  The downloaded .deb is kept in
DIR/work/debs.  Missing host tools are installed with apt-get (needs root).
EOF
}

log() { printf '[build-guest] %s\n' "$*"; }
die() { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ -f "$GUEST_INIT" ]] || die "missing $GUEST_INIT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initramfs.cpio"

STAMP="$OUT/build-info"

up_to_date() {
    [[ -s "$KERNEL" && -s "$INITRD" && -s "$STAMP" ]] || return 1
    [[ "$STAMP" -nt "${BASH_SOURCE[0]}" && "$STAMP" -nt "$GUEST_INIT" ]] || return 1
}

if [[ $FORCE -eq 0 ]] && up_to_date; then
    log "up to date: $KERNEL, $INITRD"
    exit 0
fi

# One build at a time per output directory (parallel test runs share it).
exec 9>"$OUT/.lock"
if ! flock -n 9; then
    log "waiting for another build in $OUT"
    flock 9
fi
if [[ $FORCE -eq 0 ]] && up_to_date; then
    log "up to date (built meanwhile): $KERNEL, $INITRD"
    exit 0
fi

# ---------------------------------------------------------------- host tools
APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "running apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

# command -> Debian package providing it
declare -A TOOL_PKG=(
    [busybox]=busybox-static
    [fio]=fio
    [mke2fs]=e2fsprogs
    [e2fsck]=e2fsprogs
    [blkdiscard]=util-linux
    [qemu-system-x86_64]=qemu-system-x86
    [qemu-img]=qemu-utils
    [qemu-storage-daemon]=qemu-system-common
    [ldd]=libc-bin
    [dpkg]=dpkg
    [apt-get]=apt
)
missing=()
for tool in "${!TOOL_PKG[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${TOOL_PKG[$tool]}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing packages: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "${missing[@]}" >/dev/null; then
        apt_update_once
        apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    fi
fi

# ---------------------------------------------------------------- kernel
WORK="$OUT/work"
mkdir -p "$WORK/debs"

resolve_kernel_pkg() {
    apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
        sed -n 's/^Depends: //p' | tr ',' '\n' |
        grep -o 'linux-image-[0-9][^ ]*-amd64' | head -n1 || true
}

KPKG=$(resolve_kernel_pkg)
if [[ -z "$KPKG" ]]; then
    apt_update_once
    KPKG=$(resolve_kernel_pkg)
fi
[[ -n "$KPKG" ]] || die "cannot resolve the kernel package behind linux-image-amd64"
log "kernel package: $KPKG"

deb=$(find "$WORK/debs" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
if [[ -z "$deb" ]]; then
    log "downloading $KPKG (apt-get download)"
    # -o APT::Sandbox::User=root: the download dir need not be readable by _apt
    if ! (cd "$WORK/debs" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG"); then
        apt_update_once
        (cd "$WORK/debs" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG") ||
            die "apt-get download $KPKG failed"
    fi
    deb=$(find "$WORK/debs" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
    [[ -n "$deb" ]] || die "apt-get download produced no .deb for $KPKG"
else
    log "using cached $(basename "$deb")"
fi

KROOT="$WORK/kernel"
rm -rf "$KROOT"
mkdir -p "$KROOT"
log "extracting $(basename "$deb")"
dpkg -x "$deb" "$KROOT"
vmlinuz=$(find "$KROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[[ -n "$vmlinuz" ]] || die "no /boot/vmlinuz-* in $deb"
KREL=${vmlinuz##*/vmlinuz-}
MODDIR="$KROOT/lib/modules/$KREL"
[[ -d "$MODDIR" ]] || die "no modules directory for $KREL in $deb"
log "kernel release: $KREL"

# ---------------------------------------------------------------- modules
# Debian's amd64 kernel builds every virtio piece and ext4 as modules.  There
# is no depmod output in the package, so dependencies are read from each
# module's .modinfo section ("depends=a,b").  ext4 also needs a crc32c
# implementation at mount time, which it would normally get via modprobe.
WANTED_MODULES=(virtio_pci virtio_blk crc32c_generic ext4)

declare -A MOD_PATH=()
while IFS= read -r -d '' f; do
    name=${f##*/}
    name=${name%%.ko*}
    MOD_PATH[$name]=$f
    MOD_PATH[${name//-/_}]=$f
done < <(find "$MODDIR/kernel" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0)

MODTMP="$WORK/modtmp"
rm -rf "$MODTMP"
mkdir -p "$MODTMP"

# Produce an uncompressed copy of a module (busybox insmod wants plain ELF).
plain_module() {
    local name=$1 src=${MOD_PATH[$1]} dst="$MODTMP/$1.ko"
    if [[ ! -f "$dst" ]]; then
        case "$src" in
            *.ko) cp "$src" "$dst" ;;
            *.ko.xz) command -v xz >/dev/null || die "xz needed for $src (apt-get install xz-utils)"
                     xz -dc "$src" >"$dst" ;;
            *.ko.zst) command -v zstd >/dev/null || die "zstd needed for $src (apt-get install zstd)"
                      zstd -qdc "$src" >"$dst" ;;
            *.ko.gz) gzip -dc "$src" >"$dst" ;;
        esac
    fi
    printf '%s\n' "$dst"
}

module_depends() {
    local ko
    ko=$(plain_module "$1")
    # .modinfo is a list of NUL-terminated "key=value" strings.
    if command -v objcopy >/dev/null 2>&1; then
        objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout
    else
        cat "$ko"
    fi | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' '\n' | sed '/^$/d'
}

declare -A MOD_STATE=()
MOD_ORDER=()
visit_module() {
    local m=$1 dep
    [[ ${MOD_STATE[$m]:-} == visited ]] && return 0
    [[ ${MOD_STATE[$m]:-} == visiting ]] && die "module dependency cycle at $m"
    [[ -n ${MOD_PATH[$m]:-} ]] || die "module $m not found in $KPKG (built in? check config-$KREL)"
    MOD_STATE[$m]=visiting
    for dep in $(module_depends "$m"); do
        visit_module "${dep//-/_}"
    done
    MOD_STATE[$m]=visited
    MOD_ORDER+=("$m")
}
for m in "${WANTED_MODULES[@]}"; do
    visit_module "$m"
done
log "modules (load order): ${MOD_ORDER[*]}"

# ---------------------------------------------------------------- rootfs
ROOTFS="$WORK/rootfs"
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib64,etc,dev,proc,sys,tmp,mnt,run}

# Copy a host file to the same path inside the rootfs, following symlinks.
copy_host_file() {
    local src=$1 dst="$ROOTFS$1"
    [[ -e "$dst" ]] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
}

# Copy an executable and every shared library (and the loader) it needs.
copy_with_libs() {
    local bin=$1 lib deps
    copy_host_file "$bin"
    # Static binaries make ldd fail; that just means there is nothing to copy.
    deps=$(ldd "$bin" 2>/dev/null || true)
    [[ "$deps" != *"not found"* ]] || die "ldd reports missing libraries for $bin"
    # ldd prints "name => /path (addr)", or "/path (addr)" for the loader.
    while IFS= read -r lib; do
        [[ -n "$lib" ]] && copy_host_file "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$deps")
}

BUSYBOX=$(command -v busybox)
copy_with_libs "$BUSYBOX"
if [[ "$BUSYBOX" != /bin/busybox ]]; then
    cp -L "$BUSYBOX" "$ROOTFS/bin/busybox"
fi
for applet in $("$BUSYBOX" --list); do
    [[ -e "$ROOTFS/bin/$applet" ]] || ln -s busybox "$ROOTFS/bin/$applet"
done

tool_path() {
    local p
    p=$(command -v "$1" 2>/dev/null) || die "$1 not found on the host"
    # Resolve merged-/usr symlinks so the guest sees the binary under /usr.
    readlink -f "$p"
}
for tool in fio mke2fs e2fsck dumpe2fs blkdiscard; do
    copy_with_libs "$(tool_path "$tool")"
done
# mkfs.ext4 is mke2fs under another name (it picks the fs type from argv[0]).
MKE2FS=$(tool_path mke2fs)
ln -sf "$(basename "$MKE2FS")" "$ROOTFS$(dirname "$MKE2FS")/mkfs.ext4"
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$ROOTFS/etc/mke2fs.conf"

# A loader cache listing every directory that received a library, so the
# guest's loader finds them whatever its built-in search path is.
(cd "$ROOTFS" && find . -name '*.so*' -type f -printf '/%h\n' | sed 's|^/\./|/|' | sort -u) >"$ROOTFS/etc/ld.so.conf"
ldconfig -r "$ROOTFS" 2>/dev/null || log "note: ldconfig -r failed; relying on the loader's default paths"

: >"$ROOTFS/lib/modules/load-order"
for m in "${MOD_ORDER[@]}"; do
    cp "$MODTMP/$m.ko" "$ROOTFS/lib/modules/$m.ko"
    printf '%s\n' "$m" >>"$ROOTFS/lib/modules/load-order"
done
printf '%s\n' "$KREL" >"$ROOTFS/etc/kernel-release"

cp "$GUEST_INIT" "$ROOTFS/init"
chmod 0755 "$ROOTFS/init"

# The kernel opens /dev/console before running /init; /init mounts devtmpfs
# over /dev afterwards.  Without mknod rights /init still reopens the console.
mknod -m 600 "$ROOTFS/dev/console" c 5 1 2>/dev/null || log "note: cannot mknod /dev/console (continuing)"
mknod -m 666 "$ROOTFS/dev/null" c 1 3 2>/dev/null || true

# ---------------------------------------------------------------- vmlinux
# Under TCG the bzImage spends seconds decompressing itself.  Debian's kernel
# has a PVH entry point (CONFIG_PVH), so QEMU can boot the plain ELF vmlinux
# directly; unpack it here once.  The bzImage header (boot protocol >= 2.08)
# gives the offset and length of the compressed payload.
extract_vmlinux() { # bzImage out
    local bz=$1 out=$2 setup_sects payload_off payload_len off magic
    [[ "$(dd if="$bz" bs=1 skip=$((0x202)) count=4 2>/dev/null)" == HdrS ]] || return 1
    setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
    [[ $setup_sects -ne 0 ]] || setup_sects=4
    payload_off=$(od -An -tu4 -j $((0x248)) -N4 "$bz" | tr -d ' ')
    payload_len=$(od -An -tu4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
    off=$(((setup_sects + 1) * 512 + payload_off))
    magic=$(od -An -tx1 -j "$off" -N4 "$bz" | tr -d ' ')
    # shellcheck disable=SC2054  # the commas belong to dd's iflag
    local payload=(dd if="$bz" iflag=skip_bytes,count_bytes bs=1M skip="$off" count="$payload_len" status=none)
    case "$magic" in
        fd377a58) "${payload[@]}" | xz -dc --single-stream >"$out" ;;
        1f8b*) "${payload[@]}" | { gzip -dc 2>/dev/null || true; } >"$out" ;;
        28b52ffd) command -v zstd >/dev/null || return 1
                  "${payload[@]}" | zstd -qdc >"$out" ;;
        *) return 1 ;;
    esac || return 1
    [[ "$(od -An -tx1 -N4 "$out" | tr -d ' ')" == 7f454c46 ]]
}

VMLINUX="$OUT/vmlinux"
rm -f "$VMLINUX"
if grep -q '^CONFIG_PVH=y' "$KROOT/boot/config-$KREL" 2>/dev/null; then
    if extract_vmlinux "$vmlinuz" "$VMLINUX.tmp"; then
        mv "$VMLINUX.tmp" "$VMLINUX"
        log "vmlinux (PVH entry) extracted for a faster boot"
    else
        rm -f "$VMLINUX.tmp"
        log "note: could not extract vmlinux; the guest boots the bzImage"
    fi
fi

# ---------------------------------------------------------------- images
log "packing initramfs"
# Uncompressed: unpacking gzip under TCG costs seconds, a plain copy does not.
(cd "$ROOTFS" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$INITRD.tmp"
mv "$INITRD.tmp" "$INITRD"
cp "$vmlinuz" "$KERNEL.tmp"
mv "$KERNEL.tmp" "$KERNEL"
printf '%s\n' "$KREL" >"$OUT/kernel-release"
printf '%s\n' "${MOD_ORDER[@]}" >"$OUT/modules.order"
rm -rf "$MODTMP" "$KROOT" "$ROOTFS"
{
    echo "kernel_package=$KPKG"
    echo "kernel_deb=$(basename "$deb")"
    echo "kernel_release=$KREL"
    echo "modules=${MOD_ORDER[*]}"
    echo "fio=$(fio --version 2>/dev/null || true)"
    echo "busybox=$("$BUSYBOX" 2>/dev/null | head -n1 || true)"
} >"$STAMP"
log "kernel:    $KERNEL ($(du -h "$KERNEL" | cut -f1))"
[[ ! -f "$VMLINUX" ]] || log "vmlinux:   $VMLINUX ($(du -h "$VMLINUX" | cut -f1))"
log "initramfs: $INITRD ($(du -h "$INITRD" | cut -f1))"
log "done"
