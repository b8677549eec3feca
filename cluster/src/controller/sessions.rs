//! Broker sessions on the active controller, KIP-631's rules as a pure state machine: a broker
//! heartbeats every `broker.heartbeat.interval.ms`; one that is silent for longer than
//! `broker.session.timeout.ms` is fenced; a fenced broker is unfenced once it heartbeats having
//! caught up with the metadata log up to its own registration (so it never leads a partition
//! with metadata older than the registration that let it in); a broker asking to shut down is
//! fenced from taking new leadership. Sessions are not replicated: a controller that becomes
//! active gives every registered broker a fresh session, as Kafka's does, so a failover never
//! fences a broker that simply had no one to heartbeat to.
//!
//! In: heartbeats and time (milliseconds, from the caller). Out: what to answer the broker and
//! which fence or unfence commands to propose. The registrations themselves (epochs, fenced)
//! are the replicated [`super::ControllerState`]; this module only reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka's default `broker.session.timeout.ms`: about four missed heartbeats at the default
/// 2 s interval, so one slow heartbeat (a GC pause, a busy disk) does not fence a broker.
pub const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 9_000;

/// Kafka's default `broker.heartbeat.interval.ms`.
pub const BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2_000;

/// What a broker's registration looks like in the replicated state, as this module needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    pub broker_epoch: u64,
    pub fenced: bool,
    /// The metadata log offset of the registration: a broker that has applied the log this
    /// far knows at least everything that was true when it was let in. (In
    /// [`super::ControllerState`] this is the registration's log index, its broker epoch.)
    pub registration_offset: u64,
}

/// A BrokerHeartbeat request's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: u64,
    /// How far the broker has applied the metadata log.
    pub metadata_offset: u64,
    /// The broker asks to stay fenced (it is still loading its logs, say).
    pub want_fence: bool,
    /// The broker is shutting down (controlled shutdown).
    pub want_shut_down: bool,
}

/// The answer to a heartbeat, and what the controller should propose because of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Answer the broker with `is_fenced` and `should_shut_down`; propose `action` if any (its
    /// effect shows in the broker's next answer, once committed).
    Accepted {
        is_fenced: bool,
        should_shut_down: bool,
        action: Option<SessionAction>,
    },
    /// Kafka's STALE_BROKER_EPOCH: the heartbeat is from an older registration of this id.
    StaleBrokerEpoch { current: u64 },
    /// The broker is not registered (Kafka answers BROKER_ID_NOT_REGISTERED): it must register.
    NotRegistered,
}

/// A change to a broker's registration for the controller to propose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAction {
    Fence { broker_id: i32, broker_epoch: u64 },
    Unfence { broker_id: i32, broker_epoch: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    broker_epoch: u64,
    last_contact_ms: u64,
    shutting_down: bool,
}

/// The active controller's broker sessions.
#[derive(Debug)]
pub struct Sessions {
    session_timeout_ms: u64,
    sessions: BTreeMap<i32, Session>,
}

impl Sessions {
    /// Sessions for a controller that just became active: every registered broker starts a
    /// fresh session now.
    pub fn new(
        session_timeout_ms: u64,
        registered: impl IntoIterator<Item = (i32, Registered)>,
        now_ms: u64,
    ) -> Sessions {
        let sessions = registered
            .into_iter()
            .map(|(broker_id, registration)| {
                (
                    broker_id,
                    Session {
                        broker_epoch: registration.broker_epoch,
                        last_contact_ms: now_ms,
                        shutting_down: false,
                    },
                )
            })
            .collect();
        Sessions {
            session_timeout_ms,
            sessions,
        }
    }

    /// A broker (re)registered with `broker_epoch`: its session starts now, replacing one of an
    /// earlier registration.
    pub fn registered(&mut self, broker_id: i32, broker_epoch: u64, now_ms: u64) {
        self.sessions.insert(
            broker_id,
            Session {
                broker_epoch,
                last_contact_ms: now_ms,
                shutting_down: false,
            },
        );
    }

