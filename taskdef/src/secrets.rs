//! Where `secrets[].valueFrom` and
//! `repositoryCredentials.credentialsParameter` point: a berth secret, named
//! directly or through the ARN an ECS definition already has.
//!
//! | `valueFrom` | berth secret | JSON key |
//! |---|---|---|
//! | `db-password`, `/prod/db` | `db-password`, `prod/db` | — |
//! | `arn:aws:ssm:R:A:parameter/prod/db` | `prod/db` | — |
//! | `arn:aws:ssm:R:A:parameter/db` | `db` | — |
//! | `arn:aws:secretsmanager:R:A:secret:db-AbCdEf` | `db-AbCdEf`, else `db` | — |
//! | `arn:aws:secretsmanager:R:A:secret:db:password::` | `db` | `password` |
//!
//! - A berth name is 1–[`MAX_SECRET_NAME_LEN`] of `[A-Za-z0-9_.\-/]` (the
//!   character set of SSM parameter and Secrets Manager names). A leading
//!   `/` is not part of it: SSM writes hierarchical names `/prod/db` but
//!   their ARN `…:parameter/prod/db`, so both, and `prod/db`, name one
//!   berth secret.
//! - A Secrets Manager ARN ends in the secret's name and the random suffix
//!   Secrets Manager appends (`-` and 6 characters). berth cannot know
//!   whether the suffix is one, so a name that ends like one is looked up
//!   as written first and without the suffix second
//!   ([`SecretReference::candidates`]).
//! - A JSON key (Secrets Manager only) takes that key's string value from
//!   a secret that holds a JSON object. A version stage or a version id is
//!   refused: berth keeps one version of each secret.
//! - Any other ARN (another service, a malformed one) is refused, naming
//!   what berth accepts.

/// Longest secret name (Secrets Manager's limit).
pub const MAX_SECRET_NAME_LEN: usize = 512;

/// The berth secret a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReference {
    /// The name as written (without a leading `/`).
    pub name: String,
    /// The name without what looks like Secrets Manager's random suffix,
    /// for a Secrets Manager ARN whose name ends like one.
    pub without_suffix: Option<String>,
    /// The key of a JSON object value to take (Secrets Manager ARNs).
    pub json_key: Option<String>,
}

impl SecretReference {
    /// The names to look up, in order: the first that exists is meant.
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.without_suffix.as_deref())
    }
}

/// Why a berth secret name is refused, or `None` when it is valid. A
/// leading `/` is for [`normalize_secret_name`] to drop first.
pub fn secret_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_SECRET_NAME_LEN {
        return Some(format!(
            "secret name {name:?}: a name is 1 to {MAX_SECRET_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Some(format!(
            "secret name {name:?}: {c:?} is not allowed; use letters, digits and _ . - /"
        ));
    }
    None
}

/// A secret's name as berth keeps it: without one leading `/` (SSM's
/// hierarchical names), trimmed of surrounding white space.
pub fn normalize_secret_name(name: &str) -> &str {
    let name = name.trim();
    name.strip_prefix('/').unwrap_or(name)
}

fn berth_name(name: &str) -> Result<String, String> {
    let n = normalize_secret_name(name);
    match secret_name_problem(n) {
        Some(p) => Err(p),
        None => Ok(n.to_owned()),
    }
}

const ACCEPTED: &str = "use a berth secret name, arn:aws:ssm:REGION:ACCOUNT:parameter/NAME or arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON-KEY::]";

