# RAUC (verity bundles) and the bcm2835 hardware watchdog.
FILESEXTRAPATHS:prepend:attendance-os := "${THISDIR}/files:"
SRC_URI:append:attendance-os = " file://attendance.cfg"
