# The root file system is chosen by the U-Boot script (root=PARTLABEL=...,
# rauc.slot=...); cmdline.txt must not name one.
CMDLINE_ROOTFS:attendance-os = "rootfstype=ext4 rootwait"
