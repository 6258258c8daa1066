# Modules attendance-grub.cfg needs on top of oe-core's built-in set:
# regexp (derive the disk from $root), echo, and gzio for compressed kernels.
GRUB_BUILDIN:append:attendance-os = " regexp echo gzio"
