# Hardware watchdog drivers for systemd's RuntimeWatchdogSec (x86 targets).
# meta-rauc already adds its rauc.cfg (loop, squashfs, dm-verity) when the
# "rauc" DISTRO_FEATURE is set.
FILESEXTRAPATHS:prepend:attendance-os := "${THISDIR}/files:"
SRC_URI:append:attendance-os:qemux86-64 = " file://attendance-watchdog.cfg"
