"""Boot the kiosk QEMU image and talk to it: serial console, QMP, HTTP.

One `Machine` is one virtual kiosk with its own disk state (a fresh qcow2
overlay over qemu/build/disk.img) and its own UEFI variables (a copy of
OVMF_VARS). `start()` launches QEMU (TCG, q35, 2 vCPUs, 1 GiB, i6300esb,
virtio disk and net, hostfwd of a free 127.0.0.1 port to the guest's 8080);
`kill()` is a power cut; `start()` again boots the same disk.

Every reset of the guest (in-guest reboot, watchdog, QMP system_reset) ends
that QEMU (`-action reboot=shutdown`) and the harness at once powers on a new
one on the same disk and UEFI variables. OVMF's own warm reset under TCG took
2-40 s here, and once on CI never finished: the boot CPU spun in OVMF's MP
start-up waiting for the other vCPU (the hang edk2 PR #13164 describes). A
cold start boots the same way (firmware, GRUB's A/B counters on disk, the
slot), in 4-5 s of firmware. QMP events are kept per machine across QEMUs.

Every wait has a timeout; on timeout `VmTimeout` is raised with the tail of
the serial log, and the whole log stays in the machine's directory.
"""

from __future__ import annotations

import atexit
import calendar
import json
import queue
import re
import secrets
import shutil
import socket
import tempfile
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
ANSI = re.compile(rb"\x1b\[[0-9;?=]*[A-Za-z]")


_RUNNING: set = set()


@atexit.register
def _kill_leftovers():
    """Never leave a QEMU behind when the test process ends, however it ends."""
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()


class VmTimeout(AssertionError):
    pass


