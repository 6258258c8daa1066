//! Schema and forward migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each
//! migration runs in its own transaction together with the version bump, so
//! a power cut leaves the database at one version or the next, never between.
//! Migrations are append-only: never edit one that has shipped.
//!
//! Migrations are also additive only (new tables, new columns with
//! defaults), so the previous release can still run on a database a newer
//! one has migrated. That is what makes an OTA rollback safe: after falling
//! back to the old slot, the old daemon opens the newer schema with a warning
//! instead of refusing to start.

use rusqlite::Connection;

/// Marks the file as ours ("ATND"), so a foreign SQLite file is refused.
pub const APPLICATION_ID: i64 = 0x4154_4E44;

pub const MIGRATIONS: &[&str] = &[
    // 1: roster cache, attendance records, outbox.
    r#"
    CREATE TABLE students (
        student_number TEXT PRIMARY KEY,
        full_name      TEXT NOT NULL DEFAULT '',
        grade          TEXT NOT NULL DEFAULT '',
        section        TEXT NOT NULL DEFAULT '',
        guardian_phone TEXT,
        active         INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        updated_at     TEXT NOT NULL
    ) STRICT;

    CREATE TABLE attendance (
        id             TEXT PRIMARY KEY,
        student_number TEXT NOT NULL,
        school_date    TEXT NOT NULL,
        session        TEXT NOT NULL,
        time_in        TEXT,
        time_out       TEXT,
        status         TEXT NOT NULL CHECK (status IN ('present', 'late', 'absent', 'excused')),
        device_id      TEXT NOT NULL,
        photo_path     TEXT,
        clock_synced   INTEGER NOT NULL CHECK (clock_synced IN (0, 1)),
        source         TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        synced_at      TEXT,
        UNIQUE (student_number, school_date, session)
    ) STRICT;
    CREATE INDEX attendance_by_date ON attendance (school_date);

    -- Filled in the same transaction as the attendance write; drained by sync.
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        topic           TEXT NOT NULL,
        record_id       TEXT NOT NULL REFERENCES attendance (id),
        payload         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error      TEXT
    ) STRICT;
    CREATE INDEX outbox_by_topic ON outbox (topic, seq);
    "#,
    // 2 (sync): engine state, quarantined outbox items, photo upload state.
    r#"
    CREATE TABLE sync_state (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;

    -- Outbox items the engine will not send again: invalid locally, or
    -- rejected by the server as invalid. Kept for an administrator.
    CREATE TABLE outbox_quarantine (
        seq            INTEGER PRIMARY KEY,
        topic          TEXT NOT NULL,
        record_id      TEXT NOT NULL,
        payload        TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        attempts       INTEGER NOT NULL,
        reason         TEXT NOT NULL,
        http_status    INTEGER,
        quarantined_at TEXT NOT NULL
    ) STRICT;

    -- The engine asks "is there a newer outbox row for this record?".
    CREATE INDEX outbox_by_record ON outbox (record_id);

    ALTER TABLE attendance ADD COLUMN photo_remote_path TEXT;
    ALTER TABLE attendance ADD COLUMN photo_uploaded_at TEXT;
    "#,
    // 3 (store): an index for every query a background job runs, so none
    // scans the whole table on the database thread a scan waits for.
    r#"
    -- photos waiting for upload, oldest first
    CREATE INDEX attendance_photo_pending ON attendance (created_at)
        WHERE photo_path IS NOT NULL AND photo_remote_path IS NULL;
    -- uploaded photos whose local copy retention may delete
    CREATE INDEX attendance_photo_uploaded ON attendance (school_date)
        WHERE photo_path IS NOT NULL AND photo_remote_path IS NOT NULL AND photo_remote_path != '';
    -- a lagging photo follower finds its record by the scan's instant
    CREATE INDEX attendance_by_time_in ON attendance (time_in) WHERE time_in IS NOT NULL;
    CREATE INDEX attendance_by_time_out ON attendance (time_out) WHERE time_out IS NOT NULL;
    -- phone-number expiry
    CREATE INDEX students_with_phone ON students (student_number) WHERE guardian_phone IS NOT NULL;
    "#,
];

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not an attendance database (application_id {found:#x})")]
    ForeignDatabase { found: i64 },
    #[error("migration {version}: {err}")]
    Migration {
        version: usize,
        #[source]
        err: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings the schema up to date; returns the version now in place.
pub fn migrate(conn: &mut Connection) -> Result<i64, SchemaError> {
    let app_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if app_id != APPLICATION_ID {
        let empty: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if app_id != 0 || empty != 0 {
            return Err(SchemaError::ForeignDatabase { found: app_id });
        }
    }
    if version > known {
        tracing::warn!(
            found = version,
            known,
            "database schema is newer than this release (after a rollback?); using it as it is"
        );
        return Ok(version);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let v = i + 1;
        let tx = conn
            .transaction()
            .map_err(|err| SchemaError::Migration { version: v, err })?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|_| tx.pragma_update(None, "user_version", v as i64))
            .and_then(|_| tx.commit())
            .map_err(|err| SchemaError::Migration { version: v, err })?;
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len() as i64);
        let n: i64 = c
            .query_row("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name IN ('students','attendance','outbox')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }

    /// Every query a background job runs uses an index (no full scan of
    /// `attendance`, `outbox` or `students`).
    #[test]
    fn background_queries_use_indexes() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        let queries = [
            "SELECT id, school_date, photo_path FROM attendance WHERE photo_path IS NOT NULL AND photo_remote_path IS NULL ORDER BY created_at LIMIT 4",
            "SELECT id, photo_path FROM attendance WHERE photo_path IS NOT NULL AND photo_remote_path IS NOT NULL AND photo_remote_path != '' AND school_date <= '2026-01-01' LIMIT 64",
            "SELECT id FROM attendance WHERE time_in = 'x' UNION ALL SELECT id FROM attendance WHERE time_out = 'x' LIMIT 1",
            "SELECT o.seq, o.record_id, o.payload, a.photo_remote_path FROM outbox o LEFT JOIN attendance a ON a.id = o.record_id WHERE o.topic = 'attendance' AND o.seq > 0 ORDER BY o.seq LIMIT 200",
            "SELECT student_number FROM students WHERE guardian_phone IS NOT NULL LIMIT 500",
            "SELECT a.id FROM attendance a WHERE a.school_date < '2026-01-01' AND a.synced_at IS NOT NULL AND a.photo_path IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.record_id = a.id) LIMIT 500",
        ];
        for q in queries {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
            let plan: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN ") || step.contains("INDEX"),
                    "{q}: full scan in {plan:?}"
                );
            }
        }
    }

    #[test]
    fn refuses_foreign_but_accepts_newer_databases() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE other (x)").unwrap();
        assert!(matches!(
            migrate(&mut c),
            Err(SchemaError::ForeignDatabase { .. })
        ));

        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
        assert_eq!(migrate(&mut c).unwrap(), 999);
    }
}
