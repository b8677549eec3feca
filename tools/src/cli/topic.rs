//! `ringlog topic create | list | describe | delete | alter-config | add-partitions`.

use std::collections::BTreeMap;

use clap::Subcommand;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, RequestKind, ResponseKind, TopicName,
};
use ringlog_net::client::admin::{self, ADMIN_TIMEOUT_MS};
use ringlog_net::client::{error_name, text, wrong_kind};
use serde::Serialize;

use super::client::{Client, Metadata, TopicInfo};
use super::output::{ids, print, print_json, Table};
use super::{codes, key_value, CliError, CliResult, Connect};

/// DescribeConfigs and IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
/// DescribeConfigs `config_source` of a config set on the topic itself.
const SOURCE_TOPIC: i8 = 1;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create topics.
    Create {
        #[command(flatten)]
        connect: Connect,
        /// Topic names.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Partitions; the broker's num.partitions when not given.
        #[arg(long, short = 'p', value_name = "N")]
        partitions: Option<i32>,
        /// Replicas of each partition; the broker's default.replication.factor when not given.
        #[arg(long, short = 'r', value_name = "N")]
        replicas: Option<i16>,
        /// A topic config, e.g. retention.ms=86400000; repeat for more.
        #[arg(long, short = 'c', value_name = "KEY=VALUE", value_parser = key_value)]
        config: Vec<(String, String)>,
        /// Succeed when a topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics with their partition and replica counts.
    List {
        #[command(flatten)]
        connect: Connect,
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, ISR, offsets) and configs.
    Describe {
        #[command(flatten)]
        connect: Connect,
        #[arg(value_name = "NAME")]
        name: String,
        /// Show every config, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics and their data.
    Delete {
        #[command(flatten)]
        connect: Connect,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Set or remove topic configs.
    AlterConfig {
        #[command(flatten)]
        connect: Connect,
        #[arg(value_name = "NAME")]
        name: String,
        /// A config to set, e.g. retention.ms=3600000; repeat for more.
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// A config to remove (back to the broker default); repeat for more.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Add partitions to a topic (partitions can never be removed).
    AddPartitions {
        #[command(flatten)]
        connect: Connect,
        #[arg(value_name = "NAME")]
        name: String,
        /// Partitions to add.
        #[arg(long, short = 'n', value_name = "N")]
        num: i32,
    },
}

pub fn run(command: TopicCommand) -> CliResult {
    match command {
        TopicCommand::Create {
            connect,
            names,
            partitions,
            replicas,
            config,
            if_not_exists,
        } => create(
            &connect,
            &names,
            partitions.unwrap_or(-1),
            replicas.unwrap_or(-1),
            &config,
            if_not_exists,
        ),
        TopicCommand::List { connect, internal } => list(&connect, internal),
        TopicCommand::Describe {
            connect,
            name,
            all_configs,
        } => describe(&connect, &name, all_configs),
        TopicCommand::Delete { connect, names } => delete(&connect, &names),
        TopicCommand::AlterConfig {
            connect,
            name,
            set,
            delete,
        } => alter_config(&connect, &name, &set, &delete),
        TopicCommand::AddPartitions { connect, name, num } => add_partitions(&connect, &name, num),
    }
}

/// One topic's outcome in a command that acts on several.
#[derive(Debug, Serialize)]
struct Outcome {
    topic: String,
    /// NONE, or the Kafka error's name.
    error: String,
    message: Option<String>,
}

/// Prints per-topic outcomes and turns the first failure into the command's error.
fn report(connect: &Connect, verb: &str, outcomes: Vec<Outcome>) -> CliResult {
    if connect.json {
        print_json(&outcomes)?;
    } else {
        let mut table = Table::new(&["TOPIC", "STATUS"]);
        for outcome in &outcomes {
            let status = if outcome.error == "NONE" {
                verb.to_string()
            } else {
                match &outcome.message {
                    Some(message) => format!("{}: {message}", outcome.error),
                    None => outcome.error.clone(),
                }
            };
            table.row(vec![outcome.topic.clone(), status]);
        }
        print(&table.render())?;
    }
    Ok(())
}

fn first_failure(failures: Vec<(String, i16, Option<String>)>) -> CliResult {
    let count = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some((op, code, message)) => {
            let error = CliError::kafka(op, code, message);
            if count > 1 {
                Err(CliError {
                    message: format!("{} (and {} more)", error.message, count - 1),
                    ..error
                })
            } else {
                Err(error)
            }
        }
    }
}

fn create(
    connect: &Connect,
    names: &[String],
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
    if_not_exists: bool,
) -> CliResult {
    if partitions == 0 || partitions < -1 {
        return Err(CliError::usage(format!(
            "--partitions {partitions}: a topic has at least 1 partition"
        )));
    }
    if replicas == 0 || replicas < -1 {
        return Err(CliError::usage(format!(
            "--replicas {replicas}: a partition has at least 1 replica"
        )));
    }
    let mut client = Client::connect(connect)?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(
            names
                .iter()
                .map(|name| {
                    CreatableTopic::default()
                        .with_name(TopicName(text(name)))
                        .with_num_partitions(partitions)
                        .with_replication_factor(replicas)
                        .with_configs(
                            configs
                                .iter()
                                .map(|(key, value)| {
                                    CreatableTopicConfig::default()
                                        .with_name(text(key))
                                        .with_value(Some(text(value)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    // v4 is the first to take -1 for "the broker's default" partitions and replicas.
    let (_, response) = client.controller()?.call(
        ApiKey::CreateTopics,
        4..=7,
        RequestKind::CreateTopics(request),
    )?;
    let ResponseKind::CreateTopics(response) = response else {
        return Err(wrong_kind(ApiKey::CreateTopics).into());
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for topic in &response.topics {
        let skipped = if_not_exists && topic.error_code == codes::TOPIC_ALREADY_EXISTS;
        let message = topic.error_message.as_ref().map(|m| m.to_string());
        if topic.error_code != 0 && !skipped {
            failures.push((
                format!("creating topic {}", topic.name.0),
                topic.error_code,
                message.clone(),
            ));
        }
        outcomes.push(Outcome {
            topic: topic.name.0.to_string(),
            error: error_name(topic.error_code),
            message,
        });
    }
    report(connect, "created", outcomes)?;
    first_failure(failures)
}

/// A topic's row in `topic list`.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    partitions: usize,
    replicas: usize,
    internal: bool,
}

fn list(connect: &Connect, internal: bool) -> CliResult {
    let mut client = Client::connect(connect)?;
    let metadata = client.metadata(None)?;
    let mut topics: Vec<Listed> = metadata
        .topics
        .iter()
        .filter(|topic| internal || !topic.internal)
        .map(|topic| Listed {
            name: topic.name.clone(),
            partitions: topic.partitions.len(),
            replicas: replication_factor(topic),
            internal: topic.internal,
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if connect.json {
        return print_json(&topics);
    }
    let mut table = Table::new(&["NAME", "PARTITIONS", "REPLICAS"]);
    for topic in &topics {
        table.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            topic.replicas.to_string(),
        ]);
    }
    print(&table.render())
}

fn replication_factor(topic: &TopicInfo) -> usize {
    topic
        .partitions
        .iter()
        .map(|partition| partition.replicas.len())
        .max()
        .unwrap_or(0)
}

/// `topic describe` output.
#[derive(Debug, Serialize)]
struct Described {
    name: String,
    internal: bool,
    partitions: Vec<DescribedPartition>,
    configs: Vec<DescribedConfig>,
}

#[derive(Debug, Serialize)]
struct DescribedPartition {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
}

#[derive(Debug, Serialize)]
struct DescribedConfig {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

/// A DescribeConfigs `config_source` by Kafka's name for it.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// The topic's metadata, or a not-found error naming it.
pub fn existing_topic(metadata: &Metadata, name: &str) -> CliResult<TopicInfo> {
    match metadata.topic(name) {
        Some(topic) if topic.error_code == 0 => Ok(topic.clone()),
        Some(topic) if topic.error_code != codes::UNKNOWN_TOPIC_OR_PARTITION => Err(
            CliError::kafka(format!("topic {name}"), topic.error_code, None),
        ),
        _ => Err(CliError::not_found(
            format!("topic {name} does not exist"),
            "`ringlog topic list` shows the topics; `ringlog topic create NAME` makes one",
        )),
    }
}

/// Log start and end offsets of every partition of `topic`, asked of each partition's leader.
/// A partition whose leader cannot answer is left out rather than failing the whole command.
pub fn partition_offsets(
    client: &mut Client,
    topic: &TopicInfo,
) -> BTreeMap<i32, (Option<i64>, Option<i64>)> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for partition in &topic.partitions {
        by_leader
            .entry(partition.leader)
            .or_default()
            .push(partition.partition);
    }
    let mut offsets = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let Ok(connection) = client.node(leader) else {
            continue;
        };
        let starts = admin::offsets(connection, &topic.name, &partitions, admin::EARLIEST);
        let ends = admin::offsets(connection, &topic.name, &partitions, admin::LATEST);
        let (starts, ends) = (starts.unwrap_or_default(), ends.unwrap_or_default());
        for partition in partitions {
            offsets.insert(
                partition,
                (
                    starts.get(&partition).copied(),
                    ends.get(&partition).copied(),
                ),
            );
        }
    }
    offsets
}

fn describe(connect: &Connect, name: &str, all_configs: bool) -> CliResult {
    let mut client = Client::connect(connect)?;
    let metadata = client.metadata(Some(&[name.to_string()]))?;
    let topic = existing_topic(&metadata, name)?;
    let offsets = partition_offsets(&mut client, &topic);
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text(name))
            .with_configuration_keys(None)]);
    let (_, response) = client.call(
        ApiKey::DescribeConfigs,
        1..=4,
        RequestKind::DescribeConfigs(request),
    )?;
    let ResponseKind::DescribeConfigs(response) = response else {
        return Err(wrong_kind(ApiKey::DescribeConfigs).into());
    };
    let mut configs = Vec::new();
    for result in &response.results {
        if result.error_code != 0 {
            return Err(CliError::kafka(
                format!("describing the configs of {name}"),
                result.error_code,
                result.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        for config in &result.configs {
            if !all_configs && config.config_source != SOURCE_TOPIC {
                continue;
            }
            configs.push(DescribedConfig {
                name: config.name.to_string(),
                value: config.value.as_ref().map(|value| value.to_string()),
                source: source_name(config.config_source),
                read_only: config.read_only,
                sensitive: config.is_sensitive,
            });
        }
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let described = Described {
        name: topic.name.clone(),
        internal: topic.internal,
        partitions: topic
            .partitions
            .iter()
            .map(|partition| {
                let (start, end) = offsets
                    .get(&partition.partition)
                    .copied()
                    .unwrap_or((None, None));
                DescribedPartition {
                    partition: partition.partition,
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    log_start_offset: start,
                    high_watermark: end,
                }
            })
            .collect(),
        configs,
    };
    if connect.json {
        return print_json(&described);
    }
    let mut text = format!(
        "NAME        {}\nINTERNAL    {}\nPARTITIONS  {}\nREPLICAS    {}\n\n",
        described.name,
        described.internal,
        described.partitions.len(),
        replication_factor(&topic)
    );
    let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
    for config in &described.configs {
        let value = if config.sensitive {
            "(sensitive)".to_string()
        } else {
            config.value.clone().unwrap_or_else(|| "-".into())
        };
        table.row(vec![config.name.clone(), value, config.source.to_string()]);
    }
    if described.configs.is_empty() {
        text.push_str("no configs set on the topic (--all-configs shows the defaults)\n\n");
    } else {
        text.push_str(&table.render());
        text.push('\n');
    }
    let mut table = Table::new(&[
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG-START-OFFSET",
        "HIGH-WATERMARK",
    ]);
    let offset = |offset: Option<i64>| offset.map_or_else(|| "-".into(), |o| o.to_string());
    for partition in &described.partitions {
        table.row(vec![
            partition.partition.to_string(),
            partition.leader.to_string(),
            partition.leader_epoch.to_string(),
            ids(partition.replicas.iter().copied()),
            ids(partition.isr.iter().copied()),
            offset(partition.log_start_offset),
            offset(partition.high_watermark),
        ]);
    }
    text.push_str(&table.render());
    print(&text)
}

fn delete(connect: &Connect, names: &[String]) -> CliResult {
    let mut client = Client::connect(connect)?;
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_names(names.iter().map(|name| TopicName(text(name))).collect());
    let (_, response) = client.controller()?.call(
        ApiKey::DeleteTopics,
        1..=5,
        RequestKind::DeleteTopics(request),
    )?;
    let ResponseKind::DeleteTopics(response) = response else {
        return Err(wrong_kind(ApiKey::DeleteTopics).into());
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for result in &response.responses {
        let topic = result
            .name
            .as_ref()
            .map_or_else(String::new, |name| name.0.to_string());
        let message = result.error_message.as_ref().map(|m| m.to_string());
        if result.error_code != 0 {
            failures.push((
                format!("deleting topic {topic}"),
                result.error_code,
                message.clone(),
            ));
        }
        outcomes.push(Outcome {
            topic,
            error: error_name(result.error_code),
            message,
        });
    }
    report(connect, "deleted", outcomes)?;
    first_failure(failures)
}

fn alter_config(
    connect: &Connect,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> CliResult {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give --set KEY=VALUE or --delete KEY",
        ));
    }
    let mut client = Client::connect(connect)?;
    let configs = set
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(text(key))
                .with_config_operation(OPERATION_SET)
                .with_value(Some(text(value)))
        })
        .chain(delete.iter().map(|key| {
            AlterableConfig::default()
                .with_name(text(key))
                .with_config_operation(OPERATION_DELETE)
                .with_value(None)
        }))
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text(name))
            .with_configs(configs),
    ]);
    let (_, response) = client.controller()?.call(
        ApiKey::IncrementalAlterConfigs,
        0..=1,
        RequestKind::IncrementalAlterConfigs(request),
    )?;
    let ResponseKind::IncrementalAlterConfigs(response) = response else {
        return Err(wrong_kind(ApiKey::IncrementalAlterConfigs).into());
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for result in &response.responses {
        let message = result.error_message.as_ref().map(|m| m.to_string());
        if result.error_code != 0 {
            failures.push((
                format!("altering the configs of {}", result.resource_name),
                result.error_code,
                message.clone(),
            ));
        }
        outcomes.push(Outcome {
            topic: result.resource_name.to_string(),
            error: error_name(result.error_code),
            message,
        });
    }
    report(connect, "altered", outcomes)?;
    first_failure(failures)
}

fn add_partitions(connect: &Connect, name: &str, num: i32) -> CliResult {
    if num < 1 {
        return Err(CliError::usage(format!(
            "--num {num}: add at least 1 partition (partitions are never removed)"
        )));
    }
    let mut client = Client::connect(connect)?;
    let metadata = client.metadata(Some(&[name.to_string()]))?;
    let topic = existing_topic(&metadata, name)?;
    let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    let total = current
        .checked_add(num)
        .ok_or_else(|| CliError::usage(format!("--num {num}: too many partitions")))?;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(text(name)))
            .with_count(total)
            .with_assignments(None)]);
    let (_, response) = client.controller()?.call(
        ApiKey::CreatePartitions,
        0..=3,
        RequestKind::CreatePartitions(request),
    )?;
    let ResponseKind::CreatePartitions(response) = response else {
        return Err(wrong_kind(ApiKey::CreatePartitions).into());
    };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for result in &response.results {
        let message = result.error_message.as_ref().map(|m| m.to_string());
        if result.error_code != 0 {
            failures.push((
                format!("adding partitions to {}", result.name.0),
                result.error_code,
                message.clone(),
            ));
        }
        outcomes.push(Outcome {
            topic: result.name.0.to_string(),
            error: error_name(result.error_code),
            message,
        });
    }
    report(
        connect,
        &format!("{current} -> {total} partitions"),
        outcomes,
    )?;
    first_failure(failures)
}
