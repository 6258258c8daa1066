//! What PostgREST's answers prove, and how its filters are written. Pure:
//! no I/O, so every rule here has unit tests.
//!
//! Trust rules (issue 11, point 5):
//! - rows are *refused* only when PostgREST itself says so: a JSON error
//!   object with PostgreSQL's SQLSTATE in `code`, of class 22 (data
//!   exception) or 23 (integrity constraint), with status 400 or 409.
//!   Anything else (HTML from a gateway, no body, another status or content
//!   type, a PGRST or 42xxx code about our setup) is an infrastructure
//!   error: back off and keep the rows;
//! - rows are *stored* only when a 2xx JSON answer to
//!   `return=representation` with `select=id` lists their ids;
//! - text from outside is never echoed: summaries carry the status, a
//!   sanitised content type, the SQLSTATE and the body's length.

use std::collections::BTreeSet;

use serde::Deserialize;
use uuid::Uuid;

use super::cloud::Reply;
use crate::store::roster::RosterCursor;

/// The columns a roster pull selects.
pub const ROSTER_SELECT: &str =
    "student_number,full_name,grade,section,guardian_phone,active,updated_at";

/// A PostgREST error body (only what we act on).
#[derive(Debug, Deserialize)]
struct PgError {
    code: String,
    #[allow(dead_code)]
    message: String,
}

fn is_json(r: &Reply) -> bool {
    r.content_type.as_deref().is_some_and(|c| {
        let mime = c.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
            || mime.eq_ignore_ascii_case("application/vnd.pgrst.object+json")
    })
}

/// PostgREST's own error code, when the body is one of its JSON errors.
fn pg_code(r: &Reply) -> Option<String> {
    if !is_json(r) {
        return None;
    }
    let e: PgError = serde_json::from_slice(&r.body).ok()?;
    // A SQLSTATE is 5 characters of [0-9A-Z]; PGRST codes are "PGRST" + 3 digits.
    let ok = (e.code.len() == 5 || e.code.len() == 8)
        && e.code
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
    ok.then_some(e.code)
}

/// The content type reduced to a safe token for logs.
fn ctype_token(r: &Reply) -> &'static str {
    match r.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) {
        None => "none",
        Some(m) if m == "application/json" => "json",
        Some(m) if m == "text/html" => "html",
        Some(m) if m == "text/plain" => "text",
        Some(_) => "other",
    }
}

/// `HTTP 400 (html, 1234 bytes)` or `HTTP 400 (json, code 23514, 180 bytes)`.
pub fn summary(r: &Reply) -> String {
    match pg_code(r) {
        Some(code) => format!(
            "HTTP {} (json, code {code}, {} bytes)",
            r.status,
            r.body.len()
        ),
        None => format!(
            "HTTP {} ({}, {} bytes)",
            r.status,
            ctype_token(r),
            r.body.len()
        ),
    }
}

/// What an upsert answer proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertVerdict {
    /// The cloud shows it holds these ids.
    Stored(BTreeSet<Uuid>),
    /// PostgREST refused the rows for a row-level cause (SQLSTATE class 22
    /// or 23): split the batch until the row is isolated, then quarantine.
    RowRejected { status: u16, code: String },
    /// The request was too large for something on the way: split, but
    /// never quarantine for it.
    TooLarge,
    /// Nothing proven: back off and keep the rows.
    Infrastructure(String),
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: Uuid,
}

pub fn classify_upsert(r: &Reply) -> UpsertVerdict {
    if matches!(r.status, 200 | 201) {
        if !is_json(r) {
            return UpsertVerdict::Infrastructure(format!(
                "{}: not PostgREST's answer",
                summary(r)
            ));
        }
        return match serde_json::from_slice::<Vec<IdOnly>>(&r.body) {
            Ok(ids) => UpsertVerdict::Stored(ids.into_iter().map(|i| i.id).collect()),
            Err(_) => {
                UpsertVerdict::Infrastructure(format!("{}: not a list of stored ids", summary(r)))
            }
        };
    }
    if r.status == 413 {
        return UpsertVerdict::TooLarge;
    }
    if matches!(r.status, 400 | 409)
        && let Some(code) = pg_code(r)
        && (code.starts_with("22") || code.starts_with("23"))
    {
        return UpsertVerdict::RowRejected {
            status: r.status,
            code,
        };
    }
    UpsertVerdict::Infrastructure(summary(r))
}

