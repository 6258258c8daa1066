"""Power cuts during a burst of scans lose no acknowledged scan.

The kiosk gets a schedule that is open all day and a roster; then, several
times, a burst of `attendance scan` runs on the serial console and the machine
is cut in the middle of it, alternately by the QMP reset button
(`system_reset`: guest RAM and page cache lost) and by killing QEMU (the
power cable). A scan counts as acknowledged when its `recorded` outcome line
reached the host. After the last boot the machine is shut down cleanly and
the database is taken out of the disk image and checked on the host: every
acknowledged record is there exactly once, nothing was recorded that was not
scanned, and `PRAGMA integrity_check` is ok.
"""

import json
import re
import sqlite3
import time

from conftest import OPEN_ALL_DAY

STUDENTS = 600
CUTS = ["reset", "kill", "reset"]
ACKS_BEFORE_CUT = 8
RECORDED = re.compile(r'^\{.*"outcome":"recorded".*\}$', re.M)


def student(i: int) -> str:
    return f"2026-{i:04d}"


def setup_kiosk(m):
    m.write_device_config(OPEN_ALL_DAY)
    m.sh("{ echo student_number,full_name,grade,section,guardian_phone,active; "
         f"for i in $(seq 1 {STUDENTS}); do printf '2026-%04d,Student %d,7,A,,true\\n' $i $i; done; }} "
         "> /data/config/roster.csv")
    m.sh("systemctl restart attendance.service", timeout=120)
    m.wait_healthy(timeout=120)
    _, out = m.sh("attendance students import /data/config/roster.csv", timeout=120)
    assert f"inserted\":{STUDENTS}" in out.replace(" ", ""), out


def acked(text: str) -> dict[str, str]:
    """record_id -> student number for every recorded outcome in text."""
    out = {}
    for line in RECORDED.findall(text):
        rec = json.loads(line)
        out[rec["record_id"]] = rec["student_number"]
    return out


def test_power_cuts_lose_no_acknowledged_scan(machine, figures):
    machine.start()
    machine.wait_healthy()
    setup_kiosk(machine)
    acks: dict[str, str] = {}
    next_student = 1
    for n, how in enumerate(CUTS + ["none"]):
        first = next_student
        last = min(first + (15 if how == "none" else 60), STUDENTS)
        next_student = last + 1
        mark = machine.offset()
        machine.send_line(f"for i in $(seq {first} {last}); do attendance scan $(printf 2026-%04d $i); done; "
                          f"printf '@@burst-%s-done@@\\n' {n}")
        if how == "none":
            machine.wait_for(f"@@burst-{n}-done@@", 600, since=mark)
            acks.update(acked(machine.text(mark)))
            break
        deadline = time.time() + 300
        while len(acked(machine.text(mark))) < ACKS_BEFORE_CUT:
            if time.time() > deadline:
                machine.fail(f"burst {n}: fewer than {ACKS_BEFORE_CUT} scans acknowledged in 300 s")
            time.sleep(0.2)
        if how == "reset":
            machine.reset()
            burst = acked(machine.text(mark))  # after the cut nothing more can be acknowledged
        else:
            machine.kill()
            burst = acked(machine.text(mark))
            machine.start()
        acks.update(burst)
        machine.wait_healthy()
        # the daemon is back and the records acknowledged so far are visible to it
        _, csv = machine.sh("attendance export --from 2020-01-01 --to 2100-01-01 2>/dev/null", timeout=120)
        exported = {line.split(",")[0] for line in csv.strip().splitlines()[1:]}
        lost = [rid for rid in acks if rid not in exported]
        assert not lost, f"after cut {n} ({how}): acknowledged records not exported: {lost[:5]}\n{csv[:500]}"
    scanned = {student(i) for i in range(1, next_student)}
    assert len(acks) >= ACKS_BEFORE_CUT * len(CUTS)

    machine.poweroff()
    files = machine.extract_data_files(
        ["attendance/db/attendance.sqlite3", "attendance/db/attendance.sqlite3-wal"],
        machine.dir / "extracted")
    db = files["attendance/db/attendance.sqlite3"]
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = con.execute("SELECT id, student_number FROM attendance").fetchall()
    finally:
        con.close()
    ids = [r[0] for r in rows]
    missing = [rid for rid in acks if rid not in ids]
    assert not missing, f"{len(missing)} acknowledged scans missing: {missing[:5]}"
    dupes = {rid for rid in ids if ids.count(rid) > 1}
    assert not dupes, dupes
    by_student = {}
    for rid, sn in rows:
        assert sn in scanned, f"record {rid} for {sn}, which was never scanned"
        by_student.setdefault(sn, []).append(rid)
    assert all(len(v) == 1 for v in by_student.values()), \
        {k: v for k, v in by_student.items() if len(v) > 1}
    for rid, sn in acks.items():
        assert dict(rows)[rid] == sn
    figures("power_cuts_acknowledged_scans", len(acks), "scans",
            f"{len(CUTS)} cuts ({', '.join(CUTS)}), all acknowledged scans present once, integrity_check ok")