class VmError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Qmp:
    """QMP client: one command at a time. A reader thread appends events to
    `events` (the machine's list, which outlives this QEMU) as they arrive
    and hands replies to `execute`."""

    def __init__(self, path: Path, events: list, timeout: float = 30):
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.time() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.time() > deadline:
                    raise VmError(f"QMP socket {path} did not come up")
                time.sleep(0.1)
        self.timeout = timeout
        self.events = events
        self.closed = threading.Event()
        self._replies: queue.Queue = queue.Queue()
        self._cmd_lock = threading.Lock()
        self._file = self.sock.makefile("rb")
        if not self._file.readline():  # greeting
            raise VmError("QMP connection closed before the greeting")
        threading.Thread(target=self._read_loop, daemon=True).start()
        self.execute("qmp_capabilities")

    def _read_loop(self):
        try:
            for line in self._file:
                msg = json.loads(line)
                if "event" in msg:
                    self.events.append(msg)
                else:
                    self._replies.put(msg)
        except (OSError, ValueError):
            pass
        finally:
            self.closed.set()
            self._replies.put(None)

    def execute(self, cmd: str, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        with self._cmd_lock:
            if self.closed.is_set():
                raise VmError(f"QMP {cmd}: connection closed")
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            try:
                reply = self._replies.get(timeout=self.timeout)
            except queue.Empty:
                raise VmError(f"QMP {cmd}: no reply in {self.timeout:.0f} s") from None
        if reply is None:
            raise VmError(f"QMP {cmd}: connection closed")
        if "error" in reply:
            raise VmError(f"QMP {cmd}: {reply['error']}")
        return reply.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# SHUTDOWN reasons that mean "reset", which QEMU turns into an exit under
# -action reboot=shutdown (watchdog=reset and system_reset included).
RESET_REASONS = ("guest-reset", "host-qmp-system-reset")


def _scanner_keys() -> dict[str, tuple[bool, str]]:
    keys = {c: (False, c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"}
    keys.update({c.upper(): (True, c) for c in "abcdefghijklmnopqrstuvwxyz"})
    for plain, shifted, qcode in [("-", "_", "minus"), ("=", "+", "equal"), (";", ":", "semicolon"),
                                  ("'", '"', "apostrophe"), (",", "<", "comma"), (".", ">", "dot"),
                                  ("/", "?", "slash"), ("[", "{", "bracket_left"),
                                  ("]", "}", "bracket_right")]:
        keys[plain] = (False, qcode)
        keys[shifted] = (True, qcode)
    keys.update({" ": (False, "spc"), "\n": (False, "ret")})
    return keys


SCANNER_KEYS = _scanner_keys()


class Machine:
    def __init__(self, workdir: Path, image: Path, name: str = "kiosk", rtc_base: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        # Guest wall clock at power-on (QEMU -rtc base=...), for tests whose
        # outcome depends on the school schedule; None = the host's clock.
        self.rtc_base = rtc_base
        self._rtc_t0: float | None = None
        self.image = Path(image)
        self.disk = self.dir / "disk.qcow2"
        self.vars = self.dir / "OVMF_VARS.fd"
        self.serial_log = self.dir / "serial.log"
        # AF_UNIX paths are limited to 107 bytes and the checkout may live deep
        # (CI clones under /check/work/...), so the sockets get a short private dir.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="kvm-", dir="/tmp"))
        atexit.register(shutil.rmtree, self.sock_dir, True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(self.image), str(self.disk)], check=True)
        self.vars.write_bytes(OVMF_VARS.read_bytes())
        self.proc: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        self.port = 0
        self.extra_drives: list[tuple[str, Path]] = []
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._serial: socket.socket | None = None
        self.boot_mark = 0  # serial offset where the current boot started
        self.started_at = 0.0
        self._logged_in_at = -1
        # QMP events of every QEMU this machine ran, in order.
        self.events: list[dict] = []
        # Life cycle: `_life` serialises start/stop with the supervisor's
        # restart after a reset; `_off` is set once no QEMU runs and none
        # will be started until start().
        self._life = threading.Lock()
        self._off = threading.Event()
        self._off.set()
        self._stopping = False

    # ---- life cycle -------------------------------------------------------
    def add_drive(self, serial: str, path: Path):
        """A read-only raw disk visible in the guest as /dev/disk/by-id/virtio-<serial>."""
        self.extra_drives.append((serial, Path(path)))

    def start(self):
        """Power on (a cold start on the machine's disk and UEFI variables)."""
        with self._life:
            assert self._off.is_set(), "already running"
            self._stopping = False
            self._off.clear()
            try:
                self._launch()
            except BaseException:
                self._off.set()
                raise

    def _launch(self):
        self.port = free_port()
        qmp_path = self.sock_dir / "qmp.sock"
        ser_path = self.sock_dir / "serial.sock"
        for p in (qmp_path, ser_path):
            p.unlink(missing_ok=True)
        cmd = [
            "qemu-system-x86_64", "-name", self.name, "-machine", "q35,i8042=off", "-accel", "tcg",
            "-smp", "2", "-m", "1024", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "none",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={self.vars}",
            "-drive", f"if=none,id=hd0,file={self.disk},format=qcow2",
            "-device", "virtio-blk-pci,drive=hd0,bootindex=0",
            "-device", "i6300esb", "-action", "watchdog=reset,reboot=shutdown",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:8080",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "qemu-xhci,id=xhci", "-device", "usb-kbd,bus=xhci.0,id=scanner",
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=ser0,path={ser_path},server=on,wait=on",
            "-serial", "chardev:ser0",
        ]
        if self.rtc_base:
            # A later start (power back on, restart after a reset) continues
            # the guest's clock as a real RTC would, instead of turning it
            # back to the base.
            if self._rtc_t0 is None:
                self._rtc_t0 = time.time()
            base = calendar.timegm(time.strptime(self.rtc_base, "%Y-%m-%dT%H:%M:%S"))
            now = time.gmtime(base + time.time() - self._rtc_t0)
            cmd += ["-rtc", f"base={time.strftime('%Y-%m-%dT%H:%M:%S', now)}"]
        for i, (serial, path) in enumerate(self.extra_drives):
            cmd += ["-drive", f"if=none,id=x{i},file={path},format=raw,readonly=on",
                    "-device", f"virtio-blk-pci,drive=x{i},serial={serial}"]
        with open(self.dir / "qemu.log", "ab") as qlog:
            proc = subprocess.Popen(cmd, stdout=qlog, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc = proc
        _RUNNING.add(proc)
        self.started_at = time.time()
        try:
            self._attach(proc, qmp_path, ser_path)
        except BaseException:
            proc.kill()
            proc.wait()
            self._teardown(proc)
            raise

    def _attach(self, proc: subprocess.Popen, qmp_path: Path, ser_path: Path):
        """Connects serial console and QMP of a just started QEMU and starts
        its supervisor."""
        s = socket.socket(socket.AF_UNIX)
        deadline = time.time() + 30
        while True:
            try:
                s.connect(str(ser_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if proc.poll() is not None or time.time() > deadline:
                    s.close()
                    raise VmError(f"QEMU did not start: {(self.dir / 'qemu.log').read_text()[-2000:]}")
                time.sleep(0.05)
        self._serial = s
        with self._lock:
            self.boot_mark = len(self._buf)
            self._logged_in_at = -1
        self._reader = threading.Thread(target=self._read_serial, args=(s,), daemon=True)
        self._reader.start()
        first_event = len(self.events)
        self.qmp = Qmp(qmp_path, self.events)
        self._log_note(f"QEMU started (pid {proc.pid}, host port {self.port})")
        threading.Thread(target=self._supervise, args=(proc, self.qmp, first_event), daemon=True).start()

    def _supervise(self, proc: subprocess.Popen, qmp: Qmp, first_event: int):
        """Runs while one QEMU runs. When it ends: after a reset, power on a
        new one at once (see the module doc); otherwise the machine is off."""
        proc.wait()
        qmp.closed.wait(5)  # the reader has filed QEMU's last events
        with self._life:
            reasons = [e.get("data", {}).get("reason") for e in self.events[first_event:]
                       if e.get("event") == "SHUTDOWN"]
            self._teardown(proc)
            if not self._stopping and reasons and reasons[-1] in RESET_REASONS:
                self._log_note(f"{reasons[-1]}: QEMU ended (-action reboot=shutdown), "
                               "powering on a new QEMU on the same disk")
                try:
                    self._launch()
                    return
                except (VmError, OSError) as e:
                    self._log_note(f"restart after reset failed: {e}")
            self._off.set()

    def _teardown(self, proc: subprocess.Popen):
        if self.qmp:
            self.qmp.close()
        if self._serial:
            try:
                self._serial.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(timeout=5)
        _RUNNING.discard(proc)
        self.proc = self.qmp = self._serial = self._reader = None

    def _read_serial(self, s: socket.socket):
        with open(self.serial_log, "ab") as log:
            while True:
                try:
                    data = s.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                log.write(data)
                log.flush()
                with self._lock:
                    self._buf += data

    def _log_note(self, text: str):
        with open(self.serial_log, "ab") as log:
            log.write(f"\n[harness {time.strftime('%H:%M:%S')}] {text}\n".encode())

    def _end(self, how: str, timeout: float) -> bool:
        """Ends the machine: no restart after this. `how` is "kill" (SIGKILL
        QEMU now) or "poweroff" (ask the guest). Returns whether QEMU ended
        within `timeout`."""
        with self._life:
            self._stopping = True
            proc = self.proc
            if proc is not None and proc.poll() is None:
                if how == "kill":
                    proc.kill()
                else:
                    self.send_line("systemctl poweroff")
        return self._off.wait(timeout)

    def kill(self):
        """Power cut: SIGKILL the QEMU process (no flush, no shutdown)."""
        if not self._off.is_set():
            self._log_note("power cut: killing QEMU")
            self.stop()

    def poweroff(self, timeout: float = 120):
        """Clean shutdown from inside the guest; waits for QEMU to exit."""
        self._log_note("poweroff")
        if not self._end("poweroff", timeout):
            self.fail(f"guest did not power off within {timeout:.0f} s")

    def reboot(self, timeout: float = 180):
        """Reboot as the tests do it: clean power-off, then a new QEMU on the same disk."""
        self.poweroff(timeout)
        self.start()

    def reset(self):
        """QMP system_reset: the reset button. RAM is lost; writes QEMU has
        completed are on the disk, as on a real reset. QEMU ends and a new
        one boots the disk (see the module doc)."""
        self._log_note("QMP system_reset")
        self.expect_reboot()
        self.qmp.execute("system_reset")

    def expect_reboot(self):
        """Call before anything that reboots the guest (in-guest reboot,
        watchdog reset, system_reset): later waits look at the new boot only."""
        with self._lock:
            self.boot_mark = len(self._buf)
            self._logged_in_at = -1

    def stop(self):
        """SIGKILL QEMU if it runs; no restart after this."""
        if not self._off.is_set() and not self._end("kill", 60):
            raise VmError("QEMU did not end after SIGKILL")

    # ---- USB QR scanner -----------------------------------------------------
    def scanner_type(self, text: str, gap: float = 0.05):
        """Type text on the emulated USB keyboard (`-device usb-kbd,id=scanner`)
        the way a keyboard-wedge QR scanner does: US layout, Shift held for
        upper-case and symbols, Enter at the end. One key per QMP command: the
        usb-kbd queue holds only a few events and drops the rest. The machine
        has no PS/2 controller (i8042=off), so the USB keyboard is the only
        one QEMU can route the events to."""
        for ch in text:
            if ch not in SCANNER_KEYS:
                raise ValueError(f"no US-layout key for {ch!r}")
            shift, qcode = SCANNER_KEYS[ch]
            keys = (["shift"] if shift else []) + [qcode]
            events = [self._key(k, True) for k in keys] + [self._key(k, False) for k in reversed(keys)]
            self.qmp.execute("input-send-event", events=events)
            time.sleep(gap)

    @staticmethod
    def _key(qcode: str, down: bool) -> dict:
        return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}

    # ---- serial console ---------------------------------------------------
    def text(self, since: int = 0) -> str:
        with self._lock:
            raw = bytes(self._buf[since:])
        return ANSI.sub(b"", raw).decode("utf-8", "replace").replace("\r", "")

    def offset(self) -> int:
        with self._lock:
            return len(self._buf)

    def tail(self, n: int = 120) -> str:
        return "\n".join(self.serial_log.read_text(errors="replace").replace("\r", "").splitlines()[-n:])

    def fail(self, msg: str):
        qmp, proc = self.qmp, self.proc
        if qmp is not None and proc is not None and proc.poll() is None:
            try:
                status = qmp.execute("query-status")
                regs = qmp.execute("human-monitor-command", **{"command-line": "info registers"})
                rip = re.search(r"RIP=\S+", regs or "")
                msg += f"\nQEMU status: {status}; vCPU0 {rip.group(0) if rip else '?'}"
            except (VmError, OSError) as e:
                msg += f"\n(QMP query failed: {e})"
        raise VmTimeout(f"{msg}\n--- serial log tail ({self.serial_log}) ---\n{self.tail()}\n--- end of serial log ---")

    def wait_for(self, pattern: str, timeout: float, since: int | None = None) -> re.Match:
        rx = re.compile(pattern)
        start = self.boot_mark if since is None else since
        deadline = time.time() + timeout
        while True:
            with self._lock:
                raw = bytes(self._buf[start:])
            m = rx.search(ANSI.sub(b"", raw).decode("utf-8", "replace").replace("\r", ""))
            if m:
                return m
            if self._off.is_set():
                self.fail(f"QEMU exited while waiting for /{pattern}/")
            if time.time() > deadline:
                self.fail(f"timeout after {timeout:.0f} s waiting for /{pattern}/ on the serial console")
            time.sleep(0.2)

    def send_line(self, line: str):
        serial = self._serial
        if serial is None:
            raise VmError(f"no QEMU running to send {line[:40]!r} to")
        serial.sendall(line.encode() + b"\n")

    def login(self, timeout: float = 400):
        """Wait for the autologin shell of the current boot and make it script-friendly."""
        with self._lock:
            if self._logged_in_at == self.boot_mark:
                return
        self.wait_for(r"root@kiosk:~# ", timeout)
        token = secrets.token_hex(4)
        deadline = time.time() + 60
        while True:
            mark = self.offset()
            self.send_line(f"stty -echo; export TERM=dumb PS1=''; bind 'set enable-bracketed-paste off' 2>/dev/null;"
                           f" printf '@@%s@@\\n' ready-{token}")
            try:
                self.wait_for(f"@@ready-{token}@@", 10, since=mark)
                break
            except VmTimeout:
                if time.time() > deadline:
                    raise
        with self._lock:
            self._logged_in_at = self.boot_mark

    def sh(self, cmd: str, timeout: float = 60, check: bool = True) -> tuple[int, str]:
        """Run a shell command on the serial console; returns (exit status, output)."""
        self.login()
        token = secrets.token_hex(4)
        mark = self.offset()
        self.send_line(f"printf '@@B%s@@\\n' {token}; {cmd}; printf '\\n@@E%s:%d@@\\n' {token} $?")
        m = self.wait_for(rf"(?s)@@B{token}@@\n(.*?)\n?@@E{token}:(\d+)@@", timeout, since=mark)
        rc, out = int(m.group(2)), m.group(1)
        if check and rc != 0:
            self.fail(f"guest command failed (exit {rc}): {cmd}\n{out}")
        return rc, out

    def write_device_config(self, config: dict):
        """Writes /data/config/attendance.json the way an operator must: new
        file, fsync, rename, fsync (a power cut right after a plain write
        leaves an empty file). The daemon reads it on its next start."""
        text = json.dumps(config, separators=(",", ":"))
        self.sh(f"printf '%s\\n' '{text}' > /data/config/attendance.json.new"
                " && sync /data/config/attendance.json.new"
                " && mv /data/config/attendance.json.new /data/config/attendance.json"
                " && sync /data/config")

    def rauc_status(self) -> tuple[str, dict]:
        """(booted bootname, {slot name: slot info}) from `rauc status --output-format=json`."""
        _, out = self.sh("rauc status --detailed --output-format=json 2>/dev/null", timeout=90)
        line = [l for l in out.splitlines() if l.startswith("{")]
        if not line:
            self.fail(f"rauc status gave no JSON: {out}")
        st = json.loads(line[-1])
        slots = {}
        for entry in st["slots"]:
            for name, info in entry.items():
                slots[name] = info
        return st.get("booted"), slots

    def extract_data_files(self, paths: list[str], dest: Path) -> dict[str, Path]:
        """Copy files out of the data partition of the stopped machine's disk.

        The partition is copied (qemu-img convert of its byte range), its journal replayed on the copy
        (e2fsck, as the kernel would at mount) and the files dumped with
        debugfs. Paths are relative to /data; missing files are left out.
        """
        assert self._off.is_set(), "stop the machine first"
        layout = json.loads((REPO / "qemu" / "layout.json").read_text())
        start = layout.get("alignment_mib", 1)
        for p in layout["partitions"]:
            if p["name"] == "data":
                size = p["size_mib"]
                break
            start += p["size_mib"]
        dest.mkdir(parents=True, exist_ok=True)
        raw = dest / "data.raw"
        raw.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "convert", "-O", "raw", "--image-opts",
                        f"driver=raw,offset={start * 2**20},size={size * 2**20},"
                        f"file.driver=qcow2,file.file.filename={self.disk}", str(raw)], check=True)
        fsck = subprocess.run(["e2fsck", "-fy", str(raw)], capture_output=True, text=True)
        if fsck.returncode > 1:
            raise VmError(f"e2fsck of the data partition exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}")
        got = {}
        for p in paths:
            out = dest / Path(p).name
            out.unlink(missing_ok=True)
            subprocess.run(["debugfs", "-R", f"dump /{p.lstrip('/')} {out}", str(raw)],
                           check=True, capture_output=True)
            if out.exists() and out.stat().st_size > 0:
                got[p] = out
            else:
                out.unlink(missing_ok=True)
        raw.unlink()
        return got

    # ---- HTTP to the daemon --------------------------------------------------
    def http_get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_healthy(self, timeout: float = 400) -> float:
        """Poll GET /health from the host until 200; returns seconds since QEMU start."""
        deadline = time.time() + timeout
        last = "no answer"
        while time.time() < deadline:
            if self._off.is_set():
                self.fail("QEMU exited while waiting for /health")
            try:
                status, body = self.http_get("/health", timeout=3)
                if status == 200:
                    return time.time() - self.started_at
                last = f"{status} {body[:300]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.5)
        self.fail(f"/health not 200 within {timeout:.0f} s (last: {last})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
