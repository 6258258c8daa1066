SUMMARY = "EFI system partition image for the qemux86-64 attendance image"
DESCRIPTION = "FAT image with GRUB (EFI/BOOT/bootx64.efi), the A/B \
               grub.cfg and the initial RAUC GRUB environment; wic copies \
               it into the boot partition."
SECTION = "bootloaders"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit deploy nopackages

DEPENDS += "dosfstools-native mtools-native"
do_deploy[depends] += "grub-efi:do_deploy attendance-grub-conf:do_deploy"

do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"

# Size of the FAT file system in KiB; the boot partition (wic) is 128 MiB.
ATTENDANCE_ESP_KIB ?= "65536"

do_deploy() {
    esp=${B}/esp
    rm -rf $esp ${B}/attendance-efi-boot.vfat
    install -d $esp/EFI/BOOT
    install -m 0644 ${DEPLOY_DIR_IMAGE}/grub-efi-bootx64.efi $esp/EFI/BOOT/bootx64.efi
    install -m 0644 ${DEPLOY_DIR_IMAGE}/attendance-grub.cfg $esp/EFI/BOOT/grub.cfg
    install -m 0644 ${DEPLOY_DIR_IMAGE}/attendance-grubenv $esp/EFI/BOOT/grubenv

    mkfs.vfat -n BOOT -S 512 -C ${B}/attendance-efi-boot.vfat ${ATTENDANCE_ESP_KIB}
    mcopy -i ${B}/attendance-efi-boot.vfat -s $esp/EFI ::/
    install -m 0644 ${B}/attendance-efi-boot.vfat ${DEPLOYDIR}/attendance-efi-boot.vfat
}
addtask deploy after do_install before do_build

COMPATIBLE_MACHINE = "^qemux86-64$"
