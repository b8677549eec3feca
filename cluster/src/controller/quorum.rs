//! The controller quorum's members, as `--controller-quorum` gives them: a comma-separated list
//! of `id@host:port` (KRaft's `controller.quorum.voters` format), e.g.
//! `1@ctl-1:9093,2@ctl-2:9093,3@ctl-3:9093`.

use std::collections::BTreeMap;
use std::fmt;

use openraft::BasicNode;

use super::{ControllerId, Error, Result};

/// The quorum sizes a cluster may have. One controller is the single-node default; three
/// survive the loss of one, five of two. An even size survives no more losses than the odd size
/// below it and needs a bigger majority, and more than five only slows every commit down.
pub const QUORUM_SIZES: [usize; 3] = [1, 3, 5];

/// One controller of the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumMember {
    pub id: ControllerId,
    /// `host:port`, resolved when connecting, so a name can move to another address.
    pub address: String,
}

/// The controller quorum, ordered by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    members: BTreeMap<ControllerId, String>,
}

impl Quorum {
    /// Parses `id@host:port[,id@host:port...]`. Ids are Kafka node ids (0 to 2^31-1), each at
    /// most once; ports are 1 to 65535; the list has 1, 3 or 5 members.
    pub fn parse(input: &str) -> Result<Quorum> {
        let invalid = |reason: String| Error::InvalidQuorum {
            input: input.to_string(),
            reason,
        };
        let mut members = BTreeMap::new();
        for item in input.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(invalid("an empty member".into()));
            }
            let (id, address) = item
                .split_once('@')
                .ok_or_else(|| invalid(format!("'{item}' is not id@host:port")))?;
            let id: ControllerId = id
                .parse()
                .ok()
                .filter(|id| *id <= i32::MAX as u64)
                .ok_or_else(|| invalid(format!("'{id}' is not a node id (0 to {})", i32::MAX)))?;
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| invalid(format!("'{address}' has no :port")))?;
            let host_ok = !host.is_empty()
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
            if !host_ok {
                return Err(invalid(format!(
                    "'{address}' has no host (IPv6 addresses go in brackets)"
                )));
            }
            if !matches!(port.parse::<u16>(), Ok(port) if port > 0) {
                return Err(invalid(format!("'{port}' is not a port (1 to 65535)")));
            }
            if members.insert(id, address.to_string()).is_some() {
                return Err(invalid(format!("node id {id} appears twice")));
            }
        }
        let mut addresses: Vec<&String> = members.values().collect();
        addresses.sort();
        if let Some(pair) = addresses.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(invalid(format!("address {} appears twice", pair[0])));
        }
        if !QUORUM_SIZES.contains(&members.len()) {
            return Err(invalid(format!(
                "{} members; a quorum has 1, 3 or 5",
                members.len()
            )));
        }
        Ok(Quorum { members })
    }

    pub fn members(&self) -> impl Iterator<Item = QuorumMember> + '_ {
        self.members.iter().map(|(id, address)| QuorumMember {
            id: *id,
            address: address.clone(),
        })
    }

    pub fn address(&self, id: ControllerId) -> Option<&str> {
        self.members.get(&id).map(String::as_str)
    }

    pub fn contains(&self, id: ControllerId) -> bool {
        self.members.contains_key(&id)
    }

    /// The member that initializes a new cluster (see `ControllerNode`).
    pub fn lowest_id(&self) -> ControllerId {
        *self
            .members
            .keys()
            .next()
            .expect("a parsed quorum has members")
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The membership openraft starts a new cluster with.
    pub(crate) fn nodes(&self) -> BTreeMap<ControllerId, BasicNode> {
        self.members
            .iter()
            .map(|(id, address)| (*id, BasicNode::new(address)))
            .collect()
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .members
            .iter()
            .map(|(id, address)| format!("{id}@{address}"))
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kraft_voter_lists() {
        let quorum = Quorum::parse("3@c:9093, 1@a:9093,2@[::1]:9093").expect("valid");
        assert_eq!(quorum.len(), 3);
        assert_eq!(quorum.lowest_id(), 1);
        assert_eq!(quorum.address(2), Some("[::1]:9093"));
        assert_eq!(quorum.to_string(), "1@a:9093,2@[::1]:9093,3@c:9093");
        assert!(Quorum::parse("0@127.0.0.1:9093").is_ok());
    }

    #[test]
    fn refuses_bad_lists_saying_why() {
        let cases = [
            ("", "empty member"),
            ("1@a:1,", "empty member"),
            ("a:9093", "not id@host:port"),
            ("x@a:9093", "not a node id"),
            ("-1@a:9093", "not a node id"),
            ("2147483648@a:9093", "not a node id"),
            ("1@a", "no :port"),
            ("1@:9093", "no host"),
            ("1@::1:9093", "no host"),
            ("1@a:0", "not a port"),
            ("1@a:70000", "not a port"),
            ("1@a:1,1@b:1,2@c:1", "appears twice"),
            ("1@a:1,2@a:1,3@c:1", "appears twice"),
            ("1@a:1,2@b:1", "a quorum has 1, 3 or 5"),
            (
                "1@a:1,2@b:1,3@c:1,4@d:1,5@e:1,6@f:1,7@g:1",
                "a quorum has 1, 3 or 5",
            ),
        ];
        for (input, expected) in cases {
            let error = Quorum::parse(input).expect_err(input).to_string();
            assert!(error.contains(expected), "{input}: {error}");
            assert!(error.contains(&format!("'{input}'")), "{input}: {error}");
        }
    }
}
