//! Services: the reconciler that keeps a REPLICA or DAEMON service's tasks
//! as its configuration says (SPEC §6 "Services", "Scheduling semantics").
//!
//! # Design
//! Like Nomad's reconciler, [`reconcile::reconcile`] is a pure function from one
//! service's state — its [`model::ServiceSpec`], its [`model::Deployment`]s,
//! its tasks ([`model::TaskView`]), the cluster's instances
//! ([`model::InstanceView`]), the clock
//! and its recent events — to a [`model::Plan`]: tasks to start (REPLICA: a count
//! per deployment, placed by the caller; DAEMON: one per instance), tasks
//! to stop with their `stoppedReason`, deployment records to store, a
//! rollback deployment to create, marks to record on tasks, events to add
//! and the next time the clock alone changes something (`next_wake_ms`).
//! The caller places the starts (the `placement` module), stores the whole
//! plan in one transaction only if the state it read is still current, and
//! calls again when anything changes or at `next_wake_ms`. Being
//! level-triggered, a lost wake-up costs latency, never correctness.
//!
//! Nothing is counted twice: a task's first healthy moment and its failure
//! (circuit breaker, retry throttle) come back as [`model::TaskMark`]s the caller
//! records, and the next plan sees them in `TaskView::ever_healthy` and
//! `TaskView::failure_counted`.
//!
//! # Invariants (checked by the simulator's property tests, `sim.rs`)
//! - A plan never starts a task that takes RUNNING + PENDING tasks of the
//!   service (those stopping included) above ⌊desired × maximumPercent /
//!   100⌋, and never stops a healthy task that takes the healthy count
//!   below ⌈desired × minimumHealthyPercent / 100⌉ (scale-in stops the
//!   surplus over the desired count only).
//! - Nothing starts on a DRAINING, INACTIVE, lost or (DAEMON) ineligible
//!   instance; REPLICA starts carry no instance and placement only chooses
//!   ACTIVE connected instances.
//! - A deployment is COMPLETED only when exactly the desired count of its
//!   tasks run healthy and no other task of the service is alive.
//! - The same state gives the same plan.
//!
//! # Limitations
//! - A FAILED primary without rollback starts nothing more and stops no
//!   task of an older deployment: the service stays as the breaker left it
//!   until the next deployment.
//! - Placement failures are the caller's to report: the plan asks for the
//!   starts and is not computed differently when they cannot be placed.

pub(crate) mod config;
pub(crate) mod controller;
pub(crate) mod health;
pub(crate) mod model;
pub(crate) mod reconcile;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