/// What a roster page answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum RosterVerdict {
    Page(Vec<serde_json::Value>),
    /// A 4xx: the query itself is refused; retrying at once would fail the
    /// same way. Reported, retried at the next roster interval.
    Refused(String),
    /// Back off and retry.
    Infrastructure(String),
}

pub fn classify_roster(r: &Reply) -> RosterVerdict {
    if r.status == 200 {
        if !is_json(r) {
            return RosterVerdict::Infrastructure(format!(
                "{}: not PostgREST's answer",
                summary(r)
            ));
        }
        return match serde_json::from_slice::<Vec<serde_json::Value>>(&r.body) {
            Ok(rows) => RosterVerdict::Page(rows),
            Err(_) => RosterVerdict::Infrastructure(format!("{}: not a list of rows", summary(r))),
        };
    }
    // 408 and 429 are about timing, not the query.
    if (400..500).contains(&r.status) && !matches!(r.status, 401 | 403 | 408 | 429) {
        return RosterVerdict::Refused(summary(r));
    }
    RosterVerdict::Infrastructure(summary(r))
}

/// What a Storage upload answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadVerdict {
    Stored,
    /// Storage itself (a JSON error) refused this object for good.
    Refused(String),
    Infrastructure(String),
}

pub fn classify_upload(r: &Reply) -> UploadVerdict {
    if matches!(r.status, 200 | 201) && is_json(r) {
        return UploadVerdict::Stored;
    }
    if matches!(r.status, 400 | 413 | 415 | 422) && is_json(r) {
        return UploadVerdict::Refused(summary(r));
    }
    UploadVerdict::Infrastructure(summary(r))
}

/// A value quoted for a PostgREST filter: in double quotes, with `"` and
/// `\` escaped by a backslash, so reserved characters (`,.:()` and spaces)
/// inside it are data, never syntax.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The query of one roster page after `after` (keyset pagination on
/// `(updated_at, student_number)`).
pub fn roster_query(after: Option<&RosterCursor>, limit: usize) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("select", ROSTER_SELECT.to_string()),
        ("order", "updated_at.asc,student_number.asc".to_string()),
        ("limit", limit.to_string()),
    ];
    if let Some(c) = after {
        let (u, s) = (quote(&c.updated_at), quote(&c.student_number));
        q.push((
            "or",
            format!("(updated_at.gt.{u},and(updated_at.eq.{u},student_number.gt.{s}))"),
        ));
    }
    q
}

