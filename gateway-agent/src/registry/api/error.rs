//! The spec's error responses: a status and `{"errors":[{"code","message"}]}` with the codes
//! `oci-spec` defines.

use hyper::StatusCode;
use oci_spec::distribution::{ErrorCode, ErrorInfoBuilder, ErrorResponseBuilder};

use crate::registry::storage::StorageError;

/// A request that failed, as the client will see it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// `None`: a server-side failure; the body stays empty (the spec has no code for it).
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl ApiError {
    /// `status` with `code`.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Some(code),
            message: message.into(),
        }
    }

    /// A 500: logged here, not shown to the client.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("registry: {error:#}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: None,
            message: String::new(),
        }
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn denied(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, message)
    }

    /// The response body (empty for a 500).
    pub fn body(&self) -> Vec<u8> {
        let Some(code) = self.code.clone() else {
            return Vec::new();
        };
        let info = ErrorInfoBuilder::default()
            .code(code)
            .message(self.message.clone())
            .build();
        let response =
            info.and_then(|info| ErrorResponseBuilder::default().errors(vec![info]).build());
        match response {
            Ok(response) => serde_json::to_vec(&response).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        let message = error.to_string();
        match error {
            StorageError::DigestInvalid { .. } => {
                ApiError::bad_request(ErrorCode::DigestInvalid, message)
            }
            StorageError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                message,
            ),
            StorageError::UploadUnknown => {
                ApiError::not_found(ErrorCode::BlobUploadUnknown, message)
            }
            StorageError::UploadConflict => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::BlobUploadInvalid, message)
            }
            StorageError::RangeInvalid { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                message,
            ),
            StorageError::Io(error) => ApiError::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_specs_code() {
        let error = ApiError::bad_request(ErrorCode::NameInvalid, "bad name");
        let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(body["errors"][0]["message"], "bad name");
        assert!(ApiError::internal("disk on fire").body().is_empty());
    }
}
