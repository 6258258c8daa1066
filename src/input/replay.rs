//! Replay source: payloads from a file or a list, at a fixed pace.
//!
//! Used by the demo, by commissioning ("does the pipeline record these?") and
//! by the tests. Unlike a camera it never drops a payload: when the pipeline
//! is busy it waits.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BoxFuture, RawScan, ScanSink, ScanSource, SourceError, SourceKind};

pub struct ReplaySource {
    name: String,
    /// Each payload with the pause before it.
    payloads: Vec<(Duration, Vec<u8>)>,
    repeat: bool,
}

impl ReplaySource {
    pub fn from_payloads(payloads: Vec<Vec<u8>>, interval: Duration, repeat: bool) -> Self {
        Self::timed(
            payloads.into_iter().map(|p| (interval, p)).collect(),
            repeat,
        )
    }

    /// A generated stream: each payload is sent after its own pause.
    pub fn timed(payloads: Vec<(Duration, Vec<u8>)>, repeat: bool) -> Self {
        ReplaySource {
            name: "replay".into(),
            payloads,
            repeat,
        }
    }

    /// One payload per line; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path, interval: Duration, repeat: bool) -> Result<Self, SourceError> {
        let text = std::fs::read(path).map_err(|err| SourceError::Io {
            source_name: "replay".into(),
            path: path.display().to_string(),
            err,
        })?;
        let mut source = Self::from_payloads(parse_lines(&text), interval, repeat);
        source.name = format!("replay:{}", path.display());
        Ok(source)
    }
}

fn parse_lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace) && !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect()
}

impl ScanSource for ReplaySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        self: Box<Self>,
        sink: ScanSink,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            if self.payloads.is_empty() {
                tracing::warn!(source = %self.name, "replay source has no payloads");
                shutdown.cancelled().await;
                return Ok(());
            }
            loop {
                for (pause, p) in &self.payloads {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(*pause) => {}
                    }
                    let scan = RawScan::now(p.clone(), SourceKind::Replay);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        sent = sink.send(scan) => if sent.is_err() {
                            // The pipeline is gone: the daemon is stopping.
                            return Ok(());
                        }
                    }
                }
                if !self.repeat {
                    tracing::info!(source = %self.name, count = self.payloads.len(), "replay finished");
                    shutdown.cancelled().await;
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_skip_comments_and_blanks() {
        let p = parse_lines(b"# header\n2024-0001\r\n\n  \n{\"student_number\":\"2\"}\n");
        assert_eq!(
            p,
            vec![
                b"2024-0001".to_vec(),
                b"{\"student_number\":\"2\"}".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn replays_in_order_and_stops_on_shutdown() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let src = Box::new(ReplaySource::from_payloads(
            vec![b"a".to_vec(), b"b".to_vec()],
            Duration::from_millis(1),
            false,
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(src.run(tx, stop.clone()));
        assert_eq!(rx.recv().await.unwrap().payload, b"a");
        assert_eq!(rx.recv().await.unwrap().payload, b"b");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = ReplaySource::from_file(Path::new("/nonexistent/x.txt"), Duration::ZERO, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/x.txt"));
    }
}
