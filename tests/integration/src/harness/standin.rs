//! The SQL Server stand-in in-process: the T-SQL engine with CDC and its TDS server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dbsync_sqlserver_sim::engine::cdc::{CaptureMode, Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{sample_batches, SAMPLE_DATABASE};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_sqlserver_sim::workload::{self, SqlClient};

/// How the stand-in's CDC capture job runs.
#[derive(Clone, Copy, Debug)]
pub enum CdcTiming {
    /// Changes reach the change tables at commit (deterministic).
    AtCommit,
    /// An asynchronous capture job polling at this interval, as SQL Server's.
    Job(Duration),
}

/// A running stand-in.
pub struct StandIn {
    pub engine: Engine,
    pub cdc: Arc<Cdc>,
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    server: ServerHandle,
}

impl StandIn {
    /// Starts the engine (with CDC installed) and its TDS server on 127.0.0.1:0; with
    /// `sample_rows`, creates the sample database `shop` with that many rows per ordinary table
    /// and prepares it as a DBA would for dbsync (snapshot isolation on, a full and a log backup).
    pub async fn start(sample_rows: Option<usize>, timing: CdcTiming) -> anyhow::Result<StandIn> {
        let config = EngineConfig::default();
        let password = config.sa_password.clone();
        let engine = Engine::new(config);
        let cdc_config = match timing {
            CdcTiming::AtCommit => CdcConfig {
                mode: CaptureMode::Synchronous,
                ..Default::default()
            },
            CdcTiming::Job(every) => CdcConfig {
                mode: CaptureMode::Agent,
                agent_poll_override: Some(every),
                ..Default::default()
            },
        };
        let cdc = Cdc::install(&engine, cdc_config);
        if let Some(rows) = sample_rows {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || load_sample(&engine, rows)).await??;
        }
        let server = Server::start("127.0.0.1:0".parse()?, Arc::new(engine.clone()))
            .await
            .context("start the TDS server")?;
        Ok(StandIn {
            engine,
            cdc,
            addr: server.addr,
            user: "sa".into(),
            password,
            server,
        })
    }

    /// Runs a T-SQL script (batches separated by `GO` lines are not supported: one batch per call).
    pub fn run(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        self.engine
            .run(database, sql)
            .map_err(|e| anyhow::anyhow!("stand-in: {e:?}"))?;
        Ok(())
    }

    /// Runs a DDL statement while other sessions write. The stand-in answers a DDL that meets
    /// another transaction's locks on its table with error 1222 at once, where SQL Server
    /// would wait for its schema-modification lock, so it is tried again until those
    /// transactions have ended (a minute at most).
    pub async fn run_ddl(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        super::wait_for(
            &format!("DDL `{sql}` to get its lock"),
            Duration::from_secs(60),
            || async {
                match self.engine.run(database, sql) {
                    Ok(_) => Ok(Ok(())),
                    Err(e) if e.number == 1222 => Ok(Err(e.message)),
                    Err(e) => Err(anyhow::anyhow!("stand-in: {e:?}")),
                }
            },
        )
        .await
    }

    /// A tiberius connection to `database` as `sa`.
    pub async fn connect(&self, database: &str) -> anyhow::Result<SqlClient> {
        workload::connect(self.addr, database, &self.user, &self.password)
            .await
            .map_err(|e| anyhow::anyhow!("connect to the stand-in: {e}"))
    }

    /// The highest LSN in `cdc.lsn_time_mapping` of `database` (what `fn_cdc_get_max_lsn` returns).
    pub fn max_lsn(&self, database: &str) -> Option<Vec<u8>> {
        self.cdc.max_lsn(database).map(|l| l.to_bytes().to_vec())
    }

    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

fn load_sample(engine: &Engine, rows: usize) -> anyhow::Result<()> {
    let mut session = engine.system_session("master");
    for batch in sample_batches(rows) {
        session
            .run(&batch)
            .map_err(|e| anyhow::anyhow!("sample database batch failed: {e:?}"))?;
    }
    prepare_database(engine, SAMPLE_DATABASE)
}

/// What a DBA does before pointing dbsync at a database: snapshot isolation for consistent
/// chunk reads, and the backups that start the log chain of the FULL recovery model.
pub fn prepare_database(engine: &Engine, database: &str) -> anyhow::Result<()> {
    let mut session = engine.system_session("master");
    for sql in [
        format!("ALTER DATABASE [{database}] SET ALLOW_SNAPSHOT_ISOLATION ON"),
        format!("ALTER DATABASE [{database}] SET READ_COMMITTED_SNAPSHOT ON"),
        format!("BACKUP DATABASE [{database}] TO DISK = N'/dev/null'"),
        format!("BACKUP LOG [{database}] TO DISK = N'/dev/null'"),
    ] {
        session
            .run(&sql)
            .map_err(|e| anyhow::anyhow!("{sql}: {e:?}"))?;
    }
    Ok(())
}
