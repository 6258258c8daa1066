//! The attendance store: SQLite on the data partition.
//!
//! Invariants (every change to this module keeps them):
//! 1. A scan is acknowledged only after the transaction holding its record
//!    and its outbox row has committed with `synchronous=FULL` in WAL mode,
//!    i.e. after the WAL has been fsynced. A power cut after the
//!    acknowledgement cannot lose it.
//! 2. The attendance row and its outbox row are written in one transaction:
//!    there is never a record the sync engine will not see, nor an outbox
//!    row without its record.
//! 3. Inside the daemon one thread owns the writable connection
//!    ([`StoreHandle`] sends it closures). Other processes (the CLI) open
//!    read-only connections, which WAL lets run beside the writer, or talk to
//!    the daemon over its control socket.
//! 4. One daemon per data directory, enforced by an exclusive `flock` on
//!    `daemon.lock` held for the life of the process.
//!
//! PRAGMA choices: `journal_mode=WAL` (readers never block the writer, and a
//! commit is one sequential append); `synchronous=FULL` (with WAL, NORMAL
//! may lose the last commits on power loss, which would break invariant 1;
//! FULL costs one fsync per commit, measured in BENCHMARKS.md);
//! `foreign_keys=ON`; `busy_timeout` from config; `journal_size_limit` so a
//! checkpointed WAL does not keep its peak size on a small partition.

pub mod event;
pub mod outbox;
pub mod photos;
pub mod roster;
pub mod schema;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::record::{AttendanceStatus, StudentNumber};
use crate::domain::rules::{self, Decision, ExistingRecord, RejectReason, RosterEntry, ScanKind};
use crate::domain::schedule::{Schedule, Slot};
use crate::input::SourceKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {err}")]
    Open {
        path: PathBuf,
        #[source]
        err: rusqlite::Error,
    },
    #[error("database {path}: {err}")]
    Schema {
        path: PathBuf,
        #[source]
        err: schema::SchemaError,
    },
    #[error("data directory {path}: {err}")]
    DataDir {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("data directory {path} is in use by another daemon{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database task has stopped")]
    TaskGone,
}

