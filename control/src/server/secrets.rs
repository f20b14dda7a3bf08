//! Secrets (`berth secret create|ls|rotate|delete`, SPEC §8): the key, the
//! encryption at rest and the admin API's handlers.
//!
//! Values are encrypted with ChaCha20-Poly1305 (`ring::aead`) under one
//! 32-byte key: a random 96-bit nonce per value and the secret's name as
//! associated data, so a ciphertext copied to another name does not
//! decrypt. Stored as `1 || nonce || ciphertext || tag`; the store holds
//! nothing else of a value.
//!
//! The key is `<data-dir>/secrets.key` (64 hex digits), created with mode
//! 0600 the first time a secret is stored, or the file given with `berth
//! server --secrets-key-file` (32 raw bytes or 64 hex digits). A key file
//! readable by group or others is refused, naming the file and the
//! `chmod`, at start and at every load. Losing the key loses every value:
//! back it up with the database, apart from it.
//!
//! Invariants:
//! - a value is at most [`MAX_SECRET_VALUE_BYTES`] (Secrets Manager's
//!   limit) and never empty; names follow
//!   [`secret_name_problem`](super::store::secret_name_problem);
//! - no value, ciphertext or key is logged, returned by an RPC or put in an
//!   error; logs and errors name the secret only.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_proto::v1::{
    Assignment, DeleteSecretResponse, ListSecretsResponse, PutSecretRequest, RegistryCredentials,
    SecretInfo, SecretRef, TaskSecret,
};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tonic::Status;
use tracing::{info, warn};

use std::collections::HashMap;

use berth_taskdef::{SecretUsage, SecretUse};

use super::core::{Core, store_status};
use super::store::{
    MAX_SECRET_VALUE_BYTES, RUNNING, SecretRecord, StoreError, secret_name_problem,
};

/// The key's file in the data dir.
pub const SECRETS_KEY_FILE: &str = "secrets.key";
const KEY_LEN: usize = 32;
/// The first byte of every stored ciphertext: the format.
const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot read the secrets key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create the secrets key {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{} is readable by group or others (mode {mode:04o}): it holds the key of every secret; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{} is not a secrets key: it must hold 32 bytes, or 64 hex digits (`openssl rand -hex 32`)",
        .0.display()
    )]
    Malformed(PathBuf),
    #[error("the secrets key file {} does not exist", .0.display())]
    Missing(PathBuf),
}

/// Why a value cannot be stored or read; never holds the value.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Key(#[from] SecretKeyError),
    #[error(
        "secret {0} cannot be decrypted with this server's secrets key (a different key, or a damaged value); restore the key it was created with, or rotate the secret"
    )]
    Decrypt(String),
    #[error("secret {0}: cannot encrypt the value")]
    Encrypt(String),
}

/// Where the key lives, loaded once.
pub(crate) struct SecretKeys {
    path: PathBuf,
    /// `--secrets-key-file`: never created by berth.
    supplied: bool,
    key: Mutex<Option<LessSafeKey>>,
}

impl SecretKeys {
    /// The key of a server: `supplied`, else `<data_dir>/secrets.key`.
    pub(crate) fn new(data_dir: &Path, supplied: Option<&Path>) -> SecretKeys {
        SecretKeys {
            path: supplied.map_or_else(|| data_dir.join(SECRETS_KEY_FILE), Path::to_path_buf),
            supplied: supplied.is_some(),
            key: Mutex::new(None),
        }
    }

    /// At start: a supplied key must load; a key in the data dir is
    /// checked when it exists (it is created at first need).
    pub(crate) fn check_at_start(&self) -> Result<(), SecretKeyError> {
        if self.supplied || self.path.exists() {
            self.with_key(false, |_| ())?;
        }
        Ok(())
    }

