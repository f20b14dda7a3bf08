//! ECS task definitions for berth: parsing and validation, one code path for
//! the CLI, the control plane and the agent.
//!
//! # Background
//!
//! berth runs containers the way Amazon ECS Anywhere does, and takes the
//! task definitions users already have: the JSON body of
//! `aws ecs register-task-definition --cli-input-json`, or the output of
//! `aws ecs describe-task-definition`. A definition that ECS accepts and that
//! makes sense off AWS must behave as ECS would run it; everything else must
//! get a clear answer that names the JSON path — never silence. The CLI
//! validates before it submits, the control plane before it stores, and the
//! agent again before it runs (it trusts no input); all three call
//! [`parse`].
//!
//! # Design
//!
//! - [`types`] mirrors `RegisterTaskDefinition` field for field, camelCase,
//!   with `deny_unknown_fields` everywhere, so a typo is an error. Fields that
//!   berth refuses (`environmentFiles`, `proxyConfiguration`, ...) are still parsed, as
//!   raw JSON, so that validation can name them and say why.
//! - [`parse`] checks size and syntax, refuses duplicate keys, accepts both
//!   input shapes, removes `null` members (ECS reads them as absent),
//!   deserializes with `serde_path_to_error` — again after each error, with
//!   the wrong value patched away, so that every type error and unknown field
//!   is reported — then runs [`validate`] and reports its problems too. A
//!   refusal lists at most [`MAX_PROBLEMS`] problems and counts the rest.
//! - [`validate`] applies ECS' own rules and ranges plus berth's refusals and
//!   collects *every* problem, not just the first. Fields that are accepted
//!   but ignored produce warnings.
//! - Helpers on the types ([`TaskDefinition::network_mode`],
//!   [`TaskDefinition::reservation`], [`ContainerDefinition::is_essential`],
//!   ...) give the agent and the placement code ECS' defaults in one place.
//!
//! # JSON paths
//!
//! Every [`Problem`] carries a path such as
//! `containerDefinitions[1].portMappings[0].hostPort`: object keys after dots,
//! array indices in brackets, keys that are not plain identifiers quoted in
//! brackets (`dockerLabels["com.example.team"]`), and `$` for the whole
//! document (size, syntax, not an object).
//!
//! - For a task definition at the top of the document (the
//!   register-task-definition shape), paths start at the task definition:
//!   `family`, `containerDefinitions[0].image`.
//! - For the describe-task-definition shape (`{"taskDefinition": {...},
//!   "tags": [...]}`), [`parse`] prefixes them with `taskDefinition`, so they
//!   name the place in the document the user wrote:
//!   `taskDefinition.containerDefinitions[0].image`.
//! - [`validate`] sees no document, so its paths are always relative to the
//!   task definition.
//!
//! Warnings are strings of the same form, `path: message`.
//!
//! # Limitations
//!
//! - Only the Linux subset of ECS: `networkMode` bridge, host or none;
//!   `pidMode`/`ipcMode` `task` are refused (they need a shared namespace
//!   container that berth does not run yet).
//! - Anything that needs AWS services (IAM roles, S3, EFS, FSx, EBS, App
//!   Mesh, FireLens, Elastic Inference) is refused, except the role ARNs,
//!   which are accepted with a warning; `secrets` and
//!   `repositoryCredentials` name berth secrets, also through SSM and
//!   Secrets Manager ARNs ([`secrets`]). See `COMPATIBILITY.md`
//!   beside this crate for every field.
//! - `null` is absent for every field, as in ECS; values that ECS would
//!   register empty (`"secrets": []`, `"repositoryCredentials": {}`) are treated as absent rather than
//!   refused.
//! - Warnings, besides ignored fields: the `awslogs` log driver (the host's
//!   Docker daemon needs AWS credentials of its own), once per definition,
//!   and images in private Amazon ECR registries (berth cannot fetch ECR
//!   tokens), once per registry.
//! - Duplicate keys in an object are refused, since JSON parsers disagree on
//!   which one wins.
//! - Whether the host can run what the definition asks for (enough memory,
//!   free ports, the image's architecture, a `privileged` policy) is for the
//!   agent and the placement code to decide; this crate only checks the
//!   definition itself.
//! - `restartPolicy.restartAttemptPeriod` may be 0–1800 seconds (ECS: 60–1800),
//!   and `startTimeout` at most 600 seconds (ECS sets no maximum off Fargate).

#![forbid(unsafe_code)]

mod error;
mod model;
pub(crate) mod parse;
mod path;
pub mod secrets;
pub mod types;
mod units;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

pub use error::{Problem, TaskDefError};
pub use model::{NetworkMode, Reservation};
pub use parse::parse;
pub use secrets::{
    SecretReference, SecretUsage, SecretUse, normalize_secret_name, secret_name_problem,
    secret_reference, secret_usages,
};
pub use types::*;
pub use units::{MIB_PER_GB, UNITS_PER_VCPU};
pub use validate::{
    MAX_IGNORED_EXIT_CODES, MAX_STOP_TIMEOUT, MIN_MEMORY_MIB, RESTART_ATTEMPT_PERIOD_RANGE,
    START_TIMEOUT_RANGE, TASK_CPU_RANGE, validate,
};

/// ECS' own limit on the size of a task definition, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// At most this many problems are listed in a [`TaskDefError`]; the rest
/// are counted.
pub const MAX_PROBLEMS: usize = 20;

/// ECS' limit on containers per task definition.
pub const MAX_CONTAINERS: usize = 10;

/// A task definition that passed validation, and the warnings about fields
/// that berth accepts but ignores (`path: message`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub definition: TaskDefinition,
    pub warnings: Vec<String>,
}
