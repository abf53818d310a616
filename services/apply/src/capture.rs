//! The capture service client, with the bearer token when one is configured.

use dbsync_core::Secret;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApplyError, Result};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct AuthInterceptor(Option<MetadataValue<Ascii>>);

impl AuthInterceptor {
    pub fn new(token: Option<&Secret>) -> AuthInterceptor {
        AuthInterceptor(
            token
                .filter(|t| !t.is_empty())
                .and_then(|t| format!("Bearer {}", t.expose()).parse().ok()),
        )
    }
}

impl Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        dbsync_telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

pub type CaptureClient = CaptureServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// `http://` is assumed when the address has no scheme.
pub fn endpoint_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

pub async fn connect_channel(address: &str) -> Result<Channel> {
    let url = endpoint_url(address);
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| ApplyError::InvalidPlan {
        object: address.to_string(),
        detail: format!("not a valid gRPC address: {e}"),
    })?;
    dbsync_telemetry::connect(
        endpoint
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(10)),
    )
    .await
    .map_err(|e| ApplyError::CaptureUnavailable {
        address: address.to_string(),
        action: "connecting",
        detail: e.to_string(),
    })
}

pub async fn connect(address: &str, token: Option<&Secret>) -> Result<CaptureClient> {
    let channel = connect_channel(address).await?;
    Ok(
        CaptureServiceClient::with_interceptor(channel, AuthInterceptor::new(token))
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20),
    )
}
