//! The session registry: which agents hold a `Fleet.Connect` session with
//! this server right now, and the channel to reach each one.
//!
//! [`SessionRegistry`] is the contract the services use; [`LocalSessions`]
//! is today's implementation, an in-process map. A registry that spans
//! servers (a `sessions` table plus a notification per instance) would
//! implement the same trait.
//!
//! Invariants:
//! - an instance has at most one current session: registering a newer one
//!   tells the older one to close (a reconnect, or a cloned identity);
//! - a session is pending until its Hello, and is closed by deregistration
//!   and shutdown in either state;
//! - removing a session that is no longer the current one changes nothing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tonic::Status;
use tracing::warn;

use super::metrics::ServerMetrics;
use super::{REPLACED_PREFIX, peer_text};

/// What a live session accepts from the rest of the server.
#[derive(Debug)]
pub(crate) enum SessionCommand {
    /// The instance's assignment may have changed: send it if it is newer
    /// than the last one sent.
    AssignmentChanged,
    /// End the session with this status.
    Close(Status),
}

/// Which agents are connected, and how to reach them.
pub(crate) trait SessionRegistry: Send + Sync {
    /// Registers a session that has not sent its Hello yet, so that
    /// deregistration (and shutdown) can close it. Returns its id.
    fn register_pending(&self, instance_id: &str, tx: mpsc::UnboundedSender<SessionCommand>)
    -> u64;

    /// The pending session `session_id` said Hello: it becomes the current
    /// session of its instance (an older one is told to close). `false`
    /// when it was closed meanwhile (the instance was deregistered).
    fn promote_session(&self, instance_id: &str, session_id: u64, peer: Option<SocketAddr>)
    -> bool;

    /// Removes the session if it is still the instance's current one (or
    /// still pending). `true` when it was the current one.
    fn unregister_session(&self, instance_id: &str, session_id: u64) -> bool;

    /// Whether the instance has a current session.
    fn is_connected(&self, instance_id: &str) -> bool;

    /// The instances with a current session.
    fn connected_instances(&self) -> HashSet<String>;

    /// Tells the instance's live session, if any, that its assignment may
    /// have changed. Without a session the assignment goes out on the next
    /// Hello.
    fn notify_assignment(&self, instance_id: &str);

    /// Closes the instance's live session and the sessions still waiting
    /// for their Hello, if any.
    fn close_session(&self, instance_id: &str, status: Status);

    /// Closes every session (shutdown).
    fn close_all_sessions(&self, status: &Status);
}

#[derive(Debug)]
struct SessionHandle {
    id: u64,
    peer: Option<SocketAddr>,
    tx: mpsc::UnboundedSender<SessionCommand>,
}

/// A session before its Hello: known so that deregistration closes it.
#[derive(Debug)]
struct PendingSession {
    instance_id: String,
    tx: mpsc::UnboundedSender<SessionCommand>,
}

/// [`SessionRegistry`] in this process's memory.
pub(crate) struct LocalSessions {
    sessions: Mutex<HashMap<String, SessionHandle>>,
    /// Sessions waiting for their Hello, by session id.
    pending: Mutex<HashMap<u64, PendingSession>>,
    next_session: AtomicU64,
    metrics: Arc<ServerMetrics>,
}