    fn with_key<R>(
        &self,
        create: bool,
        f: impl FnOnce(&LessSafeKey) -> R,
    ) -> Result<R, SecretKeyError> {
        let mut slot = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = slot.as_ref() {
            return Ok(f(key));
        }
        let bytes = match read_key(&self.path)? {
            Some(bytes) => bytes,
            None if self.supplied || !create => {
                return Err(SecretKeyError::Missing(self.path.clone()));
            }
            None => create_key(&self.path)?,
        };
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| SecretKeyError::Malformed(self.path.clone()))?;
        Ok(f(slot.insert(LessSafeKey::new(unbound))))
    }

    /// Encrypts `value` for the secret `name` (creating the key when
    /// needed).
    pub(crate) fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + value.len() + 16);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        let mut body = value.to_vec();
        self.with_key(true, |key| {
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut body,
            )
        })?
        .map_err(|_| CryptoError::Encrypt(name.to_owned()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts the stored value of `record`.
    pub(crate) fn open(&self, record: &SecretRecord) -> Result<Vec<u8>, CryptoError> {
        self.open_sealed(&record.name, &record.ciphertext)
    }

    /// Decrypts what [`SecretKeys::seal`] sealed for `name`.
    pub(crate) fn open_sealed(
        &self,
        name: &str,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let bad = || CryptoError::Decrypt(name.to_owned());
        let rest = match ciphertext.split_first() {
            Some((&FORMAT_V1, rest)) if rest.len() >= NONCE_LEN => rest,
            _ => return Err(bad()),
        };
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut body = sealed.to_vec();
        let plain_len = self
            .with_key(false, |key| {
                key.open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
                    .map(|p| p.len())
            })?
            .map_err(|_| bad())?;
        body.truncate(plain_len);
        Ok(body)
    }
}

/// The key in `path`, `None` when there is no file; refused when group or
/// others may read it.
fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>, SecretKeyError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SecretKeyError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SecretKeyError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    if meta.len() > 1024 {
        return Err(SecretKeyError::Malformed(path.to_owned()));
    }
    let bytes = fs::read(path).map_err(|source| SecretKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_key(&bytes)
        .map(Some)
        .ok_or_else(|| SecretKeyError::Malformed(path.to_owned()))
}

/// 32 raw bytes, or 64 hex digits with optional surrounding white space.
fn parse_key(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = hex::decode(text).ok()?;
    <[u8; KEY_LEN]>::try_from(decoded.as_slice()).ok()
}

/// Creates a new random key at `path` (mode 0600 from the start): written
/// to a temporary file, then linked into place, so that a crash leaves no
/// half key and a second creator reads the first one's key.
fn create_key(path: &Path) -> Result<[u8; KEY_LEN], SecretKeyError> {
    let err = |source| SecretKeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut key = [0u8; KEY_LEN];
    rand::fill(&mut key);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent()
                && let Ok(d) = fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            info!(path = %path.display(), "secrets key created");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| SecretKeyError::Malformed(path.to_owned()))
        }
        Err(e) => Err(err(e)),
    }
}

// ---- resolving a task's references

/// The stored secrets `usages` may name (every candidate that exists), in
/// one store read.
pub(crate) async fn load(
    core: &Core,
    usages: &[SecretUsage],
) -> Result<HashMap<String, SecretRecord>, StoreError> {
    let mut names: Vec<String> = usages
        .iter()
        .flat_map(|u| u.reference.candidates().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    core.db("secrets_of_task", move |s| {
        let mut found = HashMap::new();
        for n in names {
            if let Some(r) = s.secret(&n)? {
                found.insert(n, r);
            }
        }
        Ok(found)
    })
    .await
}

/// What a secret resolves to for one usage: an environment variable's
/// value, or registry credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    Value(Vec<u8>),
    Credentials { username: String, password: String },
}

/// Names the kind and the length only, never a value.
impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolved::Value(v) => write!(f, "Value({} bytes)", v.len()),
            Resolved::Credentials { username, .. } => {
                write!(f, "Credentials({} byte user name)", username.len())
            }
        }
    }
}

/// Resolves one usage against the loaded records; the error names the
/// secret and what is wrong (never the value).
pub(crate) fn resolve(
    keys: &SecretKeys,
    records: &HashMap<String, SecretRecord>,
    usage: &SecretUsage,
) -> Result<Resolved, String> {
    let reference = &usage.reference;
    let Some(record) = reference.candidates().find_map(|n| records.get(n)) else {
        let tried: Vec<&str> = reference.candidates().collect();
        let last = tried.last().copied().unwrap_or_default();
        return Err(format!(
            "no secret {} (berth secret create {last} …)",
            tried.join(" or ")
        ));
    };
    let value = keys.open(record).map_err(|e| e.to_string())?;
    let value = match &reference.json_key {
        None => value,
        Some(k) => json_member(&record.name, &value, k)?.into_bytes(),
    };
    match usage.used_as {
        SecretUse::Env(_) => Ok(Resolved::Value(value)),
        SecretUse::RegistryCredentials => credentials(&record.name, &value),
    }
}

