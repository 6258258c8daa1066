# System configuration and keyring for RAUC: image-config/targets/<machine>/
# etc/rauc/system.conf from the repository (shared with the QEMU test image)
# and the configured keyring (ATTENDANCE_RAUC_KEYRING_FILE, see README.md).
# Applies only to the attendance-os distro.
FILESEXTRAPATHS:prepend:attendance-os := "${ATTENDANCE_TOPDIR}/image-config/targets/${MACHINE}/etc/rauc:"

# The keyring is not fetched: it is read from ATTENDANCE_RAUC_KEYRING_FILE,
# which lives outside the layer (and outside git for release keys).
RAUC_KEYRING_URI:attendance-os = ""
do_install[file-checksums] += "${@'${ATTENDANCE_RAUC_KEYRING_FILE}:True' if d.getVar('ATTENDANCE_RAUC_KEYRING_FILE') else ''}"

do_install:attendance-os() {
    if [ ! -f "${ATTENDANCE_RAUC_KEYRING_FILE}" ]; then
        bbfatal "RAUC keyring ${ATTENDANCE_RAUC_KEYRING_FILE} not found: run ota/make-dev-keys or set ATTENDANCE_RAUC_KEYRING_FILE"
    fi
    install -d ${D}${sysconfdir}/rauc
    install -m 0644 ${UNPACKDIR}/system.conf ${D}${sysconfdir}/rauc/system.conf
    sed -i 's/^compatible=.*/compatible=${ATTENDANCE_RAUC_COMPATIBLE}/' ${D}${sysconfdir}/rauc/system.conf
    install -m 0644 ${ATTENDANCE_RAUC_KEYRING_FILE} ${D}${sysconfdir}/rauc/keyring.pem
}

PACKAGE_ARCH:attendance-os = "${MACHINE_ARCH}"
FILES:${PN}:append:attendance-os = " ${sysconfdir}/rauc"