impl LocalSessions {
    pub(crate) fn new(metrics: Arc<ServerMetrics>) -> LocalSessions {
        LocalSessions {
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            metrics,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, SessionHandle>> {
        // The map holds no invariant a panic could break half-way.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, PendingSession>> {
        // The map holds no invariant a panic could break half-way.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session as the current one of its instance; an older
    /// session of the same instance is told to close.
    fn register_session(
        &self,
        instance_id: &str,
        id: u64,
        peer: Option<SocketAddr>,
        tx: mpsc::UnboundedSender<SessionCommand>,
    ) {
        let old = self
            .sessions()
            .insert(instance_id.to_owned(), SessionHandle { id, peer, tx });
        self.metrics.sessions_opened.inc();
        if let Some(old) = old {
            self.metrics.sessions_replaced.inc();
            // Either a reconnect the server had not noticed the end of yet,
            // or two hosts with one identity (a cloned disk or data dir).
            warn!(
                instance_id,
                old_peer = %peer_text(old.peer),
                new_peer = %peer_text(peer),
                "two sessions for one instance: the newer one replaces the older; if both agents keep running, two hosts share this identity (cloned data dir?)"
            );
            let _ = old.tx.send(SessionCommand::Close(Status::aborted(format!(
                "{REPLACED_PREFIX} from {} for instance {instance_id}; if that is not this host, two hosts share this identity: enroll each host on its own",
                peer_text(peer)
            ))));
        }
    }
}

impl SessionRegistry for LocalSessions {
    fn register_pending(
        &self,
        instance_id: &str,
        tx: mpsc::UnboundedSender<SessionCommand>,
    ) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.pending().insert(
            id,
            PendingSession {
                instance_id: instance_id.to_owned(),
                tx,
            },
        );
        id
    }

    fn promote_session(
        &self,
        instance_id: &str,
        session_id: u64,
        peer: Option<SocketAddr>,
    ) -> bool {
        let Some(pending) = self.pending().remove(&session_id) else {
            return false;
        };
        self.register_session(instance_id, session_id, peer, pending.tx);
        true
    }

    fn unregister_session(&self, instance_id: &str, session_id: u64) -> bool {
        self.pending().remove(&session_id);
        let mut sessions = self.sessions();
        if sessions
            .get(instance_id)
            .is_some_and(|s| s.id == session_id)
        {
            sessions.remove(instance_id);
            true
        } else {
            false
        }
    }

    fn is_connected(&self, instance_id: &str) -> bool {
        self.sessions().contains_key(instance_id)
    }

    fn connected_instances(&self) -> HashSet<String> {
        self.sessions().keys().cloned().collect()
    }

    fn notify_assignment(&self, instance_id: &str) {
        if let Some(s) = self.sessions().get(instance_id) {
            let _ = s.tx.send(SessionCommand::AssignmentChanged);
        }
    }

    fn close_session(&self, instance_id: &str, status: Status) {
        self.pending().retain(|_, p| {
            if p.instance_id == instance_id {
                let _ = p.tx.send(SessionCommand::Close(status.clone()));
                false
            } else {
                true
            }
        });
        if let Some(s) = self.sessions().remove(instance_id) {
            let _ = s.tx.send(SessionCommand::Close(status));
        }
    }

    fn close_all_sessions(&self, status: &Status) {
        for (_, p) in self.pending().drain() {
            let _ = p.tx.send(SessionCommand::Close(status.clone()));
        }
        for (_, s) in self.sessions().drain() {
            let _ = s.tx.send(SessionCommand::Close(status.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (Arc<ServerMetrics>, LocalSessions) {
        let metrics = Arc::new(ServerMetrics::default());
        (Arc::clone(&metrics), LocalSessions::new(metrics))
    }

    #[test]
    fn a_newer_session_replaces_the_older_and_closes_it() {
        let (metrics, r) = registry();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let s1 = r.register_pending("i-1", tx1);
        assert!(!r.is_connected("i-1"), "pending is not connected");
        assert!(r.promote_session("i-1", s1, None));
        let s2 = r.register_pending("i-1", tx2);
        assert!(r.promote_session("i-1", s2, None));
        assert!(
            matches!(rx1.try_recv(), Ok(SessionCommand::Close(s)) if s.message().starts_with(REPLACED_PREFIX))
        );
        assert!(rx2.try_recv().is_err());
        assert_eq!(metrics.sessions_replaced.get(), 1);
        assert!(
            !r.unregister_session("i-1", s1),
            "the replaced session's end does not remove the newer one"
        );
        assert!(r.is_connected("i-1"));
        r.notify_assignment("i-1");
        assert!(matches!(
            rx2.try_recv(),
            Ok(SessionCommand::AssignmentChanged)
        ));
        assert!(r.unregister_session("i-1", s2));
        assert!(r.connected_instances().is_empty());
    }

    #[test]
    fn closing_an_instance_closes_its_pending_sessions_and_keeps_others() {
        let (_m, r) = registry();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let s1 = r.register_pending("i-1", tx1);
        let s2 = r.register_pending("i-2", tx2);
        assert!(r.promote_session("i-2", s2, None));
        r.close_session("i-1", Status::permission_denied("deregistered"));
        assert!(matches!(rx1.try_recv(), Ok(SessionCommand::Close(_))));
        assert!(
            !r.promote_session("i-1", s1, None),
            "a closed pending session cannot become current"
        );
        assert!(r.is_connected("i-2"));
        assert!(rx2.try_recv().is_err());
        r.close_all_sessions(&Status::unavailable("shutting down"));
        assert!(matches!(rx2.try_recv(), Ok(SessionCommand::Close(_))));
        assert!(r.connected_instances().is_empty());
    }
}
