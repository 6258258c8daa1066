//! The cloud as the sync engine sees it: three calls, each answering with
//! the raw reply (status, content type, body) or a transport failure. What a
//! reply proves is decided in [`super::postgrest`], in one place for the
//! real client ([`super::client::Cloud`]) and the test twin
//! ([`super::twin::TwinCloud`]).

use std::future::Future;

/// An HTTP answer, unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type: Some("application/json; charset=utf-8".into()),
            body: body.into(),
        }
    }
}

/// No answer: the request may or may not have reached the cloud.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Transport(pub &'static str);

pub trait CloudApi: Send + Sync + 'static {
    /// Bulk upsert of attendance rows (a JSON array) keyed by `id`, asking
    /// for the stored ids back (`return=representation`, `select=id`).
    fn upsert_attendance(
        &self,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send;

    /// `GET /students` with these query parameters.
    fn get_students(
        &self,
        query: Vec<(&'static str, String)>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send;

    /// Uploads (or overwrites) one object in Storage.
    fn upload_object(
        &self,
        bucket: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send;
}

/// A shared cloud (tests keep a handle on the twin the engine uses).
impl<T: CloudApi> CloudApi for std::sync::Arc<T> {
    fn upsert_attendance(
        &self,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send {
        (**self).upsert_attendance(body)
    }

    fn get_students(
        &self,
        query: Vec<(&'static str, String)>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send {
        (**self).get_students(query)
    }

    fn upload_object(
        &self,
        bucket: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Transport>> + Send {
        (**self).upload_object(bucket, path, content_type, body)
    }
}