/// The string value of `key` in the JSON object `value`.
fn json_member(name: &str, value: &[u8], key: &str) -> Result<String, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)
        .map_err(|_| format!("secret {name} is not a JSON object, so it has no key {key:?}"))?;
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("the key {key:?} of secret {name} is not a string")),
        None => Err(format!("secret {name} has no key {key:?}")),
    }
}

/// `{"username": "…", "password": "…"}`.
fn credentials(name: &str, value: &[u8]) -> Result<Resolved, String> {
    let bad = || {
        format!(
            "secret {name} is not registry credentials: it must be the JSON object {{\"username\": \"…\", \"password\": \"…\"}}"
        )
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value).map_err(|_| bad())?;
    match (object.get("username"), object.get("password")) {
        (Some(serde_json::Value::String(u)), Some(serde_json::Value::String(p)))
            if !u.is_empty() =>
        {
            Ok(Resolved::Credentials {
                username: u.clone(),
                password: p.clone(),
            })
        }
        _ => Err(bad()),
    }
}

/// Most bytes of secret values (and credentials) one task may take: they
/// travel in every assignment of its instance.
pub const MAX_TASK_SECRET_BYTES: usize = 256 * 1024;

/// Resolves every usage of one task: the values (in the usages' order), or
/// every problem as `path: what is wrong`.
fn resolve_task(
    keys: &SecretKeys,
    records: &HashMap<String, SecretRecord>,
    usages: &[SecretUsage],
) -> Result<Vec<Resolved>, Vec<String>> {
    let mut problems = Vec::new();
    let mut resolved = Vec::new();
    for u in usages {
        match resolve(keys, records, u) {
            Ok(r) => resolved.push(r),
            Err(e) => problems.push(format!("{}: {e}", u.path)),
        }
    }
    let total: usize = resolved
        .iter()
        .map(|r| match r {
            Resolved::Value(v) => v.len(),
            Resolved::Credentials { username, password } => username.len() + password.len(),
        })
        .sum();
    if total > MAX_TASK_SECRET_BYTES {
        problems.push(format!(
            "the task's secrets hold {total} bytes, at most {MAX_TASK_SECRET_BYTES} (256 KiB) are delivered to a task"
        ));
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// The references of a stored definition (none when it does not parse:
/// the agent refuses such a task itself).
fn usages_of(definition_json: &str) -> Vec<SecretUsage> {
    berth_taskdef::parse(definition_json)
        .map(|p| berth_taskdef::secret_usages(&p.definition))
        .unwrap_or_default()
}

/// At submission (task run, service create and update): refuses a
/// definition that names a secret that does not exist, or that does not
/// resolve (a missing JSON key, credentials that are not
/// `{"username","password"}`, more than [`MAX_TASK_SECRET_BYTES`]),
/// naming each JSON path and secret.
pub(crate) async fn refuse_unresolvable(core: &Core, definition_json: &str) -> Result<(), Status> {
    let usages = usages_of(definition_json);
    if usages.is_empty() {
        return Ok(());
    }
    let records = load(core, &usages).await.map_err(store_status)?;
    resolve_task(&core.secrets, &records, &usages)
        .map(|_| ())
        .map_err(|problems| Status::failed_precondition(problems.join("; ")))
}

/// Before an assignment goes to its instance: puts the values of each
/// desired-RUNNING task's secrets and registry credentials into its
/// [`DesiredTask`](berth_proto::v1::DesiredTask). A task whose secrets do
/// not resolve any more (a secret deleted or its key lost since the
/// submission) gets none, with a warning naming the task and the secret;
/// the agent then fails it at start, naming the secret.
pub(crate) async fn attach(core: &Core, assignment: &mut Assignment) -> Result<(), StoreError> {
    let per_task: Vec<(usize, Vec<SecretUsage>)> = assignment
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.desired_status == RUNNING)
        .map(|(i, t)| (i, usages_of(&t.task_definition_json)))
        .filter(|(_, u)| !u.is_empty())
        .collect();
    if per_task.is_empty() {
        return Ok(());
    }
    let all: Vec<SecretUsage> = per_task.iter().flat_map(|(_, u)| u.clone()).collect();
    let records = load(core, &all).await?;
    for (i, usages) in per_task {
        let task = &mut assignment.tasks[i];
        match resolve_task(&core.secrets, &records, &usages) {
            Ok(resolved) => {
                for (u, r) in usages.into_iter().zip(resolved) {
                    match (u.used_as, r) {
                        (SecretUse::Env(name), Resolved::Value(value)) => {
                            task.secrets.push(TaskSecret {
                                container: u.container,
                                name,
                                value,
                            });
                        }
                        (_, Resolved::Credentials { username, password }) => {
                            task.registry_credentials.push(RegistryCredentials {
                                container: u.container,
                                username,
                                password,
                            });
                        }
                        (SecretUse::RegistryCredentials, Resolved::Value(_)) => {}
                    }
                }
            }
            Err(problems) => {
                warn!(task_id = %task.task_id, problems = %problems.join("; "), "the task's secrets do not resolve; the instance gets none and will not start it");
            }
        }
    }
    Ok(())
}

// ---- the admin API

fn info_message(r: &SecretRecord) -> SecretInfo {
    SecretInfo {
        name: r.name.clone(),
        version: u64::try_from(r.version).unwrap_or(0),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

pub(crate) fn crypto_status(e: CryptoError) -> Status {
    tracing::error!(error = %e, "secrets");
    Status::failed_precondition(e.to_string())
}

/// Checks a request's name and value.
fn checked(r: &PutSecretRequest) -> Result<String, Status> {
    let name = berth_taskdef::normalize_secret_name(&r.name).to_owned();
    if let Some(p) = secret_name_problem(&name) {
        return Err(Status::invalid_argument(p));
    }
    if r.value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "secret {name}: the value is empty"
        )));
    }
    if r.value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(Status::invalid_argument(format!(
            "secret {name}: the value is {} bytes, at most {MAX_SECRET_VALUE_BYTES} (64 KiB) are accepted",
            r.value.len()
        )));
    }
    Ok(name)
}

