//! The ECS API (SPEC §7): AWS Signature Version 4 verification against
//! access keys berth issues. The listener and the operations build on
//! [`sigv4`].

pub mod sigv4;
