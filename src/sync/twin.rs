//! An in-memory cloud for tests and benchmarks: answers like PostgREST 12
//! and Storage do (JSON arrays of stored ids, PostgREST JSON errors, its
//! filter parse error), and like the things in between do when told to (a
//! gateway's HTML, a lost response).
//!
//! Fault script: each call first takes the next fault queued for its
//! endpoint, if any; with none it behaves like a healthy server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use super::cloud::{CloudApi, Reply, Transport};
use super::postgrest::parse_roster_filter;

/// What the next call to an endpoint meets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This reply instead of the server's (a proxy, a gateway).
    Reply(Reply),
    /// No answer, the request never arrived.
    Unreachable,
    /// The server handles the request, but the answer is lost.
    LostResponse,
}

impl Fault {
    pub fn html(status: u16, body: &str) -> Fault {
        Fault::Reply(Reply {
            status,
            content_type: Some("text/html".into()),
            body: body.as_bytes().to_vec(),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    attendance: BTreeMap<Uuid, serde_json::Value>,
    students: Vec<serde_json::Value>,
    objects: BTreeMap<String, Vec<u8>>,
    upsert_faults: VecDeque<Fault>,
    roster_faults: VecDeque<Fault>,
    upload_faults: VecDeque<Fault>,
}

#[derive(Debug, Default)]
pub struct TwinCloud {
    state: Mutex<State>,
    pub upsert_calls: AtomicU64,
    pub roster_calls: AtomicU64,
    pub upload_calls: AtomicU64,
}

fn pg_error(status: u16, code: &str, message: &str, details: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({"code": code, "message": message, "details": details, "hint": null})
            .to_string(),
    )
}

impl TwinCloud {
    pub fn new() -> Self {
        TwinCloud::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide later assertions.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push_upsert_fault(&self, f: Fault) {
        self.state().upsert_faults.push_back(f);
    }
    pub fn push_roster_fault(&self, f: Fault) {
        self.state().roster_faults.push_back(f);
    }
    pub fn push_upload_fault(&self, f: Fault) {
        self.state().upload_faults.push_back(f);
    }

    /// Adds or replaces students (rows as PostgREST would return them).
    pub fn put_students(&self, rows: impl IntoIterator<Item = serde_json::Value>) {
        let mut st = self.state();
        st.students.extend(rows);
        st.students.sort_by_key(key);
    }

    pub fn stored_ids(&self) -> Vec<Uuid> {
        self.state().attendance.keys().copied().collect()
    }

    pub fn stored(&self, id: Uuid) -> Option<serde_json::Value> {
        self.state().attendance.get(&id).cloned()
    }

    pub fn object_count(&self) -> usize {
        self.state().objects.len()
    }

    fn handle_upsert(&self, body: &[u8]) -> Reply {
        let Ok(rows) = serde_json::from_slice::<Vec<serde_json::Value>>(body) else {
            return pg_error(400, "PGRST102", "Empty or invalid json", "");
        };
        let mut parsed = Vec::with_capacity(rows.len());
        for r in rows {
            let id = r
                .get("id")
                .and_then(|v| v.as_str())
                .and_then(|s| Uuid::parse_str(s).ok());
            let Some(id) = id else {
                return pg_error(400, "22P02", "invalid input syntax for type uuid", "");
            };
            // The cloud's check constraint: no school dates before 2000
            // (a kiosk whose clock was never set). PostgreSQL refuses the
            // whole statement and names the failing row in `details`.
            let date = r.get("school_date").and_then(|v| v.as_str()).unwrap_or("");
            if date < "2000-01-01" {
                return pg_error(
                    400,
                    "23514",
                    "new row for relation \"attendance\" violates check constraint \"attendance_school_date_check\"",
                    &format!("Failing row contains ({r})"),
                );
            }
            parsed.push((id, r));
        }
        let mut st = self.state();
        let ids: Vec<serde_json::Value> = parsed
            .iter()
            .map(|(id, _)| serde_json::json!({"id": id}))
            .collect();
        for (id, r) in parsed {
            st.attendance.insert(id, r);
        }
        Reply::json(201, serde_json::Value::Array(ids).to_string())
    }

    fn handle_students(&self, query: &[(&'static str, String)]) -> Reply {
        let get = |k: &str| query.iter().find(|(q, _)| *q == k).map(|(_, v)| v.as_str());
        let limit: usize = get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let after = match get("or") {
            None => None,
            Some(f) => match parse_roster_filter(f) {
                Some(c) => Some(c),
                None => {
                    return pg_error(
                        400,
                        "PGRST100",
                        "\"failed to parse logic tree\"",
                        "unexpected \",\" expecting \")\"",
                    );
                }
            },
        };
        let st = self.state();
        let rows: Vec<serde_json::Value> = st
            .students
            .iter()
            .filter(|r| match &after {
                None => true,
                Some((u, s)) => key(r) > (u.clone(), s.clone()),
            })
            .take(limit)
            .cloned()
            .collect();
        Reply::json(200, serde_json::Value::Array(rows).to_string())
    }
}

fn key(r: &serde_json::Value) -> (String, String) {
    let s = |k: &str| {
        r.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("updated_at"), s("student_number"))
}

impl CloudApi for TwinCloud {
    async fn upsert_attendance(&self, body: Vec<u8>) -> Result<Reply, Transport> {
        self.upsert_calls.fetch_add(1, Ordering::Relaxed);
        let fault = self.state().upsert_faults.pop_front();
        match fault {
            Some(Fault::Reply(r)) => Ok(r),
            Some(Fault::Unreachable) => Err(Transport("cannot connect")),
            Some(Fault::LostResponse) => {
                let _ = self.handle_upsert(&body);
                Err(Transport("timed out"))
            }
            None => Ok(self.handle_upsert(&body)),
        }
    }

    async fn get_students(&self, query: Vec<(&'static str, String)>) -> Result<Reply, Transport> {
        self.roster_calls.fetch_add(1, Ordering::Relaxed);
        let fault = self.state().roster_faults.pop_front();
        match fault {
            Some(Fault::Reply(r)) => Ok(r),
            Some(Fault::Unreachable) => Err(Transport("cannot connect")),
            Some(Fault::LostResponse) => Err(Transport("timed out")),
            None => Ok(self.handle_students(&query)),
        }
    }

    async fn upload_object(
        &self,
        bucket: &str,
        path: &str,
        _content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Reply, Transport> {
        self.upload_calls.fetch_add(1, Ordering::Relaxed);
        let fault = self.state().upload_faults.pop_front();
        let key = format!("{bucket}/{path}");
        match fault {
            Some(Fault::Reply(r)) => Ok(r),
            Some(Fault::Unreachable) => Err(Transport("cannot connect")),
            Some(Fault::LostResponse) => {
                self.state().objects.insert(key, body);
                Err(Transport("timed out"))
            }
            None => {
                self.state().objects.insert(key.clone(), body);
                Ok(Reply::json(
                    200,
                    serde_json::json!({"Key": key}).to_string(),
                ))
            }
        }
    }
}