/// `CreateSecret` (`rotate` false) or `RotateSecret`.
pub(crate) async fn put(
    core: &Core,
    r: PutSecretRequest,
    rotate: bool,
    caller: &str,
) -> Result<SecretInfo, Status> {
    let name = checked(&r)?;
    let sealed = core.secrets.seal(&name, &r.value).map_err(crypto_status)?;
    let now = berth_proto::now_ms();
    let (op, what) = if rotate {
        ("rotate_secret", "secret rotated")
    } else {
        ("create_secret", "secret created")
    };
    let rec = core
        .db(op, move |s| {
            if rotate {
                s.rotate_secret(&name, &sealed, now)
            } else {
                s.create_secret(&name, &sealed, now)
            }
        })
        .await
        .map_err(store_status)?;
    info!(secret = %rec.name, version = rec.version, by = %caller, "{what}");
    Ok(info_message(&rec))
}

pub(crate) async fn delete(
    core: &Core,
    r: SecretRef,
    caller: &str,
) -> Result<DeleteSecretResponse, Status> {
    let name = berth_taskdef::normalize_secret_name(&r.name).to_owned();
    if let Some(p) = secret_name_problem(&name) {
        return Err(Status::invalid_argument(p));
    }
    let n = name.clone();
    core.db("delete_secret", move |s| s.delete_secret(&n))
        .await
        .map_err(store_status)?;
    info!(secret = %name, by = %caller, "secret deleted");
    Ok(DeleteSecretResponse { name })
}

