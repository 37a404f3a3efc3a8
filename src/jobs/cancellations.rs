//! Cancelled jobs, told to this process's batches as soon as the cancellation commits.
//!
//! `cancelJob`, in whichever process it is called, moves the job to CANCELLED, and a trigger
//! sends the job's id on [`CHANNEL`]. Every work process listens, and its batches of that job
//! stop their transfers at once and give back what they hold. Should the listener lose its
//! connection, notifications sent meanwhile are lost: the batches are then told to check
//! their jobs now ([`Signal::Missed`]), and in any case each batch's heartbeat finds its job
//! cancelled, later.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// The notification channel the trigger of migration 0007 sends on.
pub const CHANNEL: &str = "autos_cancelled";

/// What the batches of this process are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// This job was cancelled.
    Cancelled(Uuid),
    /// Cancellations may have been missed: check your job now.
    Missed,
}

/// The process's cancellation announcements: batches subscribe, the listener sends.
#[derive(Clone)]
pub struct Cancellations(broadcast::Sender<Signal>);

impl Default for Cancellations {
    fn default() -> Self {
        Cancellations(broadcast::channel(256).0)
    }
}

impl Cancellations {
    /// Announcements from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.0.subscribe()
    }

    fn send(&self, signal: Signal) {
        // Nobody listening (no batch running) is fine.
        let _ = self.0.send(signal);
    }

    /// Listens for cancellations on `pool`'s database until `stop` changes (or its sender is
    /// dropped), announcing each.
    pub async fn listen(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        let mut listener = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(active) = listener.as_mut() else {
                let connected = tokio::select! {
                    connected = connect(&pool) => connected,
                    _ = stop.changed() => return,
                };
                match connected {
                    Ok(connected) => {
                        listener = Some(connected);
                        // Whatever was sent while there was no listener is lost.
                        self.send(Signal::Missed);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for cancellations; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            // Stopping, or the application is gone.
                            _ = stop.changed() => return,
                        }
                    }
                }
                continue;
            };
            tokio::select! {
                _ = stop.changed() => return,
                // `try_recv`, not `recv`: a lost connection must be seen, not silently
                // replaced, so that the batches hear that notifications may be missing.
                received = active.try_recv() => match received {
                    Ok(Some(notification)) => match Uuid::parse_str(notification.payload()) {
                        Ok(job) => self.send(Signal::Cancelled(job)),
                        Err(_) => tracing::warn!(payload = notification.payload(), "unexpected cancellation payload"),
                    },
                    Ok(None) => {
                        tracing::warn!("cancellation listener lost its connection; reconnecting");
                        listener = None;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cancellation listener interrupted; reconnecting");
                        listener = None;
                    }
                },
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
