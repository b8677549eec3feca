//! The APIs this broker serves and the versions of each: the single source for ApiVersions
//! responses, for the connection's version check and for `docs/protocol.md`.

use kafka_protocol::messages::ApiKey;

/// One served API: its key and the versions handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedApi {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn served(key: ApiKey, min_version: i16, max_version: i16) -> ServedApi {
    ServedApi {
        key,
        min_version,
        max_version,
    }
}

/// Every API served. Minimums are the oldest versions the `kafka-protocol` crate decodes (Kafka
/// 4.0 dropped the same ones, KIP-896); maximums are the newest it knows, which is at least
/// Kafka 4.0's. Only what is implemented is listed: ApiVersions advertises exactly this.
pub const SERVED_APIS: &[ServedApi] = &[
    served(ApiKey::Produce, 3, 13),
    served(ApiKey::Fetch, 4, 18),
    served(ApiKey::ListOffsets, 1, 10),
    served(ApiKey::Metadata, 0, 13),
    served(ApiKey::ApiVersions, 0, 4),
    served(ApiKey::CreateTopics, 2, 7),
    served(ApiKey::DeleteTopics, 1, 6),
    served(ApiKey::DeleteRecords, 0, 2),
    served(ApiKey::InitProducerId, 0, 5),
    served(ApiKey::OffsetForLeaderEpoch, 2, 4),
    served(ApiKey::DescribeConfigs, 1, 4),
    served(ApiKey::AlterConfigs, 0, 2),
    served(ApiKey::DescribeLogDirs, 1, 4),
    served(ApiKey::CreatePartitions, 0, 3),
    served(ApiKey::IncrementalAlterConfigs, 0, 1),
    served(ApiKey::DescribeCluster, 0, 2),
    served(ApiKey::ElectLeaders, 0, 2),
    served(ApiKey::FindCoordinator, 0, 6),
    served(ApiKey::JoinGroup, 0, 9),
    served(ApiKey::SyncGroup, 0, 5),
    served(ApiKey::Heartbeat, 0, 4),
    served(ApiKey::LeaveGroup, 0, 5),
    served(ApiKey::OffsetCommit, 2, 9),
    served(ApiKey::OffsetFetch, 1, 9),
    served(ApiKey::ListGroups, 0, 5),
    served(ApiKey::DescribeGroups, 0, 6),
    served(ApiKey::DeleteGroups, 0, 2),
    served(ApiKey::OffsetDelete, 0, 0),
    served(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    served(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The versions served for `key`, if it is served at all.
pub fn served_versions(key: ApiKey) -> Option<ServedApi> {
    SERVED_APIS.iter().copied().find(|api| api.key == key)
}

/// Whether `version` of `key` is served.
pub fn is_served(key: ApiKey, version: i16) -> bool {
    served_versions(key).is_some_and(|api| (api.min_version..=api.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_versions_are_ones_the_crate_knows() {
        for api in SERVED_APIS {
            let known = api.key.valid_versions();
            assert!(
                known.min <= api.min_version && api.max_version <= known.max,
                "{:?} {}..={} outside the crate's {}..={}",
                api.key,
                api.min_version,
                api.max_version,
                known.min,
                known.max
            );
        }
    }

    #[test]
    fn metadata_v11_and_later_only_with_describe_cluster() {
        let metadata = served_versions(ApiKey::Metadata).expect("served");
        if metadata.max_version >= 11 {
            assert!(served_versions(ApiKey::DescribeCluster).is_some());
        }
    }
}
