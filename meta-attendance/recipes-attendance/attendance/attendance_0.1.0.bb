SUMMARY = "Attendance kiosk daemon"
DESCRIPTION = "Turns QR scans into durable attendance records, offline \
               first, with health, watchdog and RAUC mark-good integration."
SECTION = "console/utils"
CVE_PRODUCT = "attendance"
LICENSE = "Apache-2.0"
# The repository carries no licence file of its own (Cargo.toml names the
# SPDX id), so the common licence text is the reference.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The daemon is built from the repository this layer lives in (see
# ATTENDANCE_TOPDIR in conf/layer.conf). A release build can instead point
# SRC_URI at a tagged git revision (README.md, "Building a release").
inherit externalsrc
EXTERNALSRC = "${ATTENDANCE_TOPDIR}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"

inherit cargo cargo-update-recipe-crates systemd useradd

# crates.io dependencies, generated from Cargo.lock by
# meta-attendance/scripts/update-crates-inc (same content as
# `bitbake -c update_crates attendance`).
require ${BPN}-crates.inc

# The camera's V4L2 bindings (v4l2-sys-mit) run bindgen in their build
# script, which loads libclang; point it at clang-native and at the target
# sysroot the way oe-core's meson class does for bindgen.
DEPENDS += "clang-native"
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "${HOST_CC_ARCH}${TOOLCHAIN_OPTIONS} --target=${TARGET_SYS}"

# Only the product binary (not benchmarks or helper binaries).
CARGO_BUILD_FLAGS:append = " --bin attendance"

IMAGE_CONFIG = "${S}/image-config/rootfs"
ATTENDANCE_DEFAULT_CONFIG ?= "${S}/image-config/config.json"

# The user must exist at build time: the root file system is read-only, so
# systemd-sysusers cannot add it on the device. Same fields as sysusers.d.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir / --no-create-home --shell ${sbindir}/nologin \
                       --user-group --groups video,input --comment 'Attendance kiosk daemon' attendance"

SYSTEMD_SERVICE:${PN} = "attendance.service attendance-mark-good.service attendance-ota.service"
SYSTEMD_AUTO_ENABLE = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysusersdir} ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/systemd/system/attendance.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/systemd/system/attendance-mark-good.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/systemd/system/attendance-ota.service ${D}${systemd_system_unitdir}/
    # The update policy that unit runs (mark good, or reboot a new release
    # that never gets healthy so the bootloader falls back).
    install -d ${D}${libexecdir}/attendance
    install -m 0755 ${IMAGE_CONFIG}/usr/libexec/attendance/mark-good ${D}${libexecdir}/attendance/
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/sysusers.d/attendance.conf ${D}${sysusersdir}/attendance.conf
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/tmpfiles.d/attendance.conf ${D}${nonarch_libdir}/tmpfiles.d/attendance.conf
    # V4L2 and evdev registered before the daemon's device cgroup is built.
    install -d ${D}${nonarch_libdir}/modules-load.d
    install -m 0644 ${IMAGE_CONFIG}/usr/lib/modules-load.d/attendance.conf ${D}${nonarch_libdir}/modules-load.d/attendance.conf

    # Image-level defaults, the read-only layer of the configuration.
    install -d ${D}${sysconfdir}/attendance
    if [ -f ${ATTENDANCE_DEFAULT_CONFIG} ]; then
        install -m 0644 ${ATTENDANCE_DEFAULT_CONFIG} ${D}${sysconfdir}/attendance/config.json
    else
        bbwarn "No ${ATTENDANCE_DEFAULT_CONFIG}: the image runs on the daemon's built-in defaults"
    fi
}

FILES:${PN} += "${sysusersdir}/attendance.conf ${nonarch_libdir}/tmpfiles.d/attendance.conf \
                ${nonarch_libdir}/modules-load.d/attendance.conf \
                ${libexecdir}/attendance/mark-good"

RDEPENDS:${PN} = "rauc"

COMPATIBLE_HOST = ".*-linux.*"
