# RAUC (verity bundles) and the bcm2835 hardware watchdog.
FILESEXTRAPATHS:prepend:attendance := "${THISDIR}/files:"
SRC_URI:append:attendance = " file://attendance.cfg"
