//! The secrets of a task, as its assignment delivered them (SPEC §8).
//!
//! Invariants:
//! - values live in memory only: the assignment's desired tasks are
//!   persisted without them (`DesiredTask.secrets` and
//!   `registry_credentials` are not serialized), and nothing here is
//!   serialized, logged or shown (`Debug` names containers and variables,
//!   never a value);
//! - a container whose definition references a secret that was not
//!   delivered — the agent restarted and has not heard from the control
//!   plane since, or the secret no longer resolves on the server — is not
//!   created: the task fails to start (TaskFailedToStart) naming the
//!   secret ([`TaskSecrets::problem`]);
//! - values are given to the Docker Engine only, as the container's
//!   environment at create and as a pull's `X-Registry-Auth`.

use std::collections::BTreeMap;

use berth_proto::v1::DesiredTask;
use berth_taskdef::ContainerDefinition;

/// Pull credentials of one container (`repositoryCredentials`).
#[derive(Clone, PartialEq, Eq)]
pub struct PullCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullCredentials(..)")
    }
}

/// Environment variables from secrets, `NAME=value` pairs for the engine.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// What a task's assignment delivered, by container.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TaskSecrets {
    /// (container, variable) → value.
    env: BTreeMap<(String, String), Vec<u8>>,
    registry: BTreeMap<String, PullCredentials>,
}

impl std::fmt::Debug for TaskSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSecrets")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("registry", &self.registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

const NOT_DELIVERED: &str = "berth-agent keeps secret values in memory only and has not received them from the control plane (it restarted and has not connected since, or the secret no longer resolves there: see `berth secret ls`)";

impl TaskSecrets {
    pub fn from_desired(d: &DesiredTask) -> TaskSecrets {
        TaskSecrets {
            env: d
                .secrets
                .iter()
                .map(|s| ((s.container.clone(), s.name.clone()), s.value.clone()))
                .collect(),
            registry: d
                .registry_credentials
                .iter()
                .map(|c| {
                    (
                        c.container.clone(),
                        PullCredentials {
                            username: c.username.clone(),
                            password: c.password.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Why container `def` cannot be created with what was delivered, or
    /// `None` when every secret it references is here and usable.
    pub fn problem(&self, def: &ContainerDefinition) -> Option<String> {
        for s in &def.secrets {
            match self.env.get(&(def.name.clone(), s.name.clone())) {
                None => {
                    return Some(format!(
                        "secret {} (valueFrom {}) is not available: {NOT_DELIVERED}",
                        s.name, s.value_from
                    ));
                }
                Some(v) => match std::str::from_utf8(v) {
                    Ok(text) if !text.contains('\0') => {}
                    _ => {
                        return Some(format!(
                            "secret {} (valueFrom {}) is not text without NUL, so it cannot be an environment variable",
                            s.name, s.value_from
                        ));
                    }
                },
            }
        }
        if let Some(p) = def
            .repository_credentials
            .as_ref()
            .and_then(|r| r.credentials_parameter.as_deref())
            && !self.registry.contains_key(&def.name)
        {
            return Some(format!(
                "the registry credentials (repositoryCredentials {p}) are not available: {NOT_DELIVERED}"
            ));
        }
        None
    }

    /// The container's secret environment, in definition order (only what
    /// [`TaskSecrets::problem`] accepts).
    pub fn env_of(&self, def: &ContainerDefinition) -> SecretEnv {
        SecretEnv(
            def.secrets
                .iter()
                .filter_map(|s| {
                    let v = self.env.get(&(def.name.clone(), s.name.clone()))?;
                    Some((s.name.clone(), std::str::from_utf8(v).ok()?.to_owned()))
                })
                .collect(),
        )
    }

    /// The container's pull credentials, when its definition has some.
    pub fn pull_credentials(&self, container: &str) -> Option<&PullCredentials> {
        self.registry.get(container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{RegistryCredentials, TaskSecret};

    fn def() -> ContainerDefinition {
        let d: berth_taskdef::TaskDefinition = berth_taskdef::parse(
            r#"{"family":"f","containerDefinitions":[{"name":"app","image":"i","memory":64,
                "secrets":[{"name":"A","valueFrom":"a"},{"name":"B","valueFrom":"arn:aws:ssm:r:1:parameter/b"}],
                "repositoryCredentials":{"credentialsParameter":"creds"}}]}"#,
        )
        .expect("valid")
        .definition;
        d.container_definitions[0].clone()
    }

    fn delivered(values: &[(&str, &[u8])], creds: bool) -> TaskSecrets {
        TaskSecrets::from_desired(&DesiredTask {
            secrets: values
                .iter()
                .map(|(n, v)| TaskSecret {
                    container: "app".into(),
                    name: (*n).into(),
                    value: v.to_vec(),
                })
                .collect(),
            registry_credentials: creds
                .then(|| RegistryCredentials {
                    container: "app".into(),
                    username: "u".into(),
                    password: "hunter2".into(),
                })
                .into_iter()
                .collect(),
            ..DesiredTask::default()
        })
    }

    #[test]
    fn a_container_is_created_only_with_every_secret_it_references() {
        let d = def();
        let all = delivered(&[("A", b"va"), ("B", b"vb")], true);
        assert_eq!(all.problem(&d), None);
        assert_eq!(
            all.env_of(&d).0,
            [
                ("A".to_owned(), "va".to_owned()),
                ("B".to_owned(), "vb".to_owned())
            ]
        );
        assert_eq!(
            all.pull_credentials("app").map(|c| c.username.as_str()),
            Some("u")
        );
        let none = TaskSecrets::default();
        let why = none.problem(&d).expect("nothing delivered");
        assert!(
            why.contains("secret A (valueFrom a) is not available"),
            "{why}"
        );
        let no_creds = delivered(&[("A", b"va"), ("B", b"vb")], false);
        let why = no_creds.problem(&d).expect("no credentials");
        assert!(why.contains("repositoryCredentials creds"), "{why}");
        let binary = delivered(&[("A", b"va"), ("B", b"\xff\x00")], true);
        let why = binary.problem(&d).expect("not text");
        assert!(
            why.contains("secret B") && why.contains("not text"),
            "{why}"
        );
    }

    #[test]
    fn debug_output_names_no_value() {
        let all = delivered(&[("A", b"value-a-7c1")], true);
        let shown = format!(
            "{all:?} {:?} {:?}",
            all.env_of(&def()),
            all.pull_credentials("app")
        );
        assert!(
            !shown.contains("value-a-7c1") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("\"A\""), "{shown}");
    }

    #[test]
    fn persisted_desired_tasks_carry_no_secret() {
        let d = DesiredTask {
            task_id: "t".into(),
            secrets: vec![TaskSecret {
                container: "app".into(),
                name: "A".into(),
                value: b"value-a-7c1".to_vec(),
            }],
            registry_credentials: vec![RegistryCredentials {
                container: "app".into(),
                username: "u".into(),
                password: "hunter2".into(),
            }],
            ..DesiredTask::default()
        };
        let json = serde_json::to_string(&d).expect("serialize");
        assert!(
            !json.contains("value-a-7c1") && !json.contains("hunter2"),
            "{json}"
        );
        let back: DesiredTask = serde_json::from_str(&json).expect("parse");
        assert!(back.secrets.is_empty() && back.registry_credentials.is_empty());
    }
}