    /// Handles a heartbeat against the broker's current registration (`None`: not registered).
    pub fn heartbeat(
        &mut self,
        heartbeat: Heartbeat,
        registered: Option<Registered>,
        now_ms: u64,
    ) -> HeartbeatOutcome {
        let Some(registration) = registered else {
            return HeartbeatOutcome::NotRegistered;
        };
        if heartbeat.broker_epoch != registration.broker_epoch {
            return HeartbeatOutcome::StaleBrokerEpoch {
                current: registration.broker_epoch,
            };
        }
        let session = self.sessions.entry(heartbeat.broker_id).or_insert(Session {
            broker_epoch: registration.broker_epoch,
            last_contact_ms: now_ms,
            shutting_down: false,
        });
        if session.broker_epoch != registration.broker_epoch {
            // The registration moved on (a restart) and nobody told `registered`: start over.
            *session = Session {
                broker_epoch: registration.broker_epoch,
                last_contact_ms: now_ms,
                shutting_down: false,
            };
        }
        session.last_contact_ms = session.last_contact_ms.max(now_ms);
        session.shutting_down |= heartbeat.want_shut_down;
        let epoch = registration.broker_epoch;
        let action = if registration.fenced {
            let caught_up = heartbeat.metadata_offset >= registration.registration_offset;
            (caught_up && !heartbeat.want_fence && !session.shutting_down).then_some(
                SessionAction::Unfence {
                    broker_id: heartbeat.broker_id,
                    broker_epoch: epoch,
                },
            )
        } else {
            // A broker may ask to be fenced again (it found a damaged log, say); a shutting-down
            // broker stays unfenced here, since fencing it would make its partitions leaderless
            // before their leadership moved: the controlled shutdown moves it first.
            heartbeat.want_fence.then_some(SessionAction::Fence {
                broker_id: heartbeat.broker_id,
                broker_epoch: epoch,
            })
        };
        HeartbeatOutcome::Accepted {
            is_fenced: registration.fenced,
            // Kafka lets the broker finish once it leads nothing; that check belongs with the
            // partition state, so here a shutting-down broker is told to go once it is fenced.
            should_shut_down: session.shutting_down && registration.fenced,
            action,
        }
    }

    /// Unfenced brokers whose session expired at `now_ms`: fence each (the caller proposes
    /// it). A broker is reported again on every call until its registration shows it fenced.
    pub fn expired(
        &self,
        now_ms: u64,
        registered: impl Fn(i32) -> Option<Registered>,
    ) -> Vec<SessionAction> {
        self.sessions
            .iter()
            .filter(|(_, session)| {
                now_ms.saturating_sub(session.last_contact_ms) > self.session_timeout_ms
            })
            .filter_map(|(&broker_id, session)| {
                let registration = registered(broker_id)?;
                (registration.broker_epoch == session.broker_epoch && !registration.fenced)
                    .then_some(SessionAction::Fence {
                        broker_id,
                        broker_epoch: session.broker_epoch,
                    })
            })
            .collect()
    }

