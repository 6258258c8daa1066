SUMMARY = "Runtime configuration of the attendance kiosk image"
DESCRIPTION = "Every file of the repository's image-config/rootfs directory \
               (shared with the QEMU test image): the daemon's units and \
               update policy, data partition mount and first-boot \
               preparation, persistent machine-id on a read-only root, \
               journald limits, the hardware watchdog, presets."
SECTION = "base"
LICENSE = "Apache-2.0"
# Files of this repository, which has no licence file of its own.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# image-config/ of the repository this layer lives in (conf/layer.conf):
# the files are shared with the QEMU test image, so they live outside the
# layer and FILESEXTRAPATHS is how the recipe finds them.
# nooelint: oelint.vars.fileextrapaths, oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${ATTENDANCE_TOPDIR}/image-config:"
SRC_URI = "file://rootfs;subdir=image-config"
S = "${UNPACKDIR}/image-config/rootfs"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# Hardware watchdog timeouts (system.conf.d drop-in); see README.md.
ATTENDANCE_RUNTIME_WATCHDOG_SEC ?= "15s"
ATTENDANCE_REBOOT_WATCHDOG_SEC ?= "2min"
# The image's /etc/attendance/config.json when image-config/rootfs has none.
ATTENDANCE_DEFAULT_CONFIG ?= "${ATTENDANCE_TOPDIR}/image-config/config.json"
do_install[file-checksums] += "${ATTENDANCE_DEFAULT_CONFIG}:${@os.path.exists(d.getVar('ATTENDANCE_DEFAULT_CONFIG'))}"

# image-config/rootfs is laid out as the device's file system, so the recipe
# copies all of it: a file added there (a unit, a network or time-sync
# configuration) is in the image with no change here. Which units start is
# decided by the presets in it (usr/lib/systemd/system-preset/), which
# oe-core applies when it makes the root file system (systemctl preset-all).
# The list is made when the recipe is parsed, and every folder and file of
# the tree is a parse dependency, so adding, removing or changing one
# re-parses the recipe. (Anonymous python because only parse-time code can
# declare those dependencies.)
# nooelint: oelint.task.noanonpython
python __anonymous() {
    import os
    top = os.path.join(d.getVar('ATTENDANCE_TOPDIR'), 'image-config', 'rootfs')
    files = []
    for root, dirs, names in os.walk(top):
        dirs.sort()
        bb.parse.mark_dependency(d, root)
        for name in sorted(names):
            path = os.path.join(root, name)
            bb.parse.mark_dependency(d, path)
            files.append(os.path.relpath(path, top))
    if not files:
        bb.fatal("%s has no files: this recipe needs the repository's image-config/" % top)
    d.setVar('ATTENDANCE_ROOTFS_FILES', ' '.join(files))
}

do_install() {
    for f in ${ATTENDANCE_ROOTFS_FILES}; do
        if [ -L ${S}/$f ]; then
            install -d $(dirname ${D}/$f)
            ln -sfn "$(readlink ${S}/$f)" ${D}/$f
        elif [ -x ${S}/$f ]; then
            install -D -m 0755 ${S}/$f ${D}/$f
        else
            install -D -m 0644 ${S}/$f ${D}/$f
        fi
    done

    sed -i -e 's/^RuntimeWatchdogSec=.*/RuntimeWatchdogSec=${ATTENDANCE_RUNTIME_WATCHDOG_SEC}/' \
        -e 's/^RebootWatchdogSec=.*/RebootWatchdogSec=${ATTENDANCE_REBOOT_WATCHDOG_SEC}/' \
        ${D}${systemd_unitdir}/system.conf.d/10-attendance-watchdog.conf

    if [ ! -e ${D}${sysconfdir}/attendance/config.json ]; then
        if [ -f ${ATTENDANCE_DEFAULT_CONFIG} ]; then
            install -D -m 0644 ${ATTENDANCE_DEFAULT_CONFIG} ${D}${sysconfdir}/attendance/config.json
        else
            bbwarn "No ${ATTENDANCE_DEFAULT_CONFIG}: the image runs on the daemon's built-in defaults"
        fi
    fi

    # Mount points on the read-only root.
    install -d ${D}/data ${D}/boot
}

# One package with all of it (configuration only, nothing to split off).
PACKAGES = "${PN}"
FILES:${PN} += "${prefix} /data /boot"

RDEPENDS:${PN} = "e2fsprogs-e2fsck e2fsprogs-mke2fs e2fsprogs-resize2fs \
                  util-linux-blkid util-linux-mount util-linux-partx util-linux-sfdisk"

COMPATIBLE_HOST = ".*-linux.*"
