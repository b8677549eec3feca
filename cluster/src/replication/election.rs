//! Leader election for one partition, as Kafka's controller does it when the leader is gone
//! (`PartitionLeaderElectionAlgorithms.offlinePartitionLeaderElection`, and KRaft's
//! `PartitionChangeBuilder`): a pure function of the assignment, the ISR and the live brokers.

use std::collections::BTreeSet;

use ringlog_engine::NodeId;

/// The controller's choice for a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    pub leader: NodeId,
    /// The ISR the partition gets with the new leader: the old ISR's live members for a clean
    /// election (a dead member would only hold back acks=all until the leader dropped it), the
    /// leader alone for an unclean one (nothing else is known to match its log).
    pub isr: Vec<NodeId>,
    /// Chosen from outside the ISR: acknowledged records may be lost.
    pub unclean: bool,
}

/// Picks a new leader: the first replica in assignment order that is live and in the ISR. Only
/// if there is none, and the topic allows it (`unclean.leader.election.enable`), the first live
/// replica at all. `None` leaves the partition offline until an ISR member comes back.
///
/// Every member of the ISR has every acknowledged record (that is what the ISR means), so a
/// clean election loses nothing; preferring assignment order keeps leadership where placement
/// put it, which is how the controller spreads leaders over brokers.
pub fn elect_leader(
    replicas: &[NodeId],
    isr: &[NodeId],
    live: &BTreeSet<NodeId>,
    unclean_leader_election_enable: bool,
) -> Option<Election> {
    let clean = replicas
        .iter()
        .find(|replica| live.contains(replica) && isr.contains(replica));
    if let Some(&leader) = clean {
        let mut new_isr: Vec<NodeId> = vec![leader];
        for member in isr {
            if live.contains(member) && !new_isr.contains(member) && replicas.contains(member) {
                new_isr.push(*member);
            }
        }
        return Some(Election {
            leader,
            isr: new_isr,
            unclean: false,
        });
    }
    if !unclean_leader_election_enable {
        return None;
    }
    replicas
        .iter()
        .find(|replica| live.contains(replica))
        .map(|&leader| Election {
            leader,
            isr: vec![leader],
            unclean: true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[i32]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn live(list: &[i32]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn the_first_live_isr_member_in_assignment_order_leads() {
        let replicas = ids(&[3, 1, 2]);
        // ISR order does not matter; assignment order does.
        let election = elect_leader(&replicas, &ids(&[1, 2, 3]), &live(&[1, 2, 3]), false);
        assert_eq!(
            election,
            Some(Election {
                leader: NodeId(3),
                isr: ids(&[3, 1, 2]),
                unclean: false
            })
        );
        let election = elect_leader(&replicas, &ids(&[1, 2]), &live(&[2, 3]), false);
        assert_eq!(
            election,
            Some(Election {
                leader: NodeId(2),
                isr: ids(&[2]),
                unclean: false
            })
        );
    }

    #[test]
    fn no_live_isr_member_means_offline_unless_unclean_is_allowed() {
        let replicas = ids(&[1, 2, 3]);
        assert_eq!(
            elect_leader(&replicas, &ids(&[1]), &live(&[2, 3]), false),
            None
        );
        assert_eq!(
            elect_leader(&replicas, &ids(&[1]), &live(&[3, 2]), true),
            Some(Election {
                leader: NodeId(2),
                isr: ids(&[2]),
                unclean: true
            })
        );
        assert_eq!(elect_leader(&replicas, &ids(&[1]), &live(&[]), true), None);
        // A clean choice is always preferred, even when unclean is allowed.
        assert_eq!(
            elect_leader(&replicas, &ids(&[3]), &live(&[2, 3]), true).map(|e| e.unclean),
            Some(false)
        );
    }

    #[test]
    fn isr_members_outside_the_assignment_are_ignored() {
        // An ISR naming a broker that is not a replica (stale metadata) cannot make it leader.
        assert_eq!(
            elect_leader(&ids(&[1, 2]), &ids(&[9]), &live(&[1, 2, 9]), false),
            None
        );
    }
}
