//! Leader election for coordinators that share a PostgreSQL store: only the holder of a
//! session-level advisory lock drives tasks (ticks, lease expiry, assignments, API calls); the
//! others stand by and try to take the lock every check interval.
//!
//! The lock lives as long as the session holding it. A leader that exits or crashes closes its
//! session and the lock is free at once; a leader that loses its session (network, server
//! restart) notices on its next check and steps down before a standby can have taken over for
//! long. A standby that gets the lock refreshes every worker's lease (they could not reach it
//! before) and carries on from the store, like a restarted coordinator. Assignment generations
//! fence appliers against a stale leader's last words.

use std::time::Duration;

use dbsync_telemetry::pg_tls::PgTls;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::pg_store::{parse_url, pg_detail, store_tls};
use crate::store::StoreResult;
use crate::CancellationToken;

/// The advisory lock key every coordinator of one store competes for.
pub const LEADER_LOCK_KEY: i64 = 0x6462_7379_6e63_4c44;

/// Holds (or tries to take) the leader lock on its own session.
pub struct LeaderLease {
    config: tokio_postgres::Config,
    tls: PgTls,
    session: Option<Client>,
    held: bool,
}

impl LeaderLease {
    /// Prepares a lease on the store at `url`; nothing is connected yet.
    pub fn new(url: &str) -> StoreResult<LeaderLease> {
        let mut config = parse_url(url)?;
        config.application_name("dbsync-coordinator leader lease");
        // A leader whose host vanishes must not hold the lock for the kernel's default of hours.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        Ok(LeaderLease {
            tls: store_tls(&config)?,
            config,
            session: None,
            held: false,
        })
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// One step: when not leader, try to take the lock; when leader, check the session still
    /// works. Returns whether this process is leader now.
    pub async fn refresh(&mut self) -> bool {
        if let Err(e) = self.step().await {
            if self.held {
                tracing::error!(error = %pg_detail(&e), "lost the session holding the coordinator leader lock; standing by");
            } else {
                tracing::warn!(error = %pg_detail(&e), "cannot reach the coordinator store to contend for leadership");
            }
            self.session = None;
            self.held = false;
        }
        self.held
    }

    async fn step(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.session.as_ref().is_none_or(Client::is_closed) {
            // A new session cannot hold the lock of a closed one.
            self.held = false;
            let (client, connection) = self.config.connect(self.tls.clone()).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.session = Some(client);
        }
        let client = self.session.as_ref().expect("connected above");
        if self.held {
            client.simple_query("SELECT 1").await?;
        } else {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
                .await?;
            self.held = row.get::<_, bool>(0);
        }
        Ok(())
    }

    /// Gives the lock up and closes the session (closing it alone would free the lock too).
    pub async fn release(&mut self) {
        if let Some(client) = self.session.take() {
            if self.held {
                let _ = client
                    .execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK_KEY])
                    .await;
            }
        }
        self.held = false;
    }
}

/// Runs the election until `shutdown`, checking every `every`; the receiver says whether this
/// process is leader. The lock is released on shutdown.
pub fn spawn_election(
    mut lease: LeaderLease,
    every: Duration,
    shutdown: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let leader = lease.refresh().await;
            if *tx.borrow() != leader {
                if leader {
                    tracing::info!("this coordinator is now the leader");
                } else {
                    tracing::warn!("this coordinator is no longer the leader");
                }
                tx.send_replace(leader);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        tx.send_replace(false);
        lease.release().await;
    });
    rx
}