/// Parses the `or=` filter [`roster_query`] writes, per PostgREST's quoting
/// rules, into `(updated_at, student_number)`. The test twin answers with
/// PostgREST's parse error when this fails, as the real server would.
pub fn parse_roster_filter(f: &str) -> Option<(String, String)> {
    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn lit(&mut self, t: &str) -> Option<()> {
            if self.s[self.i..].starts_with(t.as_bytes()) {
                self.i += t.len();
                Some(())
            } else {
                None
            }
        }
        /// A value: quoted (with escapes) or bare up to a reserved char.
        fn value(&mut self) -> Option<String> {
            let mut out = Vec::new();
            if self.s.get(self.i) == Some(&b'"') {
                self.i += 1;
                loop {
                    match *self.s.get(self.i)? {
                        b'\\' => {
                            out.push(*self.s.get(self.i + 1)?);
                            self.i += 2;
                        }
                        b'"' => {
                            self.i += 1;
                            break;
                        }
                        c => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
            } else {
                while let Some(&c) = self.s.get(self.i) {
                    if matches!(c, b',' | b'(' | b')' | b'"') {
                        break;
                    }
                    out.push(c);
                    self.i += 1;
                }
            }
            String::from_utf8(out).ok()
        }
    }
    let mut p = P {
        s: f.as_bytes(),
        i: 0,
    };
    p.lit("(updated_at.gt.")?;
    let u1 = p.value()?;
    p.lit(",and(updated_at.eq.")?;
    let u2 = p.value()?;
    p.lit(",student_number.gt.")?;
    let s = p.value()?;
    p.lit("))")?;
    (p.i == f.len() && u1 == u2).then_some((u1, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, ctype: Option<&str>, body: &str) -> Reply {
        Reply {
            status,
            content_type: ctype.map(str::to_string),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_postgrest_row_errors_refuse_rows() {
        let json = Some("application/json; charset=utf-8");
        assert!(matches!(
            classify_upsert(&reply(
                400,
                json,
                r#"{"code":"23514","message":"violates check","details":"Failing row contains (Juan Dela Cruz, +639171234567)","hint":null}"#
            )),
            UpsertVerdict::RowRejected { status: 400, .. }
        ));
        assert!(matches!(
            classify_upsert(&reply(409, json, r#"{"code":"23505","message":"dup"}"#)),
            UpsertVerdict::RowRejected { status: 409, .. }
        ));
        for (status, ctype, body) in [
            (
                400,
                Some("text/html"),
                "<html>Request Header Or Cookie Too Large</html>",
            ),
            (400, None, ""),
            (
                400,
                json,
                r#"{"code":"PGRST204","message":"column missing"}"#,
            ),
            (
                400,
                json,
                r#"{"code":"42501","message":"permission denied"}"#,
            ),
            (422, json, "not json at all"),
            (403, json, r#"{"code":"23514","message":"x"}"#),
            (
                500,
                json,
                r#"{"code":"XX000","message":"row (Juan, +639171234567)"}"#,
            ),
            (502, Some("text/html"), "<h1>Bad gateway</h1>"),
        ] {
            let v = classify_upsert(&reply(status, ctype, body));
            let UpsertVerdict::Infrastructure(why) = v else {
                panic!("{status} {ctype:?} {body}: {v:?}")
            };
            assert!(
                !why.contains("Juan") && !why.contains("+63917") && !why.contains("Cookie"),
                "{why}"
            );
        }
        assert_eq!(
            classify_upsert(&reply(413, Some("text/html"), "x")),
            UpsertVerdict::TooLarge
        );
    }

    #[test]
    fn only_listed_ids_count_as_stored() {
        let id = Uuid::new_v4();
        let ok = reply(
            201,
            Some("application/json"),
            &format!(r#"[{{"id":"{id}"}}]"#),
        );
        assert_eq!(classify_upsert(&ok), UpsertVerdict::Stored([id].into()));
        for bad in [
            reply(200, Some("text/html"), "<html>ok</html>"),
            reply(201, None, ""),
            reply(201, Some("application/json"), ""),
            reply(200, Some("application/json"), r#"{"id":"x"}"#),
        ] {
            assert!(
                matches!(classify_upsert(&bad), UpsertVerdict::Infrastructure(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roster_refusals_are_reported_not_retried_as_transient() {
        let json = Some("application/json");
        assert!(matches!(
            classify_roster(&reply(
                400,
                json,
                r#"{"code":"PGRST100","message":"parse"}"#
            )),
            RosterVerdict::Refused(_)
        ));
        assert!(matches!(
            classify_roster(&reply(404, Some("text/html"), "")),
            RosterVerdict::Refused(_)
        ));
        assert!(matches!(
            classify_roster(&reply(503, json, "")),
            RosterVerdict::Infrastructure(_)
        ));
        assert!(matches!(
            classify_roster(&reply(429, json, "")),
            RosterVerdict::Infrastructure(_)
        ));
        assert!(matches!(
            classify_roster(&reply(200, Some("text/html"), "[]")),
            RosterVerdict::Infrastructure(_)
        ));
        assert_eq!(
            classify_roster(&reply(200, json, "[]")),
            RosterVerdict::Page(vec![])
        );
    }

    #[test]
    fn filter_values_are_quoted_and_round_trip() {
        assert_eq!(quote(r#"a"b\c,d"#), r#""a\"b\\c,d""#);
        for sn in [
            "2026-0001",
            r#"O"Brien,1"#,
            r"back\slash",
            "a.b:c(d)",
            "with space",
        ] {
            let c = RosterCursor {
                updated_at: "2026-11-01T00:00:00.123+00:00".into(),
                student_number: sn.into(),
            };
            let q = roster_query(Some(&c), 10);
            let or = &q.iter().find(|(k, _)| *k == "or").expect("or").1;
            assert_eq!(
                parse_roster_filter(or),
                Some((c.updated_at.clone(), sn.to_string())),
                "{or}"
            );
        }
        // What an unquoted filter did: a comma in the value breaks the parse.
        assert_eq!(
            parse_roster_filter("(updated_at.gt.x,and(updated_at.eq.x,student_number.gt.a,b))"),
            None
        );
    }
}
