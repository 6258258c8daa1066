//! Watched tasks: the daemon is a set of long-running tasks, and the death of
//! any one of them ends the daemon (with an error, so systemd restarts it)
//! rather than leaving a half-working kiosk that still looks alive.

use std::future::Future;

use tokio::task::JoinSet;

pub struct WatchedTasks {
    set: JoinSet<(String, anyhow::Result<()>)>,
}

/// How the first task to end ended.
#[derive(Debug)]
pub enum Ended {
    /// A task returned Ok while the daemon was meant to keep running.
    Finished(String),
    Failed(String, anyhow::Error),
    Panicked(String),
}

impl Default for WatchedTasks {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchedTasks {
    pub fn new() -> Self {
        WatchedTasks {
            set: JoinSet::new(),
        }
    }

    pub fn spawn<F>(&mut self, name: impl Into<String>, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        self.set.spawn(async move { (name, fut.await) });
    }

    /// Waits for the first task to end. Pending forever if there are none.
    pub async fn first_ended(&mut self) -> Ended {
        match self.set.join_next().await {
            Some(Ok((name, Ok(())))) => Ended::Finished(name),
            Some(Ok((name, Err(e)))) => Ended::Failed(name, e),
            Some(Err(e)) => Ended::Panicked(e.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Waits for all remaining tasks; returns the names of those that failed.
    pub async fn join_all(mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(r) = self.set.join_next().await {
            match r {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::warn!(task = %name, error = %format!("{e:#}"), "task failed during shutdown");
                    failed.push(name);
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        failed
    }

    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_reported() {
        let mut t = WatchedTasks::new();
        t.spawn("forever", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        t.spawn("dies", async {
            Err(anyhow::anyhow!("camera thread exited"))
        });
        match t.first_ended().await {
            Ended::Failed(name, e) => {
                assert_eq!(name, "dies");
                assert!(e.to_string().contains("camera"));
            }
            other => panic!("{other:?}"),
        }
        t.abort_all();
    }

    #[tokio::test]
    async fn panics_are_caught() {
        let mut t = WatchedTasks::new();
        t.spawn("panics", async { panic!("boom") });
        assert!(matches!(t.first_ended().await, Ended::Panicked(_)));
    }
}
