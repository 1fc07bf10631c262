//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the threshold,
//! so one write in forty or so paid several milliseconds for it (BENCHMARKS.md). A
//! background thread with its own connection runs passive checkpoints instead,
//! nudged after commits; a passive checkpoint never blocks the writer. The writer
//! keeps a far higher automatic threshold as a backstop in case this thread falls
//! behind (long-lived readers, a slow disk).

use rusqlite::Connection;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// WAL pages after which the writer checkpoints inline (backstop only; ≈ 32 MiB).
pub(super) const BACKSTOP_PAGES: i64 = 8192;

/// How long the thread lets commits accumulate before checkpointing them.
const SETTLE: Duration = Duration::from_millis(100);

/// The background checkpoint thread; stops when dropped.
pub(super) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(conn: Connection) -> std::io::Result<Self> {
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("waybill-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    // Let commits accumulate for a moment, folding their nudges into this
                    // checkpoint; a closing store (sender dropped) ends the thread at once.
                    let deadline = Instant::now() + SETTLE;
                    loop {
                        match nudged
                            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint skipped");
                    }
                }
            })?;
        Ok(Self {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Tell the thread a commit happened (never blocks).
    pub(super) fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
