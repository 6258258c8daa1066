SUMMARY = "Attendance kiosk product image"
DESCRIPTION = "Read-only root file system with the attendance daemon, RAUC \
               A/B updates, a hardware watchdog and a separate writable \
               data partition."
SECTION = "images"
LICENSE = "MIT"
# An image recipe of this layer; oe-core's own images refer to the common
# licence text the same way.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

require attendance-image.inc

# No debug features, no empty or passwordless root login in the product image.
IMAGE_FEATURES = "read-only-rootfs"