/// Turns a `valueFrom` (or `credentialsParameter`) into the berth secret it
/// names; the error says what is wrong, without the path.
pub fn secret_reference(value_from: &str) -> Result<SecretReference, String> {
    let v = value_from.trim();
    if v.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let Some(arn) = v.strip_prefix("arn:") else {
        return Ok(SecretReference {
            name: berth_name(v)?,
            without_suffix: None,
            json_key: None,
        });
    };
    // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
    let mut parts = arn.splitn(5, ':');
    let (Some(partition), Some(service), Some(_region), Some(_account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!("{v:?} is not an ARN; {ACCEPTED}"));
    };
    if partition.is_empty() {
        return Err(format!("{v:?} has no partition; {ACCEPTED}"));
    }
    match service {
        "ssm" => {
            let Some(name) = resource.strip_prefix("parameter/") else {
                return Err(format!(
                    "{v:?} is not an SSM parameter ARN (…:parameter/NAME); {ACCEPTED}"
                ));
            };
            Ok(SecretReference {
                name: berth_name(name)?,
                without_suffix: None,
                json_key: None,
            })
        }
        "secretsmanager" => {
            let Some(rest) = resource.strip_prefix("secret:") else {
                return Err(format!(
                    "{v:?} is not a Secrets Manager secret ARN (…:secret:NAME); {ACCEPTED}"
                ));
            };
            let fields: Vec<&str> = rest.split(':').collect();
            let (name, key, stage, id) = match fields.as_slice() {
                [name] => (*name, "", "", ""),
                [name, key] => (*name, *key, "", ""),
                [name, key, stage] => (*name, *key, *stage, ""),
                [name, key, stage, id] => (*name, *key, *stage, *id),
                _ => {
                    return Err(format!(
                        "{v:?} has more fields than secret:NAME:JSON-KEY:VERSION-STAGE:VERSION-ID"
                    ));
                }
            };
            if !stage.is_empty() || !id.is_empty() {
                return Err(format!(
                    "{v:?} names a version ({}); berth keeps one version of each secret: leave VERSION-STAGE and VERSION-ID empty (secret:NAME:JSON-KEY::)",
                    if stage.is_empty() { id } else { stage }
                ));
            }
            let name = berth_name(name)?;
            Ok(SecretReference {
                without_suffix: strip_random_suffix(&name).map(str::to_owned),
                name,
                json_key: (!key.is_empty()).then(|| key.to_owned()),
            })
        }
        other => Err(format!(
            "{v:?} is an ARN of {other:?}; berth resolves SSM parameters and Secrets Manager secrets only: {ACCEPTED}"
        )),
    }
}

/// `db-AbCdEf` → `db`: the name without a trailing `-` and 6 letters or
/// digits (Secrets Manager's random suffix), when something is left.
fn strip_random_suffix(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!base.is_empty() && suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(base)
}

/// What a secret is used for in a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretUse {
    /// `secrets[]`: the environment variable of this name.
    Env(String),
    /// `repositoryCredentials`: the image pull's credentials.
    RegistryCredentials,
}

/// One reference of a task definition to a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUsage {
    /// Its JSON path (`containerDefinitions[0].secrets[1].valueFrom`).
    pub path: String,
    pub container: String,
    pub used_as: SecretUse,
    pub reference: SecretReference,
}

