//! `ringlog group list | describe | delete | reset-offsets`.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetFetchRequest, RequestKind, ResponseKind,
};
use ringlog_net::client::admin;
use ringlog_net::client::group::{self, GroupMember};
use ringlog_net::client::{error_name, text, wrong_kind, Connection};
use serde::Serialize;

use super::client::Client;
use super::output::{print, print_json, Table};
use super::topic::existing_topic;
use super::{codes, CliError, CliResult, Connect, CLIENT_ID};

/// Group states in which no member holds partitions, so offsets may be changed from outside.
const INACTIVE_STATES: [&str; 2] = ["Empty", "Dead"];

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups on every broker.
    List {
        #[command(flatten)]
        connect: Connect,
    },
    /// Show a group's state, members, assignments, committed offsets and lag.
    Describe {
        #[command(flatten)]
        connect: Connect,
        #[arg(value_name = "GROUP")]
        group: String,
    },
    /// Delete groups and their committed offsets (only groups without members).
    Delete {
        #[command(flatten)]
        connect: Connect,
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets; shows the plan unless --execute is given.
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
#[command(group(ArgGroup::new("topics").required(true).args(["topic", "all_topics"])))]
pub struct ResetArgs {
    #[command(flatten)]
    connect: Connect,
    #[arg(value_name = "GROUP")]
    group: String,
    /// A topic whose offsets to move (all its partitions); repeat for more.
    #[arg(long, short = 't', value_name = "TOPIC")]
    topic: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the log start of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end of each partition.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (clamped into each partition's log).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first record at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Commit the new offsets; without it, only print them.
    #[arg(long)]
    execute: bool,
}

pub fn run(command: GroupCommand) -> CliResult {
    match command {
        GroupCommand::List { connect } => list(&connect),
        GroupCommand::Describe { connect, group } => describe(&connect, &group),
        GroupCommand::Delete { connect, groups } => delete(&connect, &groups),
        GroupCommand::ResetOffsets(args) => reset_offsets(&args),
    }
}

#[derive(Debug, Serialize)]
struct Listed {
    group: String,
    state: String,
    #[serde(rename = "type")]
    group_type: String,
    protocol_type: String,
    coordinator: i32,
}

fn list(connect: &Connect) -> CliResult {
    let mut client = Client::connect(connect)?;
    let metadata = client.metadata(Some(&[]))?;
    let mut groups = Vec::new();
    for broker in &metadata.brokers {
        let (_, response) = client.node(broker.node_id)?.call(
            ApiKey::ListGroups,
            0..=5,
            RequestKind::ListGroups(ListGroupsRequest::default()),
        )?;
        let ResponseKind::ListGroups(response) = response else {
            return Err(wrong_kind(ApiKey::ListGroups).into());
        };
        if response.error_code != 0 {
            return Err(CliError::kafka(
                format!("listing the groups of broker {}", broker.node_id),
                response.error_code,
                None,
            ));
        }
        for group in response.groups {
            groups.push(Listed {
                group: group.group_id.0.to_string(),
                state: or_dash(group.group_state.as_str()),
                group_type: or_dash(group.group_type.as_str()),
                protocol_type: or_dash(group.protocol_type.as_str()),
                coordinator: broker.node_id,
            });
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    if connect.json {
        return print_json(&groups);
    }
    let mut table = Table::new(&["GROUP", "STATE", "TYPE", "PROTOCOL-TYPE", "COORDINATOR"]);
    for group in &groups {
        table.row(vec![
            group.group.clone(),
            group.state.clone(),
            group.group_type.clone(),
            group.protocol_type.clone(),
            group.coordinator.to_string(),
        ]);
    }
    print(&table.render())
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// A group member as `group describe` shows it.
#[derive(Debug, Serialize)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<(String, i32)>,
}

/// A group's state and members, from DescribeGroups or, for a KIP-848 group,
/// ConsumerGroupDescribe.
#[derive(Debug, Serialize)]
struct GroupState {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

/// Describes `group` through its coordinator; `None` if the group does not exist.
fn group_state(coordinator: &mut Connection, group: &str) -> CliResult<Option<GroupState>> {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]);
    let (_, response) = coordinator.call(
        ApiKey::DescribeGroups,
        0..=5,
        RequestKind::DescribeGroups(request),
    )?;
    let ResponseKind::DescribeGroups(response) = response else {
        return Err(wrong_kind(ApiKey::DescribeGroups).into());
    };
    let Some(described) = response.groups.into_iter().next() else {
        return Err(CliError::failed("DescribeGroups answered for no group"));
    };
    match described.error_code {
        0 if described.group_state.as_str() != "Dead" => {
            let consumer = described.protocol_type.as_str() == "consumer";
            let members = described
                .members
                .iter()
                .map(|member| Member {
                    member_id: member.member_id.to_string(),
                    instance_id: member.group_instance_id.as_ref().map(|id| id.to_string()),
                    client_id: member.client_id.to_string(),
                    host: member.client_host.to_string(),
                    assignment: if consumer {
                        group::decode_assignment(member.member_assignment.clone())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            Ok(Some(GroupState {
                state: described.group_state.to_string(),
                protocol_type: described.protocol_type.to_string(),
                protocol: described.protocol_data.to_string(),
                members,
            }))
        }
        // Dead means no such classic group; Kafka 4 also says GROUP_ID_NOT_FOUND for a group of
        // the new consumer protocol, which ConsumerGroupDescribe describes.
        0 | codes::GROUP_ID_NOT_FOUND => consumer_group_state(coordinator, group),
        code => Err(CliError::kafka(
            format!("describing group {group}"),
            code,
            described.error_message.map(|m| m.to_string()),
        )),
    }
}

fn consumer_group_state(
    coordinator: &mut Connection,
    group: &str,
) -> CliResult<Option<GroupState>> {
    if !coordinator.versions.serves(ApiKey::ConsumerGroupDescribe) {
        return Ok(None);
    }
    let request =
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))]);
    let (_, response) = coordinator.call(
        ApiKey::ConsumerGroupDescribe,
        0..=1,
        RequestKind::ConsumerGroupDescribe(request),
    )?;
    let ResponseKind::ConsumerGroupDescribe(response) = response else {
        return Err(wrong_kind(ApiKey::ConsumerGroupDescribe).into());
    };
    let Some(described) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    if described.error_code != 0 {
        return Ok(None);
    }
    Ok(Some(GroupState {
        state: described.group_state.to_string(),
        protocol_type: "consumer".into(),
        protocol: described.assignor_name.to_string(),
        members: described
            .members
            .iter()
            .map(|member| Member {
                member_id: member.member_id.to_string(),
                instance_id: member.instance_id.as_ref().map(|id| id.to_string()),
                client_id: member.client_id.to_string(),
                host: member.client_host.to_string(),
                assignment: member
                    .assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|topic| {
                        topic
                            .partitions
                            .iter()
                            .map(|partition| (topic.topic_name.0.to_string(), *partition))
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// Every offset `group` has committed, by (topic, partition).
fn committed_offsets(
    coordinator: &mut Connection,
    group: &str,
) -> CliResult<BTreeMap<(String, i32), i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(None);
    // v2 is the first where null topics means "everything committed".
    let (_, response) = coordinator.call(
        ApiKey::OffsetFetch,
        2..=7,
        RequestKind::OffsetFetch(request),
    )?;
    let ResponseKind::OffsetFetch(response) = response else {
        return Err(wrong_kind(ApiKey::OffsetFetch).into());
    };
    if response.error_code != 0 {
        return Err(CliError::kafka(
            format!("fetching the offsets of group {group}"),
            response.error_code,
            None,
        ));
    }
    let mut committed = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            if partition.error_code == 0 && partition.committed_offset >= 0 {
                committed.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.committed_offset,
                );
            }
        }
    }
    Ok(committed)
}

/// Log end offsets of the partitions of `topics`, by (topic, partition).
fn end_offsets(
    client: &mut Client,
    topics: &BTreeSet<String>,
    timestamp: i64,
) -> CliResult<BTreeMap<(String, i32), i64>> {
    let mut ends = BTreeMap::new();
    if topics.is_empty() {
        return Ok(ends);
    }
    let names: Vec<String> = topics.iter().cloned().collect();
    let metadata = client.metadata(Some(&names))?;
    for name in &names {
        let Ok(topic) = existing_topic(&metadata, name) else {
            continue;
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in &topic.partitions {
            by_leader
                .entry(partition.leader)
                .or_default()
                .push(partition.partition);
        }
        for (leader, partitions) in by_leader {
            let offsets = admin::offsets(client.node(leader)?, name, &partitions, timestamp)?;
            for (partition, offset) in offsets {
                ends.insert((name.clone(), partition), offset);
            }
        }
    }
    Ok(ends)
}

#[derive(Debug, Serialize)]
struct DescribedGroup {
    group: String,
    coordinator: String,
    #[serde(flatten)]
    state: GroupState,
    offsets: Vec<PartitionLag>,
}

#[derive(Debug, Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    client_id: Option<String>,
    host: Option<String>,
}

fn describe(connect: &Connect, group: &str) -> CliResult {
    let mut client = Client::connect(connect)?;
    let coordinator = client.coordinator(group)?;
    let coordinator_address = coordinator.peer().to_string();
    let state = group_state(coordinator, group)?;
    let committed = committed_offsets(coordinator, group)?;
    let Some(state) = state.or_else(|| {
        (!committed.is_empty()).then(|| GroupState {
            state: "Empty".into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        })
    }) else {
        return Err(CliError::not_found(
            format!("group {group} does not exist"),
            "`ringlog group list` shows the groups",
        ));
    };
    let mut owners: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for member in &state.members {
        for assigned in &member.assignment {
            owners.insert(assigned.clone(), member);
        }
    }
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owners.keys()).cloned().collect();
    let topics: BTreeSet<String> = partitions.iter().map(|(topic, _)| topic.clone()).collect();
    let ends = end_offsets(&mut client, &topics, admin::LATEST)?;
    let offsets: Vec<PartitionLag> = partitions
        .iter()
        .map(|key| {
            let committed_offset = committed.get(key).copied();
            let log_end_offset = ends.get(key).copied();
            let owner = owners.get(key);
            PartitionLag {
                topic: key.0.clone(),
                partition: key.1,
                committed_offset,
                log_end_offset,
                lag: committed_offset
                    .zip(log_end_offset)
                    .map(|(committed, end)| (end - committed).max(0)),
                member_id: owner.map(|member| member.member_id.clone()),
                client_id: owner.map(|member| member.client_id.clone()),
                host: owner.map(|member| member.host.clone()),
            }
        })
        .collect();
    let described = DescribedGroup {
        group: group.to_string(),
        coordinator: coordinator_address,
        state,
        offsets,
    };
    if connect.json {
        return print_json(&described);
    }
    let total_lag: i64 = described.offsets.iter().filter_map(|p| p.lag).sum();
    let mut text = format!(
        "GROUP        {}\nCOORDINATOR  {}\nSTATE        {}\nPROTOCOL     {}\nMEMBERS      {}\nTOTAL-LAG    {total_lag}\n\n",
        described.group,
        described.coordinator,
        described.state.state,
        or_dash(&described.state.protocol),
        described.state.members.len(),
    );
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "MEMBER-ID",
        "CLIENT-ID",
        "HOST",
    ]);
    let number = |value: Option<i64>| value.map_or_else(|| "-".into(), |v| v.to_string());
    let word = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    for partition in &described.offsets {
        table.row(vec![
            partition.topic.clone(),
            partition.partition.to_string(),
            number(partition.committed_offset),
            number(partition.log_end_offset),
            number(partition.lag),
            word(&partition.member_id),
            word(&partition.client_id),
            word(&partition.host),
        ]);
    }
    text.push_str(&table.render());
    print(&text)
}

#[derive(Debug, Serialize)]
struct Deleted {
    group: String,
    error: String,
}

fn delete(connect: &Connect, groups: &[String]) -> CliResult {
    let mut client = Client::connect(connect)?;
    let mut outcomes = Vec::new();
    let mut failure = None;
    for group in groups {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))]);
        let (_, response) = client.coordinator(group)?.call(
            ApiKey::DeleteGroups,
            0..=2,
            RequestKind::DeleteGroups(request),
        )?;
        let ResponseKind::DeleteGroups(response) = response else {
            return Err(wrong_kind(ApiKey::DeleteGroups).into());
        };
        for result in response.results {
            if result.error_code != 0 && failure.is_none() {
                failure = Some(CliError::kafka(
                    format!("deleting group {}", result.group_id.0),
                    result.error_code,
                    None,
                ));
            }
            outcomes.push(Deleted {
                group: result.group_id.0.to_string(),
                error: error_name(result.error_code),
            });
        }
    }
    if connect.json {
        print_json(&outcomes)?;
    } else {
        let mut table = Table::new(&["GROUP", "STATUS"]);
        for outcome in &outcomes {
            let status = if outcome.error == "NONE" {
                "deleted".to_string()
            } else {
                outcome.error.clone()
            };
            table.row(vec![outcome.group.clone(), status]);
        }
        print(&table.render())?;
    }
    failure.map_or(Ok(()), Err)
}

