SUMMARY = "Signed RAUC update bundle of the attendance kiosk image"
DESCRIPTION = "verity-format RAUC bundle with the attendance-image root \
               file system for the rootfs A/B slots."
SECTION = "images"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit bundle

RAUC_BUNDLE_COMPATIBLE = "${ATTENDANCE_RAUC_COMPATIBLE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "Attendance kiosk firmware ${DISTRO_VERSION} for ${MACHINE}"

# dm-verity protected bundles only; the devices refuse plain bundles.
RAUC_BUNDLE_FORMAT = "verity"

RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "attendance-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
RAUC_SLOT_rootfs[adaptive] = "block-hash-index"

# Signing material: development keys by default (ota/make-dev-keys);
# production builds point ATTENDANCE_KEYS_DIR or the three files at the
# release key and certificate (README.md, "Keys").
RAUC_KEY_FILE = "${ATTENDANCE_RAUC_KEY_FILE}"
RAUC_CERT_FILE = "${ATTENDANCE_RAUC_CERT_FILE}"
RAUC_KEYRING_FILE = "${ATTENDANCE_RAUC_KEYRING_FILE}"

python attendance_check_keys() {
    import os
    for var in ("ATTENDANCE_RAUC_KEY_FILE", "ATTENDANCE_RAUC_CERT_FILE", "ATTENDANCE_RAUC_KEYRING_FILE"):
        path = d.getVar(var)
        if not path or not os.path.isfile(path):
            bb.fatal("%s (%s) does not exist: run ota/make-dev-keys for development keys, "
                     "or point it at the release key material" % (var, path))
}
attendance_check_keys[doc] = "Fails early with a clear message when the signing key, certificate or keyring is missing"
do_unpack[prefuncs] += "attendance_check_keys"

COMPATIBLE_MACHINE = "^(qemux86-64|raspberrypi4-64)$"
