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

# libclang for bindgen (the V4L2 bindings, below).
DEPENDS += "clang-native"

# Where the daemon's source comes from (README.md, "Building a release"):
#  - ATTENDANCE_SRCREV unset (development): the checkout this layer lives in
#    (ATTENDANCE_TOPDIR), through externalsrc; rebuilt when one of the
#    daemon's own source files changes, never sstate-cached;
#  - ATTENDANCE_SRCREV = "<full commit id>" (release): that commit fetched
#    with git from ATTENDANCE_GIT_URL (by default this same checkout's
#    repository), cached in sstate and reproducible.
ATTENDANCE_SRCREV ??= ""
ATTENDANCE_GIT_URL ??= "git://${ATTENDANCE_TOPDIR};protocol=file"
ATTENDANCE_GIT_BRANCH ??= "main"
SRC_URI = "${@'${ATTENDANCE_GIT_URL};branch=${ATTENDANCE_GIT_BRANCH}' if d.getVar('ATTENDANCE_SRCREV') else ''}"
SRCREV = "${@d.getVar('ATTENDANCE_SRCREV') or 'INVALID'}"
S = "${@'${UNPACKDIR}/${BB_GIT_DEFAULT_DESTSUFFIX}' if d.getVar('ATTENDANCE_SRCREV') else '${ATTENDANCE_TOPDIR}'}"

# A plain (not deferred) inherit: externalsrc's anonymous function must run
# before this recipe's own, which narrows what do_compile hashes.
# nooelint: oelint.var.inherit.inherit_defer
inherit ${@'' if d.getVar('ATTENDANCE_SRCREV') else 'externalsrc'}
EXTERNALSRC = "${@'' if d.getVar('ATTENDANCE_SRCREV') else d.getVar('ATTENDANCE_TOPDIR')}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"

inherit cargo cargo-update-recipe-crates useradd

# crates.io dependencies, generated from Cargo.lock by
# meta-attendance/scripts/update-crates-inc (same content as
# `bitbake -c update_crates attendance`).
require ${BPN}-crates.inc

# externalsrc would hash every file under ATTENDANCE_TOPDIR for do_compile,
# and a kas work directory inside the checkout (build/, the layer checkouts,
# downloads, sstate) is part of that tree: every build would rebuild the
# daemon, the image and the bundle. The daemon's inputs are exactly these.
ATTENDANCE_CARGO_INPUTS = "Cargo.toml Cargo.lock build.rs .cargo src"

def attendance_cargo_checksums(d):
    import os
    top = d.getVar('S')
    out = []
    for rel in d.getVar('ATTENDANCE_CARGO_INPUTS').split():
        path = os.path.join(top, rel)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                out += ['%s:True' % os.path.join(root, f) for f in sorted(files)]
        else:
            out.append('%s:%s' % (path, os.path.exists(path)))
    return ' '.join(out)

# nooelint: oelint.task.noanonpython
python __anonymous() {
    if d.getVar('EXTERNALSRC'):
        # After externalsrc's own anonymous function, which set the whole tree.
        d.setVarFlag('do_compile', 'file-checksums', '${@attendance_cargo_checksums(d)}')
}

# `bitbake -c update_crates attendance` reads every Cargo.lock below
# CARGO_LOCK_SRC_DIR: give it the daemon's only, not those of a kas work tree
# or of fuzz/ inside the checkout.
CARGO_LOCK_SRC_DIR = "${WORKDIR}/cargo-lock"
python attendance_cargo_lock_only() {
    import shutil
    bb.utils.remove(d.getVar('CARGO_LOCK_SRC_DIR'), recurse=True)
    bb.utils.mkdirhier(d.getVar('CARGO_LOCK_SRC_DIR'))
    shutil.copy(os.path.join(d.getVar('S'), 'Cargo.lock'), d.getVar('CARGO_LOCK_SRC_DIR'))
}
attendance_cargo_lock_only[doc] = "Gives update_crates the daemon's Cargo.lock alone"
do_update_crates[prefuncs] += "attendance_cargo_lock_only"

# The camera's V4L2 bindings (v4l2-sys-mit) run bindgen in their build
# script, which loads libclang: clang-native's, pointed at the target sysroot
# the way oe-core's meson class passes bindgen its arguments (README.md,
# "V4L2 bindings").
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "${HOST_CC_ARCH}${TOOLCHAIN_OPTIONS} --target=${TARGET_SYS}"

# Only the product binary (not benchmarks or helper binaries).
CARGO_BUILD_FLAGS:append = " --bin attendance"

# The user must exist at build time: the root file system is read-only, so
# systemd-sysusers cannot add it on the device. Same fields as the sysusers.d
# file that attendance-image-config installs.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir / --no-create-home --shell ${sbindir}/nologin \
                       --user-group --groups video,input --comment 'Attendance kiosk daemon' attendance"

# The units, the update policy (mark-good), sysusers/tmpfiles/modules-load
# files and /etc/attendance/config.json come from image-config/rootfs, all
# of them in attendance-image-config (one place for every file of that tree).
RDEPENDS:${PN} = "attendance-image-config rauc"

COMPATIBLE_HOST = ".*-linux.*"
