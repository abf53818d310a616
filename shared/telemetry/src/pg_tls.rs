//! TLS for PostgreSQL connections (apply's and the coordinator's), with rustls through
//! tokio-rustls — the same TLS stack as gRPC ([`crate::tls`]), plugged into tokio-postgres.
//!
//! `sslmode` follows libpq:
//! - `disable`: no TLS;
//! - `prefer` (default): TLS when the server offers it, else plain; the certificate is not
//!   checked;
//! - `require`: TLS or fail; the certificate is not checked, unless a root certificate is
//!   configured (then it is checked like `verify-ca`, as libpq does);
//! - `verify-ca`: TLS, the server's chain must lead to the root certificate;
//! - `verify-full`: `verify-ca` plus the certificate must name the host connected to.
//!
//! The root certificate (PEM) comes from `PGSSLROOTCERT`, libpq's variable;
//! `verify-ca`/`verify-full` without it are refused with an error saying so.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use crate::tls::{provider, read_pem_file, roots, TlsError};

/// The environment variable naming the PEM file of the CA that signed the server's certificate.
pub const ROOT_CERT_VARIABLE: &str = "PGSSLROOTCERT";

/// A PostgreSQL `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PgSslMode {
    /// Parses an `sslmode` value; empty means `prefer` (libpq's default).
    pub fn parse(text: &str) -> Result<PgSslMode, TlsError> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "" | "prefer" => PgSslMode::Prefer,
            "disable" => PgSslMode::Disable,
            "require" => PgSslMode::Require,
            "verify-ca" | "verify_ca" => PgSslMode::VerifyCa,
            "verify-full" | "verify_full" => PgSslMode::VerifyFull,
            other => {
                return Err(TlsError::Config(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }

    /// The mode tokio-postgres negotiates with (verification is the connector's business).
    pub fn negotiation(self) -> SslMode {
        match self {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

/// A tokio-postgres TLS connector for one `sslmode`: pass it to `Config::connect` after
/// `Config::ssl_mode(mode.negotiation())`.
#[derive(Clone)]
pub struct PgTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").finish_non_exhaustive()
    }
}

impl PgTls {
    /// The connector for `mode` with an optional root certificate (PEM text; `origin` names
    /// where it came from, for errors).
    pub fn new(mode: PgSslMode, root_cert: Option<(&[u8], &str)>) -> Result<PgTls, TlsError> {
        let roots = match root_cert {
            Some((pem, origin)) => Some(Arc::new(roots(pem, "root certificate", origin)?)),
            None => None,
        };
        let verify = match (mode, roots) {
            (PgSslMode::VerifyCa | PgSslMode::VerifyFull, None) => {
                return Err(TlsError::Config(format!(
                    "sslmode {} checks the server's certificate: set {ROOT_CERT_VARIABLE} to the PEM file of the CA that signed it",
                    if mode == PgSslMode::VerifyCa { "verify-ca" } else { "verify-full" }
                )))
            }
            (PgSslMode::VerifyFull, Some(roots)) => Verify::Full(roots),
            (PgSslMode::Require | PgSslMode::VerifyCa, Some(roots)) => Verify::Chain(roots),
            _ => Verify::Nothing,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = match verify {
            Verify::Full(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
            Verify::Chain(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { webpki }))
                    .with_no_client_auth()
            }
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCheck(provider())))
                .with_no_client_auth(),
        };
        Ok(PgTls {
            config: Arc::new(config),
        })
    }

    /// The connector for `sslmode`, with the root certificate from `PGSSLROOTCERT` if set.
    pub fn from_env(sslmode: &str) -> Result<(SslMode, PgTls), TlsError> {
        let mode = PgSslMode::parse(sslmode)?;
        Ok((mode.negotiation(), PgTls::with_env_root(mode)?))
    }

    /// The connector for a parsed connection string (its `sslmode`: disable, prefer or
    /// require), with the root certificate from `PGSSLROOTCERT` if set.
    pub fn for_config(config: &tokio_postgres::Config) -> Result<PgTls, TlsError> {
        PgTls::with_env_root(match config.get_ssl_mode() {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Require => PgSslMode::Require,
            _ => PgSslMode::Prefer,
        })
    }

    fn with_env_root(mode: PgSslMode) -> Result<PgTls, TlsError> {
        let root = read_pem_file(ROOT_CERT_VARIABLE, "root certificate")?;
        PgTls::new(
            mode,
            root.as_ref()
                .map(|(pem, origin)| (pem.as_slice(), origin.as_str())),
        )
    }
}

/// An error with its causes: tokio-postgres' Display says "error performing TLS handshake"
/// and leaves the reason to `source()`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A hint for connection errors: what `sslmode` has to do with it, if anything.
pub fn sslmode_hint(sslmode: &str, error: &str) -> Option<String> {
    if error.contains("server does not support TLS") {
        Some(format!(
            "the server does not accept TLS but sslmode is {sslmode}: enable ssl on the server, or set sslmode: prefer or disable"
        ))
    } else if error.contains("invalid peer certificate") || error.contains("UnknownIssuer") {
        Some(format!(
            "the server's certificate was rejected under sslmode {sslmode}: point {ROOT_CERT_VARIABLE} at the CA that signed it, or use sslmode: require to skip the check"
        ))
    } else {
        None
    }
}

enum Verify {
    Nothing,
    Chain(Arc<rustls::RootCertStore>),
    Full(Arc<rustls::RootCertStore>),
}

/// `prefer`/`require` without a root certificate: encryption without authentication, as libpq.
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PgTlsConnect {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

/// One connection attempt's TLS handshake.
pub struct PgTlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = HandshakeFuture<S>;

    fn connect(self, stream: S) -> HandshakeFuture<S> {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(PgTlsStream(stream))
        })
    }
}

/// A TLS handshake in progress.
pub type HandshakeFuture<S> = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

/// An encrypted PostgreSQL connection.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (SCRAM-SHA-256, not -PLUS), as libpq's default
        // `channel_binding=prefer` falls back to.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_parse_like_libpq() {
        assert_eq!(PgSslMode::parse("").unwrap(), PgSslMode::Prefer);
        assert_eq!(PgSslMode::parse("Require").unwrap(), PgSslMode::Require);
        assert_eq!(
            PgSslMode::parse("verify-full").unwrap(),
            PgSslMode::VerifyFull
        );
        assert_eq!(PgSslMode::VerifyCa.negotiation(), SslMode::Require);
        assert_eq!(PgSslMode::Disable.negotiation(), SslMode::Disable);
        let err = PgSslMode::parse("allow-ish").unwrap_err().to_string();
        assert!(
            err.contains("allow-ish") && err.contains("verify-full"),
            "{err}"
        );
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let err = PgTls::new(PgSslMode::VerifyCa, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("verify-ca") && err.contains(ROOT_CERT_VARIABLE),
            "{err}"
        );
        assert!(PgTls::new(PgSslMode::Require, None).is_ok());
        let err = PgTls::new(PgSslMode::VerifyFull, Some((b"not pem", "test")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("root certificate"), "{err}");
    }

    #[test]
    fn hints_name_sslmode() {
        let hint = sslmode_hint(
            "require",
            "error performing TLS handshake: server does not support TLS",
        )
        .unwrap();
        assert!(hint.contains("sslmode is require"), "{hint}");
        assert!(sslmode_hint("require", "password authentication failed").is_none());
    }
}
