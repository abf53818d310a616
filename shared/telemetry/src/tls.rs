//! TLS for gRPC between services and from clients, with rustls (aws-lc-rs provider) through
//! tokio-rustls directly: tonic's own TLS features would change tonic's feature set for the
//! whole workspace, and a server only needs a stream of accepted TLS connections, a client
//! only a connector.
//!
//! Servers: `DBSYNC_TLS_CERT` and `DBSYNC_TLS_KEY` (PEM files) turn TLS on;
//! `DBSYNC_TLS_CLIENT_CA` additionally requires client certificates signed by that CA.
//! Clients: an `https://` URL connects with TLS, trusting the CA in `DBSYNC_TLS_CA`; with
//! `DBSYNC_TLS_CLIENT_CERT`/`DBSYNC_TLS_CLIENT_KEY` they present a certificate (mutual TLS);
//! `DBSYNC_TLS_SERVER_NAME` overrides the name checked in the server's certificate.
//!
//! Note: should tonic's `tls-*` feature ever be enabled in the workspace, tonic would try a
//! second TLS layer on `https://` URIs; [`connect`] would then have to pass tonic a
//! `tonic::transport::ClientTlsConfig` instead of its own connector.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

/// A TLS handshake that takes longer than this is dropped (it must not hold a connection slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS configuration problem: which file or setting, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {path} (set by {variable}): {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        variable: &'static str,
        source: std::io::Error,
    },
    #[error("the TLS {what} ({origin}) holds no usable PEM {expected}: {detail}")]
    Pem {
        what: &'static str,
        origin: String,
        expected: &'static str,
        detail: String,
    },
    #[error("{variable} is set but {missing} is not: set both (PEM files) or neither")]
    Incomplete {
        variable: &'static str,
        missing: &'static str,
    },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("{url} uses https but no CA is configured: set DBSYNC_TLS_CA to the PEM file of the CA that signed the server's certificate")]
    NoTrustedCa { url: String },
}

impl dbsync_core::error::Classify for TlsError {
    /// Configuration errors: retrying does not help until the files or settings are fixed.
    fn class(&self) -> dbsync_core::error::ErrorClass {
        dbsync_core::error::ErrorClass::Definite
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(
    pem: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            origin: origin.into(),
            expected: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            origin: origin.into(),
            expected: "certificate",
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: "key",
        origin: origin.into(),
        expected: "private key",
        detail: e.to_string(),
    })
}

pub(crate) fn roots(
    pem: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(pem, what, origin)? {
        store.add(cert).map_err(|e| TlsError::Pem {
            what,
            origin: origin.into(),
            expected: "CA certificate",
            detail: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The PEM file named by `variable`, with its origin for messages; `None` when unset.
pub(crate) fn read_pem_file(
    variable: &'static str,
    what: &'static str,
) -> Result<Option<(Vec<u8>, String)>, TlsError> {
    let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|source| TlsError::ReadFile {
        what,
        path: path.clone(),
        variable,
        source,
    })?;
    Ok(Some((bytes, format!("{variable}={}", path.display()))))
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA its clients'
/// certificates must be signed by.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

impl ServerTls {
    /// From PEM text: certificate chain (leaf first), private key, and the client CA when
    /// clients must present certificates.
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<ServerTls, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca, "client CA", "client CA")?),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                certificates(cert_chain, "certificate", "server certificate")?,
                private_key(key, "server key")?,
            )
            .map_err(|e| {
                TlsError::Config(format!("the server certificate and key do not fit: {e}"))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// From PEM files.
    pub fn from_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, TlsError> {
        let load = |path: &Path, what| {
            std::fs::read(path).map_err(|source| TlsError::ReadFile {
                what,
                path: path.into(),
                variable: "the caller",
                source,
            })
        };
        let ca = client_ca.map(|p| load(p, "client CA")).transpose()?;
        ServerTls::from_pem(
            &load(cert_chain, "certificate")?,
            &load(key, "key")?,
            ca.as_deref(),
        )
    }
}

/// The server TLS settings from `DBSYNC_TLS_CERT`, `DBSYNC_TLS_KEY` and optionally
/// `DBSYNC_TLS_CLIENT_CA`; `None` (plaintext) when `DBSYNC_TLS_CERT` is unset.
pub fn server_tls_from_env() -> Result<Option<ServerTls>, TlsError> {
    let cert = read_pem_file("DBSYNC_TLS_CERT", "certificate")?;
    let key = read_pem_file("DBSYNC_TLS_KEY", "key")?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                variable: "DBSYNC_TLS_CERT",
                missing: "DBSYNC_TLS_KEY",
            })
        }
        (None, Some(_)) => {
            return Err(TlsError::Incomplete {
                variable: "DBSYNC_TLS_KEY",
                missing: "DBSYNC_TLS_CERT",
            })
        }
        (Some(c), Some(k)) => (c, k),
    };
    let ca = read_pem_file("DBSYNC_TLS_CLIENT_CA", "client CA")?;
    ServerTls::from_pem(&cert.0, &key.0, ca.as_ref().map(|c| c.0.as_slice())).map(Some)
}

/// A client's TLS settings: the CA that signed the servers' certificates, optionally the
/// client's own certificate (mutual TLS) and a server name to check instead of the URL's host.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Client TLS settings from PEM text: trusted CA(s), and optionally (certificate chain, key).
pub fn client_tls(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca, "CA", "DBSYNC_TLS_CA")?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(cert, "client certificate", "client certificate")?,
                private_key(key, "client key")?,
            )
            .map_err(|e| {
                TlsError::Config(format!("the client certificate and key do not fit: {e}"))
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ClientTls {
        config: Arc::new(config),
        server_name: None,
    })
}

