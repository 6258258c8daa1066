# The i6300esb watchdog driver for systemd's RuntimeWatchdogSec (qemux86-64).
# meta-rauc already adds its rauc.cfg (loop, squashfs, dm-verity) when the
# "rauc" DISTRO_FEATURE is set.
FILESEXTRAPATHS:prepend:attendance-os := "${THISDIR}/files:"
SRC_URI:append:attendance-os:qemux86-64 = " file://attendance-watchdog.cfg"