impl StoreError {
    /// Whether the failure is the disk being full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    }
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Exclusive ownership of a data directory for the life of the process.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(path: &Path) -> Result<Self, StoreError> {
        let io = |err| StoreError::DataDir {
            path: path.into(),
            err,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(StoreError::Locked {
                    path: path.into(),
                    pid,
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// A student as imported or pulled from the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StudentRow {
    pub student_number: StudentNumber,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub grade: String,
    #[serde(default)]
    pub section: String,
    /// Never logged; only the SMS sender reads it.
    #[serde(default)]
    pub guardian_phone: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

impl StudentRow {
    /// An active student with nothing but a number (fixtures, benchmarks).
    pub fn bare(student_number: StudentNumber) -> Self {
        StudentRow {
            student_number,
            full_name: String::new(),
            grade: String::new(),
            section: String::new(),
            guardian_phone: None,
            active: true,
        }
    }
}

/// An attendance record as stored, as queued in the outbox and as sent to
/// the cloud: the one definition of the record's wire shape. In the outbox
/// `photo_path` is the local file; on the wire it is the object's path in
/// Storage (the sync engine swaps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttendanceRecord {
    pub id: Uuid,
    pub student_number: String,
    pub school_date: NaiveDate,
    pub session: String,
    pub time_in: Option<String>,
    pub time_out: Option<String>,
    pub status: String,
    pub device_id: String,
    pub photo_path: Option<String>,
    pub clock_synced: bool,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns of [`AttendanceRecord`] in wire order (PostgREST's
/// `columns=` parameter); a test checks it against the serialised struct.
pub const WIRE_COLUMNS: &str = "id,student_number,school_date,session,time_in,time_out,status,device_id,photo_path,clock_synced,source,created_at,updated_at";

impl AttendanceRecord {
    /// The outbox payload: the record serialised.
    pub fn to_payload(&self) -> Result<String, StoreError> {
        serde_json::to_string(self)
            .map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
    }
}

/// What one scan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Recorded {
        record_id: Uuid,
        student_number: StudentNumber,
        kind: ScanKind,
        status: AttendanceStatus,
        school_date: NaiveDate,
        session: String,
    },
    Duplicate {
        student_number: StudentNumber,
        kind: ScanKind,
    },
    Rejected {
        student_number: Option<StudentNumber>,
        reason: RejectReason,
    },
}

/// A decoded card ready for the rules.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub student_number: StudentNumber,
    pub seen_at: DateTime<Utc>,
    pub source: SourceKind,
    pub clock_synced: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ImportSummary {
    pub inserted: usize,
    pub updated: usize,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StoreStats {
    pub students: i64,
    pub records_today: i64,
    pub outbox_depth: i64,
}

/// For the update agent: when the kiosk was last used and what waits to sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuietFacts {
    pub last_scan: Option<DateTime<Utc>>,
    pub outbox_depth: u64,
    pub outbox_oldest: Option<DateTime<Utc>>,
}

/// The writable store. Owned by one thread in the daemon.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    device_id: String,
    schedule: Schedule,
    cooldown: chrono::Duration,
}

fn configure(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

impl Store {
    /// Test fault: every write fails (SQLite `query_only`), as on a full or
    /// read-only disk, until switched off again.
    #[cfg(test)]
    pub(crate) fn fail_writes_for_tests(&self, on: bool) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "query_only", on)?;
        Ok(())
    }

    /// Opens (creating if needed) and migrates the database.
    pub fn open(
        path: &Path,
        device_id: &str,
        schedule: Schedule,
        cooldown: chrono::Duration,
        busy: Duration,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|err| StoreError::DataDir {
                path: dir.into(),
                err,
            })?;
        }
        let open_err = |err| StoreError::Open {
            path: path.into(),
            err,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, busy).map_err(open_err)?;
        // WAL must be set before anything else writes; it persists in the file.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL is required"
            ))));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
            .map_err(open_err)?;
        schema::migrate(&mut conn).map_err(|err| StoreError::Schema {
            path: path.into(),
            err,
        })?;
        Ok(Store {
            conn,
            path: path.into(),
            device_id: device_id.into(),
            schedule,
            cooldown,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decides and records one scan in one durable transaction.
    pub fn record_scan(&mut self, req: &ScanRequest) -> Result<ScanOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sn = req.student_number.as_str();
        let roster = tx
            .query_row(
                "SELECT active FROM students WHERE student_number = ?1",
                [sn],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .map_or(RosterEntry::Unknown, |a| {
                if a {
                    RosterEntry::Active
                } else {
                    RosterEntry::Inactive
                }
            });
        let placement = self.schedule.place(req.seen_at);
        let existing = match &placement {
            crate::domain::schedule::Placement::InSession(slot) => load_existing(&tx, sn, slot)?,
            _ => None,
        };
        let decision = rules::decide(
            placement,
            roster,
            sn,
            existing.as_ref(),
            req.seen_at,
            self.cooldown,
        );
        let outcome = match decision {
            Decision::Reject(reason) => ScanOutcome::Rejected {
                student_number: Some(req.student_number.clone()),
                reason,
            },
            Decision::Duplicate { kind } => ScanOutcome::Duplicate {
                student_number: req.student_number.clone(),
                kind,
            },
            Decision::Login { slot, status } => {
                let id = write_record(
                    &tx,
                    &self.device_id,
                    req,
                    &slot,
                    ScanKind::Login,
                    status,
                    existing.as_ref(),
                )?;
                ScanOutcome::Recorded {
                    record_id: id,
                    student_number: req.student_number.clone(),
                    kind: ScanKind::Login,
                    status,
                    school_date: slot.school_date,
                    session: slot.session,
                }
            }
            Decision::Logout { slot, status } => {
                let id = write_record(
                    &tx,
                    &self.device_id,
                    req,
                    &slot,
                    ScanKind::Logout,
                    status,
                    existing.as_ref(),
                )?;
                ScanOutcome::Recorded {
                    record_id: id,
                    student_number: req.student_number.clone(),
                    kind: ScanKind::Logout,
                    status,
                    school_date: slot.school_date,
                    session: slot.session,
                }
            }
        };
        // Commit returns after the WAL fsync (synchronous=FULL): durable.
        tx.commit()?;
        Ok(outcome)
    }

    /// Inserts or updates students in one transaction.
    pub fn import_students(&mut self, rows: &[StudentRow]) -> Result<ImportSummary, StoreError> {
        let now = timestamp(Utc::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut summary = ImportSummary::default();
        {
            let mut exists = tx.prepare("SELECT 1 FROM students WHERE student_number = ?1")?;
            let mut upsert = tx.prepare(
                "INSERT INTO students (student_number, full_name, grade, section, guardian_phone, active, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (student_number) DO UPDATE SET
                   full_name = excluded.full_name, grade = excluded.grade, section = excluded.section,
                   guardian_phone = excluded.guardian_phone, active = excluded.active,
                   updated_at = excluded.updated_at",
            )?;
            for r in rows {
                let sn = r.student_number.as_str();
                if exists.exists([sn])? {
                    summary.updated += 1;
                } else {
                    summary.inserted += 1;
                }
                upsert.execute(params![
                    sn,
                    r.full_name,
                    r.grade,
                    r.section,
                    r.guardian_phone,
                    r.active,
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(summary)
    }

    /// A cheap round trip proving the connection works.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn stats(&self, today: NaiveDate) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            students: self
                .conn
                .query_row("SELECT count(*) FROM students", [], |r| r.get(0))?,
            records_today: self.conn.query_row(
                "SELECT count(*) FROM attendance WHERE school_date = ?1",
                [today.to_string()],
                |r| r.get(0),
            )?,
            outbox_depth: self
                .conn
                .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?,
        })
    }

    /// Moves the WAL into the database file; called at shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn load_existing(
    tx: &rusqlite::Transaction<'_>,
    sn: &str,
    slot: &Slot,
) -> Result<Option<ExistingRecord>, StoreError> {
    let row = tx
        .query_row(
            "SELECT id, time_in, time_out, status FROM attendance
             WHERE student_number = ?1 AND school_date = ?2 AND session = ?3",
            params![sn, slot.school_date.to_string(), slot.session],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(|(id, tin, tout, status)| ExistingRecord {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        time_in: tin.as_deref().and_then(parse_ts),
        time_out: tout.as_deref().and_then(parse_ts),
        status: AttendanceStatus::parse(&status).unwrap_or(AttendanceStatus::Present),
    }))
}

#[allow(clippy::too_many_arguments)]
fn write_record(
    tx: &rusqlite::Transaction<'_>,
    device_id: &str,
    req: &ScanRequest,
    slot: &Slot,
    kind: ScanKind,
    status: AttendanceStatus,
    existing: Option<&ExistingRecord>,
) -> Result<Uuid, StoreError> {
    let now = timestamp(Utc::now());
    let seen = timestamp(req.seen_at);
    let id = match existing {
        Some(rec) => {
            let (col_in, col_out) = match kind {
                ScanKind::Login => (Some(seen.as_str()), None),
                ScanKind::Logout => (None, Some(seen.as_str())),
            };
            tx.execute(
                "UPDATE attendance SET
                   time_in = COALESCE(?2, time_in), time_out = COALESCE(?3, time_out),
                   status = ?4, clock_synced = MIN(clock_synced, ?5), updated_at = ?6
                 WHERE id = ?1",
                params![
                    rec.id.to_string(),
                    col_in,
                    col_out,
                    status.as_str(),
                    req.clock_synced,
                    now
                ],
            )?;
            rec.id
        }
        None => {
            let id = Uuid::new_v4();
            let (tin, tout) = match kind {
                ScanKind::Login => (Some(seen.as_str()), None),
                ScanKind::Logout => (None, Some(seen.as_str())),
            };
            tx.execute(
                "INSERT INTO attendance (id, student_number, school_date, session, time_in, time_out,
                   status, device_id, clock_synced, source, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                params![
                    id.to_string(),
                    req.student_number.as_str(),
                    slot.school_date.to_string(),
                    slot.session,
                    tin,
                    tout,
                    status.as_str(),
                    device_id,
                    req.clock_synced,
                    req.source.as_str(),
                    now
                ],
            )?;
            id
        }
    };
    outbox::enqueue_current(tx, id, &now)?;
    Ok(id)
}

const RECORD_COLUMNS: &str =
    "id, student_number, school_date, session, time_in, time_out, status, device_id,
    photo_path, clock_synced, source, created_at, updated_at";

fn map_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttendanceRecord> {
    let id: String = r.get(0)?;
    let date: String = r.get(2)?;
    Ok(AttendanceRecord {
        id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        student_number: r.get(1)?,
        school_date: date.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        session: r.get(3)?,
        time_in: r.get(4)?,
        time_out: r.get(5)?,
        status: r.get(6)?,
        device_id: r.get(7)?,
        photo_path: r.get(8)?,
        clock_synced: r.get(9)?,
        source: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

pub(crate) fn read_record(conn: &Connection, id: Uuid) -> rusqlite::Result<AttendanceRecord> {
    conn.query_row(
        &format!("SELECT {RECORD_COLUMNS} FROM attendance WHERE id = ?1"),
        [id.to_string()],
        map_record,
    )
}

/// Read-only access for the CLI while the daemon may be running.
pub struct ReadOnlyStore {
    conn: Connection,
}

impl ReadOnlyStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |err| StoreError::Open {
            path: path.into(),
            err,
        };
        if !path.exists() {
            return Err(open_err(rusqlite::Error::InvalidPath(path.into())));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&conn, Duration::from_secs(5)).map_err(open_err)?;
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(open_err)?;
        if app_id != schema::APPLICATION_ID {
            return Err(StoreError::Schema {
                path: path.into(),
                err: schema::SchemaError::ForeignDatabase { found: app_id },
            });
        }
        Ok(ReadOnlyStore { conn })
    }

    pub fn students(&self) -> Result<Vec<StudentRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT student_number, full_name, grade, section, active FROM students ORDER BY student_number",
        )?;
        let rows = st
            .query_map([], |r| {
                let sn: String = r.get(0)?;
                Ok(StudentRow {
                    student_number: StudentNumber::parse(&sn).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    full_name: r.get(1)?,
                    grade: r.get(2)?,
                    section: r.get(3)?,
                    guardian_phone: None,
                    active: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records whose school date is in `from..=to`, in time order.
    pub fn records_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<AttendanceRecord>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM attendance WHERE school_date BETWEEN ?1 AND ?2
             ORDER BY school_date, COALESCE(time_in, time_out), id"
        ))?;
        let rows = st
            .query_map([from.to_string(), to.to_string()], map_record)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// What the update agent's policy needs (read-only): the newest scan
    /// time and the outbox's depth and oldest row.
    pub fn quiet_facts(&self) -> Result<QuietFacts, StoreError> {
        let last: Option<String> = self.conn.query_row(
            "SELECT max(max(COALESCE(time_in, ''), COALESCE(time_out, ''))) FROM attendance",
            [],
            |r| r.get(0),
        )?;
        let (depth, oldest): (i64, Option<String>) =
            self.conn
                .query_row("SELECT count(*), min(created_at) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        Ok(QuietFacts {
            last_scan: last.as_deref().and_then(parse_ts),
            outbox_depth: depth.max(0) as u64,
            outbox_oldest: oldest.as_deref().and_then(parse_ts),
        })
    }

    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// The async face of the store: sends closures to the database thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

/// Resolves when the database thread has checkpointed and closed.
pub struct StoreClosed(oneshot::Receiver<()>);

impl StoreClosed {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

impl StoreHandle {
    /// Starts the database thread. The thread ends, after a checkpoint, when
    /// every handle has been dropped.
    pub fn spawn(store: Store, queue: usize) -> Result<(StoreHandle, StoreClosed), StoreError> {
        let (tx, mut rx) = mpsc::channel::<Job>(queue);
        let (closed_tx, closed_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut store = store;
                while let Some(job) = rx.blocking_recv() {
                    job(&mut store);
                }
                if let Err(e) = store.checkpoint() {
                    tracing::warn!(error = %e, "final WAL checkpoint failed; SQLite will recover the WAL at next open");
                }
                drop(store);
                tracing::info!("database closed");
                let _ = closed_tx.send(());
            })
            .map_err(|err| StoreError::DataDir { path: PathBuf::from("(store thread)"), err })?;
        Ok((StoreHandle { tx }, StoreClosed(closed_rx)))
    }

    /// Runs `f` on the database thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply_tx.send(f(store));
        });
        self.tx.send(job).await.map_err(|_| StoreError::TaskGone)?;
        reply_rx.await.map_err(|_| StoreError::TaskGone)
    }
}

/// A store under `dir` with the default schedule, for unit tests here and in
/// the modules that build on the store (evidence).
#[cfg(test)]
pub(crate) fn open_for_tests(dir: &Path) -> Store {
    let sched = Schedule::from_config(
        &crate::domain::schedule::ScheduleConfig::default(),
        "schedule",
    )
    .expect("default schedule");
    Store::open(
        &dir.join("db/a.sqlite3"),
        "kiosk-t",
        sched,
        chrono::Duration::minutes(5),
        Duration::from_secs(1),
    )
    .expect("open test store")
}

#[cfg(test)]
mod tests {
    use super::open_for_tests as open;
    use super::*;
    use crate::domain::schedule::ScheduleConfig;
    use chrono::TimeZone;

    fn student(sn: &str) -> StudentRow {
        StudentRow {
            student_number: StudentNumber::parse(sn).unwrap(),
            full_name: format!("Student {sn}"),
            grade: "7".into(),
            section: "A".into(),
            guardian_phone: Some("+639170000000".into()),
            active: true,
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 23, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn scan(sn: &str, t: DateTime<Utc>) -> ScanRequest {
        ScanRequest {
            student_number: StudentNumber::parse(sn).unwrap(),
            seen_at: t,
            source: SourceKind::Replay,
            clock_synced: true,
        }
    }

    #[test]
    fn login_logout_share_a_record_and_fill_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        assert_eq!(
            s.import_students(&[student("S1")]).unwrap(),
            ImportSummary {
                inserted: 1,
                updated: 0
            }
        );
        let login = s.record_scan(&scan("S1", at(7, 0))).unwrap();
        let ScanOutcome::Recorded {
            record_id,
            kind: ScanKind::Login,
            status: AttendanceStatus::Present,
            ..
        } = login
        else {
            panic!("{login:?}")
        };
        assert!(matches!(
            s.record_scan(&scan("S1", at(7, 1))).unwrap(),
            ScanOutcome::Duplicate { .. }
        ));
        let logout = s.record_scan(&scan("S1", at(11, 40))).unwrap();
        let ScanOutcome::Recorded {
            record_id: same,
            kind: ScanKind::Logout,
            ..
        } = logout
        else {
            panic!("{logout:?}")
        };
        assert_eq!(record_id, same);
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM attendance", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let payloads: Vec<String> = s
            .conn
            .prepare("SELECT payload FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(payloads.len(), 2);
        let last: serde_json::Value = serde_json::from_str(&payloads[1]).unwrap();
        assert_eq!(last["id"], record_id.to_string());
        assert!(last["time_out"].is_string() && last["time_in"].is_string());
        assert!(
            !payloads[1].contains("+63917"),
            "phone numbers never leave through the outbox"
        );
    }

    #[test]
    fn unknown_students_are_rejected_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let out = s.record_scan(&scan("NOPE", at(7, 0))).unwrap();
        assert!(matches!(
            out,
            ScanOutcome::Rejected {
                reason: RejectReason::UnknownStudent(_),
                ..
            }
        ));
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn reopen_keeps_data_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            s.import_students(&[student("S1"), student("S2")]).unwrap();
            s.record_scan(&scan("S1", at(7, 0))).unwrap();
        }
        let s = open(dir.path());
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let ro = ReadOnlyStore::open(s.path()).unwrap();
        assert_eq!(ro.students().unwrap().len(), 2);
        let recs = ro
            .records_between(at(0, 0).date_naive(), at(23, 0).date_naive())
            .unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(ro.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn quiet_facts_name_the_last_scan_and_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let ro = ReadOnlyStore::open(s.path()).unwrap();
        assert_eq!(ro.quiet_facts().unwrap(), QuietFacts::default());
        s.import_students(&[student("S1")]).unwrap();
        s.record_scan(&scan("S1", at(7, 0))).unwrap();
        s.record_scan(&scan("S1", at(11, 40))).unwrap();
        let f = ro.quiet_facts().unwrap();
        assert_eq!(f.last_scan, Some(at(11, 40)));
        assert!(f.outbox_depth >= 1);
        assert!(f.outbox_oldest.is_some());
    }

    #[test]
    fn a_second_lock_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.lock");
        let _held = DataDirLock::acquire(&p).unwrap();
        match DataDirLock::acquire(&p) {
            Err(StoreError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_sqlite_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db/a.sqlite3");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(
            &p,
            b"this is not a database, just text that is long enough to matter".repeat(100),
        )
        .unwrap();
        let sched = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
        let e = Store::open(
            &p,
            "k",
            sched,
            chrono::Duration::minutes(5),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("a.sqlite3"), "{e}");
    }

    #[tokio::test]
    async fn handle_runs_jobs_and_closes_with_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let path = s.path().to_path_buf();
        let (h, closed) = StoreHandle::spawn(s, 8).unwrap();
        h.call(|s| s.import_students(&[student("S1")]))
            .await
            .unwrap()
            .unwrap();
        let out = h
            .call(|s| s.record_scan(&scan("S1", at(7, 0))))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(out, ScanOutcome::Recorded { .. }));
        drop(h);
        closed.wait().await;
        let wal = path.with_extension("sqlite3-wal");
        assert!(
            !wal.exists() || fs::metadata(&wal).unwrap().len() == 0,
            "WAL truncated at close"
        );
    }
}
