SUMMARY = "Runtime configuration of the attendance kiosk image"
DESCRIPTION = "Data partition mount and first-boot preparation, persistent \
               machine-id on a read-only root, journald limits and the \
               hardware watchdog, from the repository's image-config/ \
               directory (shared with the QEMU test image)."
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

inherit allarch systemd

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# Hardware watchdog timeouts (system.conf.d drop-in); see README.md.
ATTENDANCE_RUNTIME_WATCHDOG_SEC ?= "15s"
ATTENDANCE_REBOOT_WATCHDOG_SEC ?= "2min"

SYSTEMD_SERVICE:${PN} = "data.mount boot.mount attendance-machine-id.service"
SYSTEMD_AUTO_ENABLE = "enable"

do_install() {
    unitdir=${D}${systemd_system_unitdir}
    install -d $unitdir/systemd-journal-flush.service.d
    for f in data.mount boot.mount attendance-data-init.service attendance-machine-id.service; do
        install -m 0644 ${S}/usr/lib/systemd/system/$f $unitdir/
    done
    install -m 0644 ${S}/usr/lib/systemd/system/systemd-journal-flush.service.d/10-attendance-data.conf \
        $unitdir/systemd-journal-flush.service.d/

    install -d ${D}${systemd_unitdir}/system.conf.d ${D}${systemd_unitdir}/journald.conf.d \
        ${D}${systemd_unitdir}/system-preset
    install -m 0644 ${S}/usr/lib/systemd/system.conf.d/10-attendance-watchdog.conf \
        ${D}${systemd_unitdir}/system.conf.d/
    sed -i -e 's/^RuntimeWatchdogSec=.*/RuntimeWatchdogSec=${ATTENDANCE_RUNTIME_WATCHDOG_SEC}/' \
        -e 's/^RebootWatchdogSec=.*/RebootWatchdogSec=${ATTENDANCE_REBOOT_WATCHDOG_SEC}/' \
        ${D}${systemd_unitdir}/system.conf.d/10-attendance-watchdog.conf
    install -m 0644 ${S}/usr/lib/systemd/journald.conf.d/10-attendance.conf \
        ${D}${systemd_unitdir}/journald.conf.d/
    install -m 0644 ${S}/usr/lib/systemd/system-preset/80-attendance.preset \
        ${D}${systemd_unitdir}/system-preset/

    install -d ${D}${nonarch_libdir}/udev/rules.d
    install -m 0644 ${S}/usr/lib/udev/rules.d/70-attendance-leds.rules ${D}${nonarch_libdir}/udev/rules.d/

    install -d ${D}${libexecdir}/attendance
    install -m 0755 ${S}/usr/libexec/attendance/data-init ${D}${libexecdir}/attendance/
    install -m 0755 ${S}/usr/libexec/attendance/machine-id ${D}${libexecdir}/attendance/

    # Mount points on the read-only root.
    install -d ${D}/data ${D}/boot
}

FILES:${PN} += "${systemd_system_unitdir} ${systemd_unitdir}/system.conf.d \
                ${systemd_unitdir}/journald.conf.d ${systemd_unitdir}/system-preset \
                ${libexecdir}/attendance ${nonarch_libdir}/udev/rules.d /data /boot"

RDEPENDS:${PN} = "e2fsprogs-e2fsck e2fsprogs-mke2fs e2fsprogs-resize2fs \
                  util-linux-blkid util-linux-mount util-linux-partx util-linux-sfdisk"

COMPATIBLE_HOST = ".*-linux.*"