impl ClientTls {
    /// Checks the server's certificate for `name` instead of the URL's host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }
}

/// Client TLS settings from `DBSYNC_TLS_CA`, optionally `DBSYNC_TLS_CLIENT_CERT` and
/// `DBSYNC_TLS_CLIENT_KEY`, and `DBSYNC_TLS_SERVER_NAME`; `None` when `DBSYNC_TLS_CA` is unset.
pub fn client_tls_from_env() -> Result<Option<ClientTls>, TlsError> {
    let Some((ca, _)) = read_pem_file("DBSYNC_TLS_CA", "CA")? else {
        return Ok(None);
    };
    let cert = read_pem_file("DBSYNC_TLS_CLIENT_CERT", "client certificate")?;
    let key = read_pem_file("DBSYNC_TLS_CLIENT_KEY", "client key")?;
    let identity = match (&cert, &key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c.0.as_slice(), k.0.as_slice())),
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                variable: "DBSYNC_TLS_CLIENT_CERT",
                missing: "DBSYNC_TLS_CLIENT_KEY",
            })
        }
        (None, Some(_)) => {
            return Err(TlsError::Incomplete {
                variable: "DBSYNC_TLS_CLIENT_KEY",
                missing: "DBSYNC_TLS_CLIENT_CERT",
            })
        }
    };
    let tls = client_tls(&ca, identity)?;
    Ok(Some(
        match std::env::var("DBSYNC_TLS_SERVER_NAME")
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(name) => tls.with_server_name(name),
            None => tls,
        },
    ))
}

/// Connects `endpoint` like `Endpoint::connect`, with TLS when its URL is `https://`
/// (settings from [`client_tls_from_env`]). Drop-in for `endpoint.connect().await`.
pub async fn connect(endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
    match TlsConnector::for_endpoint(&endpoint) {
        Some(connector) => endpoint.connect_with_connector(connector).await,
        None => endpoint.connect().await,
    }
}

/// [`connect`] for `Endpoint::connect_lazy`.
pub fn connect_lazy(endpoint: Endpoint) -> Channel {
    match TlsConnector::for_endpoint(&endpoint) {
        Some(connector) => endpoint.connect_with_connector_lazy(connector),
        None => endpoint.connect_lazy(),
    }
}

/// [`connect`] with explicit settings (instead of the environment's) for `https://` URLs.
pub async fn connect_with(
    endpoint: Endpoint,
    tls: &ClientTls,
) -> Result<Channel, tonic::transport::Error> {
    if endpoint.uri().scheme_str() == Some("https") {
        endpoint
            .connect_with_connector(TlsConnector {
                tls: Ok(tls.clone()),
                url: endpoint.uri().to_string(),
            })
            .await
    } else {
        endpoint.connect().await
    }
}

/// Opens TCP, then TLS, for `https://` URIs. A configuration error is returned by every
/// connection attempt, so it reaches the caller through the usual connect error.
#[derive(Clone)]
struct TlsConnector {
    tls: Result<ClientTls, Arc<TlsError>>,
    url: String,
}

impl TlsConnector {
    fn for_endpoint(endpoint: &Endpoint) -> Option<TlsConnector> {
        if endpoint.uri().scheme_str() != Some("https") {
            return None;
        }
        let url = endpoint.uri().to_string();
        let tls = match client_tls_from_env() {
            Ok(Some(tls)) => Ok(tls),
            Ok(None) => Err(Arc::new(TlsError::NoTrustedCa { url: url.clone() })),
            Err(e) => Err(Arc::new(e)),
        };
        Some(TlsConnector { tls, url })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = this.tls.map_err(|e| -> BoxError { e.to_string().into() })?;
            let host = uri
                .host()
                .ok_or_else(|| -> BoxError { format!("{} has no host", this.url).into() })?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = tls.server_name.clone().unwrap_or(host);
            let name = ServerName::try_from(name.clone()).map_err(|e| -> BoxError {
                format!("'{name}' is not a valid TLS server name: {e}").into()
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Accepted connections for tonic's `serve_with_incoming_shutdown`: plain TCP, or TLS when
/// `tls` is given (handshakes run concurrently, off the accept loop).
pub fn incoming_tls(listener: TcpListener, tls: Option<ServerTls>) -> Incoming {
    match tls {
        None => Incoming::Plain(crate::incoming(listener)),
        Some(tls) => {
            let (sender, receiver) = tokio::sync::mpsc::channel(64);
            tokio::spawn(accept_tls(listener, tls, sender));
            Incoming::Tls(receiver)
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    tls: ServerTls,
    sender: tokio::sync::mpsc::Sender<std::io::Result<MaybeTls>>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = sender.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(MaybeTls::Tls(Box::new(stream)))).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The stream of accepted connections [`incoming_tls`] returns.
pub enum Incoming {
    Plain(crate::tokio_stream_shim::TcpIncoming),
    Tls(tokio::sync::mpsc::Receiver<std::io::Result<MaybeTls>>),
}

impl tonic::codegen::tokio_stream::Stream for Incoming {
    type Item = std::io::Result<MaybeTls>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Incoming::Plain(plain) => Pin::new(plain)
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(MaybeTls::Plain))),
            Incoming::Tls(receiver) => receiver.poll_recv(cx),
        }
    }
}

/// One accepted connection, plain or TLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for MaybeTls {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        };
        TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
