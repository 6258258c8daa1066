#!/bin/sh
# Install the attendance image configuration into a root file system tree.
#
#   image-config/install.sh DESTDIR TARGET
#
# TARGET is qemux86-64 or raspberrypi4-64 (selects /etc/rauc/system.conf).
# Copies rootfs/ (common to all targets) and targets/TARGET/ into DESTDIR with
# fixed modes, then enables the units listed in the preset file by creating
# the same symlinks `systemctl enable` would. The Yocto recipes install the
# same files with the same modes; the QEMU test image calls this script.
# It does not install /usr/bin/attendance nor /etc/attendance/config.json.
set -eu

usage() { echo "usage: $0 DESTDIR qemux86-64|raspberrypi4-64" >&2; exit 2; }
[ $# -eq 2 ] || usage
dest="$1"
target="$2"
here="$(cd "$(dirname "$0")" && pwd)"
[ -d "$here/targets/$target" ] || { echo "unknown target '$target'" >&2; usage; }
[ -d "$dest" ] || { echo "DESTDIR '$dest' does not exist" >&2; exit 1; }

install_tree() {
    src="$1"
    (cd "$src" && find . -type f) | sort | while read -r f; do
        f="${f#./}"
        case "$f" in
            usr/libexec/*) mode=0755 ;;
            *) mode=0644 ;;
        esac
        install -D -m "$mode" "$src/$f" "$dest/$f"
    done
}

install_tree "$here/rootfs"
install_tree "$here/targets/$target"

# Enable units as `systemctl --root=DESTDIR preset` would, without needing
# systemctl on the build host: one symlink per [Install] WantedBy= target.
unitdir="$dest/usr/lib/systemd/system"
grep -E '^enable ' "$here/rootfs/usr/lib/systemd/system-preset/80-attendance.preset" | while read -r _ unit; do
    [ -f "$unitdir/$unit" ] || continue   # units shipped by other packages
    sed -n 's/^WantedBy=//p' "$unitdir/$unit" | tr ' ' '\n' | while read -r wanted; do
        [ -n "$wanted" ] || continue
        mkdir -p "$dest/etc/systemd/system/$wanted.wants"
        ln -sf "/usr/lib/systemd/system/$unit" "$dest/etc/systemd/system/$wanted.wants/$unit"
    done
done
grep -E '^disable ' "$here/rootfs/usr/lib/systemd/system-preset/80-attendance.preset" | while read -r _ unit; do
    rm -f "$dest"/etc/systemd/system/*.wants/"$unit"
done
# Mount point for the data partition, and the read-only root's empty
# machine-id (systemd then uses a transient one until attendance-machine-id).
mkdir -p "$dest/data" "$dest/boot" "$dest/etc/attendance"
[ -s "$dest/etc/machine-id" ] || : > "$dest/etc/machine-id"
echo "image-config installed into $dest for $target"
