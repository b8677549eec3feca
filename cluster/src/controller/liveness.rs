//! Broker liveness on the controller thread: the active controller's [`Sessions`] fed with
//! the brokers' heartbeats and the clock, and the fence and unfence commands they call for
//! proposed. Only the leader keeps sessions; a controller that becomes leader starts every
//! registered broker's session afresh (see `sessions`), and one that stops leading drops them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::command::{ControllerState, MetadataCommand};
use super::network::{commit_here, ProposeRefusal};
use super::sessions::{Heartbeat, HeartbeatOutcome, Registered, SessionAction, Sessions};
use super::state_machine::StateMachineStore;
use super::{ControllerId, Raft};

/// How often the leader looks for expired sessions. A tenth of Kafka's 9 s session timeout:
/// a dead broker is fenced within about a second of its session running out.
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long a fence or unfence proposal may take to commit; the next heartbeat or check
/// proposes it again if it did not.
const SESSION_PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a broker is told in answer to its heartbeat (Kafka's BrokerHeartbeat response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    Accepted {
        is_fenced: bool,
        should_shut_down: bool,
    },
    /// STALE_BROKER_EPOCH: the heartbeat came from a replaced registration; register again.
    StaleBrokerEpoch { current: u64 },
    /// BROKER_ID_NOT_REGISTERED: register first.
    NotRegistered,
}

/// The sessions of the controller thread, shared by its port (heartbeats from other nodes),
/// its own broker's heartbeats and the expiry task.
#[derive(Clone)]
pub struct Liveness {
    id: ControllerId,
    raft: Raft,
    state_machine: StateMachineStore,
    session_timeout_ms: u64,
    epoch: Instant,
    /// `Some` while this controller leads.
    sessions: Arc<Mutex<Option<Sessions>>>,
}

impl Liveness {
    pub fn new(
        id: ControllerId,
        raft: Raft,
        state_machine: StateMachineStore,
        session_timeout_ms: u64,
    ) -> Liveness {
        Liveness {
            id,
            raft,
            state_machine,
            session_timeout_ms,
            epoch: Instant::now(),
            sessions: Arc::new(Mutex::new(None)),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Runs `work` on the sessions if this controller leads, creating them on the first call
    /// after it became leader; `None` if it does not lead.
    fn with_sessions<T>(
        &self,
        work: impl FnOnce(&mut Sessions, &ControllerState) -> T,
    ) -> Option<T> {
        let mut guard = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.is_leader() {
            *guard = None;
            return None;
        }
        let state = self.state_machine.state();
        let now_ms = self.now_ms();
        let sessions = guard.get_or_insert_with(|| {
            Sessions::new(
                self.session_timeout_ms,
                state
                    .brokers
                    .iter()
                    .map(|(id, registration)| (*id, registered(registration))),
                now_ms,
            )
        });
        Some(work(sessions, &state))
    }

    /// Handles a heartbeat here, if this controller leads.
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply, ProposeRefusal> {
        let now_ms = self.now_ms();
        let outcome = self.with_sessions(|sessions, state| {
            let current = state.brokers.get(&heartbeat.broker_id).map(registered);
            sessions.heartbeat(heartbeat, current, now_ms)
        });
        let Some(outcome) = outcome else {
            return Err(ProposeRefusal::NotLeader {
                leader: self.raft.metrics().borrow().current_leader,
            });
        };
        Ok(match outcome {
            HeartbeatOutcome::Accepted {
                is_fenced,
                should_shut_down,
                action,
            } => {
                if let Some(action) = action {
                    self.carry_out(action).await;
                }
                HeartbeatReply::Accepted {
                    is_fenced,
                    should_shut_down,
                }
            }
            HeartbeatOutcome::StaleBrokerEpoch { current } => {
                HeartbeatReply::StaleBrokerEpoch { current }
            }
            HeartbeatOutcome::NotRegistered => HeartbeatReply::NotRegistered,
        })
    }

    async fn carry_out(&self, action: SessionAction) {
        let command = match action {
            SessionAction::Fence { broker_id, .. } => MetadataCommand::FenceBroker { broker_id },
            SessionAction::Unfence {
                broker_id,
                broker_epoch,
            } => MetadataCommand::UnfenceBroker {
                broker_id,
                broker_epoch,
            },
        };
        match commit_here(&self.raft, command.clone(), SESSION_PROPOSE_TIMEOUT).await {
            Ok(response) => tracing::info!(?command, ?response, "controller: broker session"),
            Err(error) => tracing::info!(?command, %error, "controller: not committed, will retry"),
        }
    }

    /// Fences brokers whose sessions ran out, while this controller leads; runs until the
    /// controller thread stops.
    pub async fn expire_sessions(self) {
        loop {
            tokio::time::sleep(SESSION_CHECK_INTERVAL).await;
            let now_ms = self.now_ms();
            let expired = self
                .with_sessions(|sessions, state| {
                    sessions.expired(now_ms, |id| state.brokers.get(&id).map(registered))
                })
                .unwrap_or_default();
            for action in expired {
                tracing::warn!(?action, "controller: a broker's session expired");
                self.carry_out(action).await;
            }
        }
    }
}

/// A registration as the session rules see it: its broker epoch is its log index, which is
/// also how far a broker must have applied the log to know of it.
fn registered(registration: &super::BrokerRegistration) -> Registered {
    Registered {
        broker_epoch: registration.broker_epoch,
        fenced: registration.fenced,
        registration_offset: registration.broker_epoch,
    }
}
