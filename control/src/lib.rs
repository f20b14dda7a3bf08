//! berth's control plane and operator CLI.
//!
//! # Background
//!
//! berth runs containers on your own servers the way Amazon ECS Anywhere
//! does. This crate is the part that is not on the hosts: the fleet server
//! (enrollment CA, one session per agent, placement, durable state) and the
//! `berth` command that operators use. The agent (`berth-agent`) is a
//! separate crate; the protocol between them is `berth-proto`.
//!
//! # Design
//!
//! - [`server`]: [`Server::start`] binds two listeners. The fleet address
//!   (TLS, client certificates from the fleet CA) serves `Enrollment` to
//!   hosts without a certificate and `Fleet` (sessions, certificate
//!   renewal) to enrolled agents; the admin address serves `Admin` to the
//!   CLI: plaintext on loopback, TLS requiring an admin certificate
//!   (`OU=admin`, from `berth admin-cert create`) anywhere else.
//! - [`server::metrics`]: a third, read-only listener (`--metrics-listen`,
//!   default `127.0.0.1:7422`) serving `GET /metrics` in Prometheus text;
//!   every store operation is timed by `Core::db`, by operation name.
//! - [`server::limits`]: failed enrollments per source address, and a token
//!   bucket per agent stream; message sizes are bounded per service.
//! - [`server::store`]: every durable fact is in SQLite (default) or
//!   PostgreSQL (`--store`) behind the [`server::store::Store`] trait; every
//!   method is one transaction, an
//!   instance's assignment generation moves in the same transaction as its
//!   desired task set, and agent events are applied at most once by
//!   sequence number.
//! - In memory only: the session registry (which agent is connected now).
//!   Each session is a task that owns its stream; the rest of the server
//!   talks to it through a channel.
//! - [`server::placement`] is pure: a snapshot in, an instance id or a
//!   reason out; [`server::scheduler`] inserts the task only if the chosen
//!   instance's generation has not moved since the snapshot.
//! - [`cli`] is a thin client of the admin API; JSON output comes from
//!   `berth_proto::json`, shared with the agent's local API.
//!
//! Embedding (`berth dev`, tests): build a [`ServerConfig`] (for example
//! [`ServerConfig::loopback`]), [`Server::start`] it, create activations
//! with [`RunningServer::create_token`], talk to
//! [`RunningServer::admin_addr`] with `berth_proto::v1::admin_client`, and
//! call [`RunningServer::shutdown`] at the end.
//!
//! # Limitations
//!
//! - On loopback the admin API trusts every local user of the machine.
//!   Admin certificates are revoked one by one (`berth admin-cert revoke`),
//!   checked by this control plane only: there is no CRL for others.
//! - Agent certificates live `--cert-lifetime` (30 days) and are renewed by
//!   the agent over its session; an agent that stays away until its
//!   certificate expired has to enroll again. Deregistration is enforced by
//!   the instance's status, not by revocation lists. A session authenticated
//!   with a certificate may outlive it (renewal needs a valid one).
//! - Rate limits are in memory and per process.
//! - One control plane process per data dir; no high availability. The
//!   schema is portable to PostgreSQL, but only SQLite is implemented.
//! - Stopped tasks are kept forever (no garbage collection yet).
//! - A task the server learns about only from an agent's event (for example
//!   after restoring an old database) is recorded but, without its
//!   definition, not part of any assignment.
#![forbid(unsafe_code)]

pub mod addr;
pub mod cli;
pub mod dev;
pub mod server;
pub mod view;

pub use server::{RunningServer, Server, ServerConfig, ServerError, TokenError};
