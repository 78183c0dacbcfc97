//! What a failed fetch looks like to the mirror's client: the spec's error body, with the
//! status that says whose fault it is. An unreachable upstream (Tor down, the registry down)
//! is a `503` naming the reason; what the upstream said no to keeps its meaning (`404`,
//! `403`, `429`); a response that is not what was asked for is a `502`.

use hyper::StatusCode;
use oci_spec::distribution::ErrorCode;

use super::upstream::UpstreamError;
use crate::registry::api::error::ApiError;

/// Why a fetch into the cache failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The upstream could not be reached or said no.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The content does not hash to its digest: nothing was stored.
    #[error("{0}")]
    DigestMismatch(String),
    /// The cache's own store failed (disk full, say).
    #[error("the mirror's store: {0}")]
    Store(String),
}

impl FetchError {
    /// The client's answer; `code` is the spec's code for the missing thing
    /// (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`).
    pub fn to_api(&self, code: ErrorCode) -> ApiError {
        let message = self.to_string();
        match self {
            FetchError::Upstream(UpstreamError::Unreachable { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                format!("not in the mirror's cache, and {message}"),
            ),
            FetchError::Upstream(UpstreamError::Status { status, .. }) => match *status {
                StatusCode::NOT_FOUND => ApiError::not_found(code, message),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::denied(message),
                StatusCode::TOO_MANY_REQUESTS => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    message,
                ),
                _ => ApiError::new(StatusCode::BAD_GATEWAY, code, message),
            },
            FetchError::Upstream(UpstreamError::Invalid { .. }) | FetchError::DigestMismatch(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, code, message)
            }
            FetchError::Store(_) => ApiError::internal(message),
        }
    }

    /// Whether the upstream was unreachable (as opposed to answering).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            FetchError::Upstream(UpstreamError::Unreachable { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_a_503_with_the_specs_body() {
        let error = FetchError::Upstream(UpstreamError::Unreachable {
            upstream: "hub.test".into(),
            reason: "egress not ready: Tor is not bootstrapped".into(),
        });
        let api = error.to_api(ErrorCode::ManifestUnknown);
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(&api.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("hub.test is unreachable"), "{message}");
        assert!(message.contains("Tor is not bootstrapped"), "{message}");
    }

    #[test]
    fn the_upstreams_answers_keep_their_meaning() {
        let status = |status| {
            FetchError::Upstream(UpstreamError::Status {
                upstream: "u".into(),
                status,
                detail: String::new(),
            })
            .to_api(ErrorCode::BlobUnknown)
            .status
        };
        assert_eq!(status(StatusCode::NOT_FOUND), StatusCode::NOT_FOUND);
        assert_eq!(status(StatusCode::UNAUTHORIZED), StatusCode::FORBIDDEN);
        assert_eq!(
            status(StatusCode::TOO_MANY_REQUESTS),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(StatusCode::INTERNAL_SERVER_ERROR),
            StatusCode::BAD_GATEWAY
        );
        let mismatch = FetchError::DigestMismatch("x".into()).to_api(ErrorCode::BlobUnknown);
        assert_eq!(mismatch.status, StatusCode::BAD_GATEWAY);
    }
}