/// Every reference to a secret in the definition, in order; those that do
/// not parse are left out ([`crate::validate`] refuses them).
pub fn secret_usages(def: &crate::TaskDefinition) -> Vec<SecretUsage> {
    let mut out = Vec::new();
    for (i, c) in def.container_definitions.iter().enumerate() {
        for (j, s) in c.secrets.iter().enumerate() {
            if let Ok(reference) = secret_reference(&s.value_from) {
                out.push(SecretUsage {
                    path: format!("containerDefinitions[{i}].secrets[{j}].valueFrom"),
                    container: c.name.clone(),
                    used_as: SecretUse::Env(s.name.clone()),
                    reference,
                });
            }
        }
        if let Some(p) = c
            .repository_credentials
            .as_ref()
            .and_then(|r| r.credentials_parameter.as_deref())
            && let Ok(reference) = secret_reference(p)
        {
            out.push(SecretUsage {
                path: format!(
                    "containerDefinitions[{i}].repositoryCredentials.credentialsParameter"
                ),
                container: c.name.clone(),
                used_as: SecretUse::RegistryCredentials,
                reference,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, without_suffix: Option<&str>, key: Option<&str>) -> SecretReference {
        SecretReference {
            name: name.into(),
            without_suffix: without_suffix.map(Into::into),
            json_key: key.map(Into::into),
        }
    }

    #[test]
    fn berth_names_and_ssm_arns_resolve_to_one_name() {
        for (value_from, name) in [
            ("db-password", "db-password"),
            ("/prod/db", "prod/db"),
            (" prod/db ", "prod/db"),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db",
                "prod/db",
            ),
            ("arn:aws:ssm:eu-west-1:123456789012:parameter/db", "db"),
            (
                "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a.b_c-d",
                "a.b_c-d",
            ),
        ] {
            assert_eq!(
                secret_reference(value_from),
                Ok(r(name, None, None)),
                "{value_from}"
            );
        }
    }

    #[test]
    fn secrets_manager_arns_take_a_json_key_and_a_suffix_is_tried_both_ways() {
        let base = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
        for (rest, want) in [
            ("db", r("db", None, None)),
            ("db:password::", r("db", None, Some("password"))),
            ("db:password", r("db", None, Some("password"))),
            ("db:::", r("db", None, None)),
            ("prod/db-AbC123", r("prod/db-AbC123", Some("prod/db"), None)),
            (
                "prod/db-AbC123:username::",
                r("prod/db-AbC123", Some("prod/db"), Some("username")),
            ),
            ("db-pass", r("db-pass", None, None)),
            ("-abcdef", r("-abcdef", None, None)),
        ] {
            let got = secret_reference(&format!("{base}{rest}"));
            assert_eq!(got, Ok(want), "{rest}");
        }
        let s = secret_reference(&format!("{base}db-AbC123")).expect("ok");
        assert_eq!(s.candidates().collect::<Vec<_>>(), ["db-AbC123", "db"]);
    }

    #[test]
    fn what_berth_cannot_resolve_is_refused_naming_why() {
        let base = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
        for (value_from, needle) in [
            ("", "must not be empty"),
            ("a b", "' ' is not allowed"),
            ("db:key", "':' is not allowed"),
            (
                &format!("{base}db:key:AWSCURRENT:"),
                "names a version (AWSCURRENT)",
            ),
            (&format!("{base}db:key::v-1"), "names a version (v-1)"),
            (&format!("{base}db:a:b:c:d"), "more fields"),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameterdb",
                "not an SSM parameter ARN",
            ),
            ("arn:aws:ssm:us-east-1:123456789012:parameter/", "1 to 512"),
            (
                "arn:aws:secretsmanager:us-east-1:1:db",
                "not a Secrets Manager secret ARN",
            ),
            ("arn:aws:s3:::bucket/key", "ARN of \"s3\""),
            ("arn:aws:ssm", "not an ARN"),
            ("arn::ssm:r:a:parameter/db", "no partition"),
            (&"x".repeat(513), "1 to 512"),
        ] {
            let e = secret_reference(value_from).expect_err(value_from);
            assert!(e.contains(needle), "{value_from}: {e}");
        }
    }

    #[test]
    fn usages_name_their_paths_containers_and_uses() {
        let def = crate::parse(
            r#"{"family":"f","containerDefinitions":[
                {"name":"a","image":"i","memory":64,
                 "secrets":[{"name":"A","valueFrom":"one"},{"name":"B","valueFrom":"arn:aws:ssm:r:1:parameter/two"}]},
                {"name":"b","image":"i","memory":64,
                 "repositoryCredentials":{"credentialsParameter":"arn:aws:secretsmanager:r:1:secret:creds"}}
            ]}"#,
        )
        .expect("valid")
        .definition;
        let u = secret_usages(&def);
        let got: Vec<_> = u
            .iter()
            .map(|u| {
                (
                    u.path.as_str(),
                    u.container.as_str(),
                    &u.used_as,
                    u.reference.name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "containerDefinitions[0].secrets[0].valueFrom",
                    "a",
                    &SecretUse::Env("A".into()),
                    "one"
                ),
                (
                    "containerDefinitions[0].secrets[1].valueFrom",
                    "a",
                    &SecretUse::Env("B".into()),
                    "two"
                ),
                (
                    "containerDefinitions[1].repositoryCredentials.credentialsParameter",
                    "b",
                    &SecretUse::RegistryCredentials,
                    "creds"
                ),
            ]
        );
    }
}
