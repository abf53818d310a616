//! Connections to SQL Server: tiberius 0.13 over a tokio `TcpStream`, and a small pool per
//! source connection and database.
//!
//! - `encrypt = false` asks for no TLS at all (`EncryptionLevel::NotSupported`);
//!   `encrypt = true` requires it (`EncryptionLevel::Required`), trusting the server
//!   certificate only when `trust_server_certificate` is set.
//! - Errors name `host:port` and the user, never the password.
//! - A connection goes back to the pool only when the code that used it says it is clean
//!   (no open transaction): see [`PooledClient::mark_clean`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dbsync_core::error::ErrorClass;
use dbsync_core::secret::redact;
use dbsync_proto::v1::SourceConnection;
use parking_lot::Mutex;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::error::{CaptureError, Result};

/// A logged-in tiberius client.
pub type SqlClient = Client<Compat<TcpStream>>;

/// How long connecting and logging in may take before it counts as a connection failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Idle connections kept per pool.
const MAX_IDLE_PER_POOL: usize = 8;

/// Everything that identifies a pool. Holds the password, so it has no `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    encrypt: bool,
    trust_server_certificate: bool,
    application_name: String,
}

impl PoolKey {
    fn new(source: &SourceConnection, database: &str) -> Result<PoolKey> {
        if source.host.trim().is_empty() {
            return Err(CaptureError::InvalidRequest(
                "The source connection has no host: set source.host".into(),
            ));
        }
        let port = if source.port == 0 { 1433 } else { source.port };
        let port = u16::try_from(port).map_err(|_| {
            CaptureError::InvalidRequest(format!("Source port {port} is out of range (1-65535)"))
        })?;
        let database = if database.is_empty() {
            source.database.clone()
        } else {
            database.to_string()
        };
        Ok(PoolKey {
            host: source.host.clone(),
            port,
            user: source.user.clone(),
            password: source.password.clone(),
            database,
            encrypt: source.encrypt,
            trust_server_certificate: source.trust_server_certificate,
            application_name: if source.application_name.is_empty() {
                "dbsync-capture".to_string()
            } else {
                source.application_name.clone()
            },
        })
    }

    fn config(&self) -> Config {
        let mut config = Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.authentication(AuthMethod::sql_server(&self.user, &self.password));
        if !self.database.is_empty() {
            config.database(&self.database);
        }
        config.application_name(&self.application_name);
        if self.encrypt {
            config.encryption(EncryptionLevel::Required);
            if self.trust_server_certificate {
                config.trust_cert();
            }
        } else {
            config.encryption(EncryptionLevel::NotSupported);
        }
        config
    }

    fn connect_error(&self, detail: String, class: ErrorClass) -> CaptureError {
        CaptureError::Connect {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            detail: redact(&detail, &[&self.password]),
            class,
        }
    }

    async fn connect(&self) -> Result<SqlClient> {
        let attempt = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| self.connect_error(e.to_string(), ErrorClass::Connection))?;
            let _ = tcp.set_nodelay(true);
            Client::connect(self.config(), tcp.compat_write())
                .await
                .map_err(|e| {
                    let class = match &e {
                        // 18456: login failed (wrong user or password); 4060: cannot open database
                        tiberius::error::Error::Server(t)
                            if t.code() == 18456 || t.code() == 4060 =>
                        {
                            ErrorClass::Definite
                        }
                        tiberius::error::Error::Server(_) => ErrorClass::Definite,
                        tiberius::error::Error::Tls(_) => ErrorClass::Definite,
                        _ => ErrorClass::Connection,
                    };
                    let hint = match &e {
                        tiberius::error::Error::Server(t) if t.code() == 18456 => {
                            " (check the user name and password of the source connection)"
                        }
                        tiberius::error::Error::Server(t) if t.code() == 4060 => {
                            " (check that the database exists and the user may open it)"
                        }
                        _ => "",
                    };
                    self.connect_error(format!("{e}{hint}"), class)
                })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(self.connect_error(
                format!(
                    "no answer within {} s (is the host reachable and SQL Server listening?)",
                    CONNECT_TIMEOUT.as_secs()
                ),
                ErrorClass::Connection,
            )),
        }
    }
}

/// The pool of one (source connection, database).
pub struct SourcePool {
    key: PoolKey,
    idle: Mutex<Vec<SqlClient>>,
}

impl SourcePool {
    /// `host:port/database`, safe to log.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.key.host, self.key.port, self.key.database)
    }

    /// The database this pool's connections are in.
    pub fn database(&self) -> &str {
        &self.key.database
    }

    /// An idle connection, or a new one.
    pub async fn get(self: &Arc<Self>) -> Result<PooledClient> {
        let idle = self.idle.lock().pop();
        let client = match idle {
            Some(c) => c,
            None => self.key.connect().await?,
        };
        Ok(PooledClient {
            client: Some(client),
            pool: Arc::clone(self),
            clean: false,
        })
    }

    /// A connection that is not shared with the pool (long-running streams).
    pub async fn dedicated(&self) -> Result<SqlClient> {
        self.key.connect().await
    }
}

/// A connection borrowed from a pool. It goes back to the pool on drop only after
/// [`PooledClient::mark_clean`]; otherwise it is closed (it may hold an open transaction or a
/// half-read result).
pub struct PooledClient {
    client: Option<SqlClient>,
    pool: Arc<SourcePool>,
    clean: bool,
}

impl PooledClient {
    pub fn client(&mut self) -> &mut SqlClient {
        self.clean = false;
        self.client.as_mut().expect("client present until drop")
    }

    /// The connection has no open transaction and no unread result: it may be reused.
    pub fn mark_clean(&mut self) {
        self.clean = true;
    }
}

impl std::ops::Deref for PooledClient {
    type Target = SqlClient;
    fn deref(&self) -> &SqlClient {
        self.client.as_ref().expect("client present until drop")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.clean {
                let mut idle = self.pool.idle.lock();
                if idle.len() < MAX_IDLE_PER_POOL {
                    idle.push(client);
                }
            }
        }
    }
}

/// All pools of the process, keyed by source connection and database.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<SourcePool>>>,
}

impl Pools {
    /// The pool for `source` in `database` (empty: the connection's own database).
    pub fn pool(&self, source: &SourceConnection, database: &str) -> Result<Arc<SourcePool>> {
        let key = PoolKey::new(source, database)?;
        let mut pools = self.pools.lock();
        Ok(Arc::clone(pools.entry(key.clone()).or_insert_with(|| {
            Arc::new(SourcePool {
                key,
                idle: Mutex::new(Vec::new()),
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsync_core::error::Classify;

    fn source(password: &str) -> SourceConnection {
        SourceConnection {
            host: "127.0.0.1".into(),
            port: 1,
            user: "sa".into(),
            password: password.into(),
            database: "master".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn unreachable_source_names_host_and_user_but_not_password() {
        let pools = Pools::default();
        let pool = pools.pool(&source("S3cret!pw"), "").unwrap();
        let err = pool.get().await.err().expect("port 1 refuses connections");
        let text = format!("{err} {err:?}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.contains("'sa'"), "{text}");
        assert!(!text.contains("S3cret!pw"), "{text}");
        assert_eq!(err.class(), ErrorClass::Connection);
    }

    #[test]
    fn same_source_and_database_share_one_pool() {
        let pools = Pools::default();
        let a = pools.pool(&source("x"), "db1").unwrap();
        let b = pools.pool(&source("x"), "db1").unwrap();
        let c = pools.pool(&source("x"), "db2").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.describe(), "127.0.0.1:1/db2");
    }
}
