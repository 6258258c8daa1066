# Redundant U-Boot environment in the gap before the first partition instead
# of meta-raspberrypi's single uboot.env file on the FAT partition: the boot
# script writes the environment on every boot (RAUC boot counting), and a
# power cut during that write must not bring back the default environment.
FILESEXTRAPATHS:prepend:attendance-os := "${THISDIR}/files:"
SRC_URI:append:attendance-os = " file://attendance-env.cfg file://attendance-fw_env.config"

# meta-raspberrypi's u-boot_%.bbappend installs its own fw_env.config
# (/boot/uboot.env); the tools must use the same two copies as U-Boot.
do_install:append:attendance-os() {
    install -m 0644 ${UNPACKDIR}/attendance-fw_env.config ${D}${sysconfdir}/fw_env.config
}