#[derive(Debug, Serialize)]
struct PlannedOffset {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    new_offset: i64,
}

/// Milliseconds since the epoch of an RFC 3339 date and time.
fn parse_datetime(text: &str) -> CliResult<i64> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|error| {
        CliError::usage(format!(
            "--to-datetime {text:?}: {error}; expected e.g. 2026-11-22T10:00:00Z"
        ))
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| CliError::usage(format!("--to-datetime {text:?} is before 1970")))?;
    i64::try_from(since_epoch.as_millis())
        .map_err(|_| CliError::usage(format!("--to-datetime {text:?} is too far away")))
}

fn reset_offsets(args: &ResetArgs) -> CliResult {
    if args.to_offset.is_some_and(|offset| offset < 0) {
        return Err(CliError::usage("--to-offset must be 0 or more"));
    }
    let timestamp = args
        .to_datetime
        .as_deref()
        .map(parse_datetime)
        .transpose()?;
    let mut client = Client::connect(&args.connect)?;
    let coordinator = client.coordinator(&args.group)?;
    if let Some(state) = group_state(coordinator, &args.group)? {
        if !INACTIVE_STATES.contains(&state.state.as_str()) {
            return Err(CliError::failed(format!(
                "group {} is {} with {} member(s); offsets can only be reset while it has none",
                args.group,
                state.state,
                state.members.len()
            ))
            .with_hint("stop the group's consumers first; `ringlog group describe` shows them"));
        }
    }
    let committed = committed_offsets(coordinator, &args.group)?;
    let topics: BTreeSet<String> = if args.all_topics {
        committed.keys().map(|(topic, _)| topic.clone()).collect()
    } else {
        args.topic.iter().cloned().collect()
    };
    if topics.is_empty() {
        return Err(CliError::not_found(
            format!("group {} has no committed offsets", args.group),
            "name the topics with --topic",
        ));
    }
    let names: Vec<String> = topics.iter().cloned().collect();
    let metadata = client.metadata(Some(&names))?;
    for name in &names {
        existing_topic(&metadata, name)?;
    }
    let starts = end_offsets(&mut client, &topics, admin::EARLIEST)?;
    let ends = end_offsets(&mut client, &topics, admin::LATEST)?;
    let at_time = match timestamp {
        Some(timestamp) => end_offsets(&mut client, &topics, timestamp)?,
        None => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for (key, &end) in &ends {
        let start = starts.get(key).copied().unwrap_or(0);
        let new_offset = if args.to_earliest {
            start
        } else if args.to_latest {
            end
        } else if let Some(offset) = args.to_offset {
            offset.clamp(start, end)
        } else {
            // No record at or after the time: the end, as Kafka's tool does.
            at_time
                .get(key)
                .copied()
                .filter(|offset| *offset >= 0)
                .unwrap_or(end)
        };
        plan.push(PlannedOffset {
            topic: key.0.clone(),
            partition: key.1,
            current_offset: committed.get(key).copied(),
            new_offset,
        });
    }
    if args.execute {
        let mut member =
            GroupMember::new(client.bootstrap(), args.group.clone(), names, CLIENT_ID)?;
        // A member that never joined commits with generation -1 and no member id: Kafka's
        // form for offsets set from outside an empty group.
        member.commit(
            plan.iter()
                .map(|entry| (entry.topic.as_str(), entry.partition, entry.new_offset)),
        )?;
    }
    if args.connect.json {
        print_json(&plan)?;
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]);
        for entry in &plan {
            table.row(vec![
                entry.topic.clone(),
                entry.partition.to_string(),
                entry
                    .current_offset
                    .map_or_else(|| "-".into(), |offset| offset.to_string()),
                entry.new_offset.to_string(),
            ]);
        }
        print(&table.render())?;
    }
    if !args.execute {
        eprintln!("dry run: nothing was changed; add --execute to commit these offsets");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_rfc3339() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z").ok(), Some(1000));
        assert_eq!(
            parse_datetime("2026-11-22T10:00:00.5Z").ok(),
            Some(1_795_341_600_500)
        );
        assert!(parse_datetime("yesterday").is_err());
    }
}
