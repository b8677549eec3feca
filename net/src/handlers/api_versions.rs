//! ApiVersions: the APIs and versions this broker serves (`crate::apis::SERVED_APIS`).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use crate::apis::SERVED_APIS;
use crate::codes::{KafkaError, NONE};

pub fn handle(_request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(NONE)
        .with_api_keys(served())
}

/// The answer to an ApiVersions request at a version this broker does not know: v0 with
/// UNSUPPORTED_VERSION and the served versions, from which the client picks (KIP-511).
pub fn unsupported_version_response() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(KafkaError::UnsupportedVersion.code())
            .with_api_keys(served()),
    )
}

fn served() -> Vec<ApiVersion> {
    SERVED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}
