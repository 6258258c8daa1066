# Bootloader environment tools RAUC needs on each target (meta-rauc derives
# them from PREFERRED_PROVIDER_virtual/bootloader, which qemux86-64 leaves
# unset because GRUB comes in as the EFI provider).
RAUC_BOOTLOADER_RDEPENDS:attendance-os:qemux86-64 = "grub-editenv"
RAUC_BOOTLOADER_RDEPENDS:attendance-os:raspberrypi4-64 = "u-boot-fw-utils"

# The health-gated attendance-mark-good.service replaces RAUC's unconditional
# rauc-mark-good.service: do not pull it into the attendance-os images.
RRECOMMENDS:${PN}:remove:attendance-os = "${PN}-mark-good"
