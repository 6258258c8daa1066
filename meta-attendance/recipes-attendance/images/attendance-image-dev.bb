SUMMARY = "Attendance kiosk development image (NOT for production)"
DESCRIPTION = "The product image plus root login without a password, an \
               SSH server and debugging tools. Never ship it: anyone on the \
               network gets root."
SECTION = "images"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

require attendance-image.inc

# Deliberately insecure: this image exists for debugging on the bench.
# nooelint: oelint.var.badimagefeature.allow-empty-password, oelint.var.badimagefeature.allow-root-login, oelint.var.badimagefeature.empty-root-password, oelint.var.badimagefeature.tools-debug
IMAGE_FEATURES = "read-only-rootfs allow-empty-password allow-root-login empty-root-password ssh-server-dropbear tools-debug"
IMAGE_INSTALL:append = " sqlite3 strace"