pub(crate) async fn list(core: &Core) -> Result<ListSecretsResponse, Status> {
    let all = core
        .db("list_secrets", |s| s.secrets())
        .await
        .map_err(store_status)?;
    Ok(ListSecretsResponse {
        secrets: all.iter().map(info_message).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ciphertext: Vec<u8>) -> SecretRecord {
        SecretRecord {
            name: name.into(),
            version: 1,
            ciphertext,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    #[test]
    fn a_value_round_trips_and_is_bound_to_its_name() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = SecretKeys::new(dir.path(), None);
        let sealed = keys.seal("db", b"hunter2").expect("seal");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "the value is not stored in clear"
        );
        assert_eq!(
            keys.open(&record("db", sealed.clone())).expect("open"),
            b"hunter2"
        );
        let moved = keys
            .open(&record("other", sealed.clone()))
            .expect_err("other name");
        assert!(moved.to_string().contains("other"), "{moved}");
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(keys.open(&record("db", damaged)).is_err());
        assert_ne!(
            keys.seal("db", b"hunter2").expect("seal"),
            sealed,
            "a fresh nonce per value"
        );
        let mode = fs::metadata(dir.path().join(SECRETS_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another server on the same data dir reads the same key.
        let again = SecretKeys::new(dir.path(), None);
        assert_eq!(again.open(&record("db", sealed)).expect("open"), b"hunter2");
    }

    fn usage(value_from: &str, used_as: SecretUse) -> SecretUsage {
        SecretUsage {
            path: "p".into(),
            container: "c".into(),
            used_as,
            reference: berth_taskdef::secret_reference(value_from).expect("reference"),
        }
    }

    #[test]
    fn references_resolve_to_values_json_keys_and_credentials() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = SecretKeys::new(dir.path(), None);
        let mut records = HashMap::new();
        for (name, value) in [
            ("plain", &b"v1"[..]),
            ("db", br#"{"password":"pw","port":5432}"#),
            ("creds", br#"{"username":"u","password":"p"}"#),
        ] {
            records.insert(
                name.to_owned(),
                record(name, keys.seal(name, value).expect("seal")),
            );
        }
        let env = || SecretUse::Env("X".into());
        let sm = "arn:aws:secretsmanager:r:1:secret:";
        assert_eq!(
            resolve(&keys, &records, &usage("plain", env())),
            Ok(Resolved::Value(b"v1".to_vec()))
        );
        assert_eq!(
            resolve(
                &keys,
                &records,
                &usage(&format!("{sm}db-AbC123:password::"), env())
            ),
            Ok(Resolved::Value(b"pw".to_vec())),
            "the suffix is dropped when the name as written does not exist"
        );
        for (value_from, needle) in [
            (
                format!("{sm}db:port::"),
                "the key \"port\" of secret db is not a string",
            ),
            (format!("{sm}db:user::"), "secret db has no key \"user\""),
            (
                format!("{sm}plain:k::"),
                "secret plain is not a JSON object",
            ),
            (
                "nope".to_owned(),
                "no secret nope (berth secret create nope …)",
            ),
            (
                format!("{sm}x-AbC123"),
                "no secret x-AbC123 or x (berth secret create x …)",
            ),
        ] {
            let e = resolve(&keys, &records, &usage(&value_from, env())).expect_err(&value_from);
            assert!(e.contains(needle), "{value_from}: {e}");
        }
        assert!(matches!(
            resolve(&keys, &records, &usage("creds", SecretUse::RegistryCredentials)),
            Ok(Resolved::Credentials { username, password }) if username == "u" && password == "p"
        ));
        let e = resolve(
            &keys,
            &records,
            &usage("db", SecretUse::RegistryCredentials),
        )
        .expect_err("no username");
        assert!(
            e.contains("is not registry credentials") && !e.contains("pw"),
            "{e}"
        );
    }

    #[test]
    fn a_key_readable_by_others_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k");
        fs::write(&path, hex::encode([7u8; 32])).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let keys = SecretKeys::new(dir.path(), Some(&path));
        let e = keys.check_at_start().expect_err("open to others");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        keys.check_at_start().expect("0600 is fine");
        assert!(
            !dir.path().join(SECRETS_KEY_FILE).exists(),
            "a supplied key: none created in the data dir"
        );
    }

    #[test]
    fn a_supplied_key_must_exist_and_be_well_formed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k");
        let keys = SecretKeys::new(dir.path(), Some(&path));
        let e = keys.seal("db", b"v").expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        fs::write(&path, "short").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = SecretKeys::new(dir.path(), Some(&path))
            .check_at_start()
            .expect_err("malformed");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert_eq!(parse_key(&[9u8; 32]), Some([9u8; 32]));
        assert_eq!(
            parse_key(format!("{}\n", hex::encode([3u8; 32])).as_bytes()),
            Some([3u8; 32])
        );
    }

    #[test]
    fn requests_are_checked_before_anything_is_encrypted() {
        let ok = PutSecretRequest {
            name: " db ".into(),
            value: b"v".to_vec(),
        };
        assert_eq!(checked(&ok).expect("ok"), "db");
        for (name, value, what) in [
            ("a b", b"v".to_vec(), "not allowed"),
            ("db", Vec::new(), "empty"),
            (
                "db",
                vec![b'x'; MAX_SECRET_VALUE_BYTES + 1],
                "at most 65536",
            ),
        ] {
            let e = checked(&PutSecretRequest {
                name: name.into(),
                value,
            })
            .expect_err(what);
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(what), "{}", e.message());
        }
    }
}
