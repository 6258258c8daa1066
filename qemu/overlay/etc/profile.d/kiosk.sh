# Serial console: no pager, plain terminal.
export SYSTEMD_PAGER= PAGER=cat
