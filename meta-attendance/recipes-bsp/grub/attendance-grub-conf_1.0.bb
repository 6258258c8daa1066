SUMMARY = "GRUB configuration with RAUC A/B slot selection"
DESCRIPTION = "grub.cfg that boots rootfs_a or rootfs_b following the \
               RAUC GRUB environment (ORDER, A_OK/B_OK, A_TRY/B_TRY), and \
               the initial environment."
SECTION = "bootloaders"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

DEPENDS = "grub-native"

SRC_URI = "file://attendance-grub.cfg"
S = "${UNPACKDIR}"

inherit deploy nopackages

do_configure[noexec] = "1"

do_compile() {
    # Initial environment: slot A good and first, slot B not yet installed.
    rm -f ${B}/grubenv
    grub-editenv ${B}/grubenv create
    grub-editenv ${B}/grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
}

do_install[noexec] = "1"

do_deploy() {
    install -m 0644 ${UNPACKDIR}/attendance-grub.cfg ${DEPLOYDIR}/attendance-grub.cfg
    install -m 0644 ${B}/grubenv ${DEPLOYDIR}/attendance-grubenv
}
addtask deploy after do_compile before do_build

COMPATIBLE_HOST = "(x86_64|i.86).*-linux"
