# A/B boot counting for RAUC: files/boot.cmd.in replaces meta-raspberrypi's
# in the attendance distro.
FILESEXTRAPATHS:prepend:attendance := "${THISDIR}/files:"