    /// When the next session expires if no heartbeat comes: the time to call
    /// [`Sessions::expired`] next.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.sessions
            .values()
            .map(|session| {
                session
                    .last_contact_ms
                    .saturating_add(self.session_timeout_ms)
                    .saturating_add(1)
            })
            .min()
    }

    /// Forgets a broker whose registration was removed.
    pub fn unregistered(&mut self, broker_id: i32) {
        self.sessions.remove(&broker_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: u64 = BROKER_SESSION_TIMEOUT_MS_DEFAULT;

    fn registered(broker_epoch: u64, fenced: bool) -> Registered {
        Registered {
            broker_epoch,
            fenced,
            registration_offset: 100,
        }
    }

    fn heartbeat(broker_epoch: u64, metadata_offset: u64) -> Heartbeat {
        Heartbeat {
            broker_id: 1,
            broker_epoch,
            metadata_offset,
            want_fence: false,
            want_shut_down: false,
        }
    }

    #[test]
    fn a_fenced_broker_is_unfenced_only_once_caught_up_with_its_registration() {
        let mut sessions = Sessions::new(TIMEOUT, [], 0);
        sessions.registered(1, 7, 0);
        let behind = sessions.heartbeat(heartbeat(7, 99), Some(registered(7, true)), 10);
        assert_eq!(
            behind,
            HeartbeatOutcome::Accepted {
                is_fenced: true,
                should_shut_down: false,
                action: None
            }
        );
        let caught_up = sessions.heartbeat(heartbeat(7, 100), Some(registered(7, true)), 20);
        assert_eq!(
            caught_up,
            HeartbeatOutcome::Accepted {
                is_fenced: true,
                should_shut_down: false,
                action: Some(SessionAction::Unfence {
                    broker_id: 1,
                    broker_epoch: 7
                })
            }
        );
        // Asking to stay fenced keeps it fenced.
        let held = sessions.heartbeat(
            Heartbeat {
                want_fence: true,
                ..heartbeat(7, 500)
            },
            Some(registered(7, true)),
            30,
        );
        assert!(matches!(
            held,
            HeartbeatOutcome::Accepted { action: None, .. }
        ));
    }

    #[test]
    fn silence_past_the_session_timeout_fences_and_heartbeats_keep_it_alive() {
        let registry = |id: i32| (id == 1).then_some(registered(7, false));
        let mut sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 1_000);
        assert_eq!(sessions.next_deadline_ms(), Some(1_000 + TIMEOUT + 1));
        assert!(sessions.expired(1_000 + TIMEOUT, registry).is_empty());
        // A heartbeat just in time renews the session.
        sessions.heartbeat(heartbeat(7, 100), registry(1), 1_000 + TIMEOUT);
        assert!(sessions.expired(1_000 + 2 * TIMEOUT, registry).is_empty());
        let fence = sessions.expired(1_000 + 2 * TIMEOUT + 1, registry);
        assert_eq!(
            fence,
            vec![SessionAction::Fence {
                broker_id: 1,
                broker_epoch: 7
            }]
        );
        // Once the registration shows it fenced, it is not reported again.
        let fenced = |id: i32| (id == 1).then_some(registered(7, true));
        assert!(sessions.expired(1_000 + 3 * TIMEOUT, fenced).is_empty());
    }

    #[test]
    fn a_new_active_controller_gives_every_broker_a_fresh_session() {
        // The broker last heartbeat long ago, to the previous controller: no fencing at once.
        let registry = |id: i32| (id == 1).then_some(registered(7, false));
        let sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 50_000);
        assert!(sessions.expired(50_000 + TIMEOUT, registry).is_empty());
        assert_eq!(sessions.expired(50_000 + TIMEOUT + 1, registry).len(), 1);
    }

    #[test]
    fn stale_and_unknown_brokers_are_refused() {
        let mut sessions = Sessions::new(TIMEOUT, [], 0);
        assert_eq!(
            sessions.heartbeat(heartbeat(6, 100), Some(registered(7, false)), 1),
            HeartbeatOutcome::StaleBrokerEpoch { current: 7 }
        );
        assert_eq!(
            sessions.heartbeat(heartbeat(7, 100), None, 1),
            HeartbeatOutcome::NotRegistered
        );
        // A stale heartbeat does not renew the current registration's session.
        let registry = |id: i32| (id == 1).then_some(registered(7, false));
        let mut sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 0);
        sessions.heartbeat(heartbeat(6, 100), registry(1), TIMEOUT);
        assert_eq!(sessions.expired(TIMEOUT + 1, registry).len(), 1);
    }

    #[test]
    fn a_restarted_broker_gets_a_new_session_and_the_old_one_is_not_fenced() {
        let mut sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 0);
        sessions.registered(1, 9, TIMEOUT);
        let registry = |id: i32| (id == 1).then_some(registered(9, false));
        assert!(sessions.expired(TIMEOUT + 1, registry).is_empty());
        assert_eq!(sessions.expired(2 * TIMEOUT + 1, registry).len(), 1);
    }

    #[test]
    fn a_shutting_down_broker_is_told_to_go_once_fenced_and_is_never_unfenced() {
        let mut sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 0);
        let going = Heartbeat {
            want_shut_down: true,
            ..heartbeat(7, 100)
        };
        assert_eq!(
            sessions.heartbeat(going, Some(registered(7, false)), 1),
            HeartbeatOutcome::Accepted {
                is_fenced: false,
                should_shut_down: false,
                action: None
            }
        );
        // Fenced (by the controlled shutdown moving its leadership, or by the session), it may
        // go, and a later heartbeat without the flag does not unfence it.
        assert_eq!(
            sessions.heartbeat(going, Some(registered(7, true)), 2),
            HeartbeatOutcome::Accepted {
                is_fenced: true,
                should_shut_down: true,
                action: None
            }
        );
        assert!(matches!(
            sessions.heartbeat(heartbeat(7, 100), Some(registered(7, true)), 3),
            HeartbeatOutcome::Accepted { action: None, .. }
        ));
    }

    #[test]
    fn a_broker_may_ask_to_be_fenced_again() {
        let mut sessions = Sessions::new(TIMEOUT, [(1, registered(7, false))], 0);
        let outcome = sessions.heartbeat(
            Heartbeat {
                want_fence: true,
                ..heartbeat(7, 100)
            },
            Some(registered(7, false)),
            1,
        );
        assert_eq!(
            outcome,
            HeartbeatOutcome::Accepted {
                is_fenced: false,
                should_shut_down: false,
                action: Some(SessionAction::Fence {
                    broker_id: 1,
                    broker_epoch: 7
                })
            }
        );
    }
}
