# A/B boot counting for RAUC: files/boot.cmd.in replaces meta-raspberrypi's
# in the attendance-os distro.
FILESEXTRAPATHS:prepend:attendance-os := "${THISDIR}/files:"
