//! The `Admin` service: what the `berth` CLI calls. On loopback it is
//! plaintext; anywhere else the listener speaks TLS and `AdminGate` runs
//! `require_admin_certificate` before every call: the client certificate
//! (already checked by TLS against the fleet CA) must carry the admin
//! marker, so an agent's certificate is refused, and its serial number must
//! be recorded in the store as issued by this control plane and not
//! revoked. That is one primary-key lookup per call, so a revocation takes
//! effect on the certificate's next call, also on a connection already open,
//! and a certificate signed offline (`berth admin-cert create --data-dir`,
//! another process writing the same database) is known at once.
//!
//! Reads combine the store with the session registry: `agentConnected`
//! comes from the registry, and a task on an instance without a live
//! session that is not STOPPED is shown as `UNKNOWN` (the stored state is
//! kept; the agent's replayed events bring it up to date on reconnect).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proto::json::format_time_ms;
use berth_proto::v1::admin_server::Admin;
use berth_proto::v1::{
    AdminCertificate, AdminCertificateRecord, Cluster, ClusterRef, CreateAdminCertificateRequest,
    CreateTokenRequest, DeleteAttributesRequest, Instance, InstanceRef,
    ListAdminCertificatesRequest, ListAdminCertificatesResponse, ListAttributesRequest,
    ListAttributesResponse, ListClustersRequest, ListClustersResponse, ListInstancesRequest,
    ListInstancesResponse, ListTaskDefinitionsRequest, ListTaskDefinitionsResponse,
    ListTasksRequest, ListTasksResponse, PutAttributesRequest, RegisterTaskDefinitionRequest,
    RegisteredTaskDefinition, Resources, RevokeAdminCertificateRequest,
    RevokeAdminCertificateResponse, RunTaskRequest, RunTaskResponse, StopTaskRequest, Task,
    TaskDefinitionRef, TaskRef, Token, UpdateInstanceStateRequest,
};
use berth_proto::v1::{
    CreateServiceRequest, DeleteServiceRequest, ListServicesRequest, ListServicesResponse,
    ServiceDescription, ServiceRef, UpdateServiceRequest,
};
use rustls_pki_types::CertificateDer;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

use super::accesskeys;
use super::attributes;
use super::ca::{Ca, CaError, Issued, normalize_serial, subject_of, tidy_serial};
use super::clusters;
use super::placement::PlacementError;
use super::protocol;
use super::secrets;
use super::services;
use super::store::{
    AdminCertRecord, InstanceRecord, STOPPED, SqliteStore, Store, StoreError, TaskRecord, Usage,
};
use super::taskdefs;
use super::{
    Core, DB_FILE, DEFAULT_ADMIN_CERT_LIFETIME, MAX_CERT_LIFETIME, TokenError, peer_text,
    store_status,
};

/// Stop code and reason of `StopTask` without a reason.
pub const USER_STOP_CODE: &str = "UserInitiated";
pub const USER_STOP_REASON: &str = "Task stopped by user";
/// Reason given to the tasks of a deregistered instance.
pub const DEREGISTER_REASON: &str = "Instance deregistered";
/// Shown for tasks whose instance has no live session.
pub const UNKNOWN: &str = "UNKNOWN";

pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        AdminService { core }
    }
}

/// The API's view of an instance: `registered` is the registered capacity,
/// `reported` what the last Hello said, and `remaining` the lower of the
/// two minus what tasks reserve.
pub(crate) fn instance_message(i: &InstanceRecord, usage: Usage, connected: bool) -> Instance {
    let (cpu, memory_mib) = i.capacity();
    Instance {
        instance_id: i.instance_id.clone(),
        hostname: i.hostname.clone(),
        status: i.status.clone(),
        cluster: i.cluster.clone(),
        agent_connected: connected,
        last_heartbeat_at_ms: i.last_heartbeat_at_ms,
        agent_version: i.agent_version.clone(),
        registered: Some(Resources {
            cpu: i.cpu,
            memory_mib: i.memory_mib,
        }),
        remaining: Some(Resources {
            cpu: cpu - usage.cpu,
            memory_mib: memory_mib - usage.memory_mib,
        }),
        reported: Some(Resources {
            cpu: i.reported_cpu,
            memory_mib: i.reported_memory_mib,
        }),
        reported_hostname: i.reported_hostname.clone(),
        running_tasks_count: usage.running,
        pending_tasks_count: usage.pending,
        attributes: i.all_attributes().into_iter().collect(),
        registered_at_ms: i.registered_at_ms,
    }
}

/// The API's view of a task: `UNKNOWN` when its instance is not connected
/// and it is not STOPPED.
pub(crate) fn task_message(t: &TaskRecord, connected: bool) -> Task {
    let mut state = t.state();
    if !connected && state.last_status != STOPPED {
        state.last_status = UNKNOWN.to_owned();
    }
    Task {
        instance_id: t.instance_id.clone(),
        state: Some(state),
        last_seen_at_ms: t.last_seen_at_ms,
        task_definition: t.task_definition.clone(),
        group: t.group.clone(),
        started_by: t.started_by.clone(),
        ..Default::default()
    }
}

/// Who made an admin call off loopback: put into the request's extensions
/// by `AdminGate` once `require_admin_certificate` accepted the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller {
    /// The certificate's common name.
    pub name: String,
    /// Its serial number, lowercase hex.
    pub serial: String,
}

/// Who made a call, for logs: the admin certificate's name and serial, or
/// the loopback listener (which takes no certificate).
fn caller_text<T>(request: &Request<T>) -> String {
    match request.extensions().get::<AdminCaller>() {
        Some(c) => format!("{} ({})", c.name, c.serial),
        None => "the loopback admin API".to_owned(),
    }
}

/// The check of the admin API off loopback, before every call: the
/// caller's client certificate (TLS already checked that the fleet CA
/// signed it and that it is in its validity period) must be an admin
/// certificate (`OU=admin`) that this control plane recorded when it issued
/// it, under the same name, and that is not revoked. Refusals of admin
/// certificates are logged as warnings with the peer address.
///
/// A certificate signed by the fleet CA but not recorded (issued before the
/// control plane kept a record of admin certificates) is refused: nobody
/// could revoke it.
pub(crate) async fn require_admin_certificate(
    core: &Core,
    peer_certs: Option<&[CertificateDer<'static>]>,
    peer: Option<SocketAddr>,
) -> Result<AdminCaller, Status> {
    let leaf = peer_certs.and_then(|c| c.first()).ok_or_else(|| {
        Status::unauthenticated(
            "the admin API needs an admin certificate: create one with `berth admin-cert create --out DIR` on the control plane host and pass --admin-cert DIR",
        )
    })?;
    let subject = subject_of(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    if !subject.admin {
        warn!(
            common_name = %subject.common_name,
            peer = %peer_text(peer),
            "admin call refused: not an admin certificate"
        );
        return Err(Status::permission_denied(format!(
            "the client certificate of {:?} is not an admin certificate; create one with `berth admin-cert create --out DIR`",
            subject.common_name
        )));
    }
    let serial = subject.serial.clone();
    let record = core
        .db("admin_cert", move |s| s.admin_cert(&serial))
        .await
        .map_err(store_status)?;
    let record = match record {
        Some(r) if r.name == subject.common_name => r,
        _ => {
            warn!(
                serial = %subject.serial,
                common_name = %subject.common_name,
                peer = %peer_text(peer),
                "admin call refused: an admin certificate this control plane has no record of"
            );
            return Err(Status::unauthenticated(format!(
                "admin certificate {} of {:?} is not one this control plane issued and recorded (it may predate revocation support): create a new one with `berth admin-cert create`",
                subject.serial, subject.common_name
            )));
        }
    };
    if let Some(revoked_at_ms) = record.revoked_at_ms {
        let revoked_at = format_time_ms(revoked_at_ms).unwrap_or_else(|| "-".to_owned());
        warn!(
            serial = %record.serial,
            common_name = %record.name,
            revoked_at = %revoked_at,
            peer = %peer_text(peer),
            "admin call refused: revoked admin certificate"
        );
        return Err(Status::unauthenticated(format!(
            "admin certificate {} of {:?} was revoked at {revoked_at}; ask an admin for a new one (`berth admin-cert create`)",
            record.serial, record.name
        )));
    }
    Ok(AdminCaller {
        name: record.name,
        serial: record.serial,
    })
}

/// The `Admin` service off loopback: a tower service around it that runs
/// [`require_admin_certificate`] before every call (tonic's interceptors
/// cannot wait for the store) and answers a refusal with its status.
#[derive(Clone)]
pub(crate) struct AdminGate<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S> AdminGate<S> {
    pub(crate) fn new(inner: S, core: Arc<Core>) -> Self {
        AdminGate { inner, core }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AdminGate<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The service polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let core = Arc::clone(&self.core);
        Box::pin(async move {
            let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
            let certs = tls.and_then(TlsConnectInfo::peer_certs);
            let peer = tls.and_then(|t| t.get_ref().remote_addr());
            match require_admin_certificate(&core, certs.as_deref().map(Vec::as_slice), peer).await
            {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl<S: NamedService> NamedService for AdminGate<S> {
    const NAME: &'static str = S::NAME;
}

/// What the store records for an admin certificate just issued.
fn admin_cert_record(issued: &Issued, name: &str, now_ms: i64) -> AdminCertRecord {
    AdminCertRecord {
        serial: issued.serial.clone(),
        name: name.to_owned(),
        issued_at_ms: now_ms,
        not_after_ms: issued.not_after_ms(),
        revoked_at_ms: None,
    }
}

/// The API's view of a recorded admin certificate.
pub(crate) fn admin_cert_message(r: &AdminCertRecord) -> AdminCertificateRecord {
    AdminCertificateRecord {
        serial_number: r.serial.clone(),
        name: r.name.clone(),
        issued_at_ms: r.issued_at_ms,
        not_after_ms: r.not_after_ms,
        revoked_at_ms: r.revoked_at_ms.unwrap_or_default(),
    }
}

/// Why an admin certificate could not be signed offline.
#[derive(Debug, thiserror::Error)]
pub enum OfflineIssueError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(
        "no {} in {}: start `berth server --data-dir` there once so that it can record the certificates it issues",
        DB_FILE,
        .0.display()
    )]
    NoStore(PathBuf),
    #[error("cannot record the admin certificate: {0}")]
    Store(#[from] StoreError),
}

/// `berth admin-cert create --data-dir`: signs `csr_pem` as an admin
/// certificate with the CA in the server's data dir and records it in the
/// server's store (a server running on it sees it on the next call), so
/// that it can be listed and revoked like one issued over the admin API.
/// Returns the certificate and the CA certificate (PEM). Blocking.
pub fn issue_admin_cert_offline(
    data_dir: &Path,
    csr_pem: &str,
    name: &str,
    lifetime: time::Duration,
) -> Result<(Issued, String), OfflineIssueError> {
    let ca = Ca::load_existing(data_dir)?;
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(OfflineIssueError::NoStore(data_dir.to_owned()));
    }
    let store = SqliteStore::open(&db)?;
    let issued = ca.issue_admin_cert(csr_pem, name, lifetime)?;
    store.record_admin_cert(&admin_cert_record(&issued, name, berth_proto::now_ms()))?;
    info!(admin = %name, serial = %issued.serial, not_after = %issued.not_after, "admin certificate issued offline");
    Ok((issued, ca.cert_pem().to_owned()))
}

pub(crate) fn placement_status(e: PlacementError) -> Status {
    match e {
        PlacementError::NoSuchInstance(_) => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<Token>, Status> {
        let req = request.into_inner();
        let ttl = match req.ttl_seconds {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let hostname = Some(req.hostname.as_str()).filter(|h| !h.trim().is_empty());
        let sources = super::enroll::parse_source_cidrs(&req.source_cidrs)
            .map_err(|e| Status::invalid_argument(format!("source network: {e}")))?;
        let token = self
            .core
            .create_token(ttl, hostname, &sources, Some(req.cluster.as_str()))
            .await
            .map_err(|e| match e {
                TokenError::Ttl(_) | TokenError::Hostname(_) => {
                    Status::invalid_argument(e.to_string())
                }
                TokenError::Store(e) => super::clusters::cluster_status(e),
            })?;
        Ok(Response::new(token))
    }

    async fn create_admin_certificate(
        &self,
        request: Request<CreateAdminCertificateRequest>,
    ) -> Result<Response<AdminCertificate>, Status> {
        let caller = caller_text(&request);
        let req = request.into_inner();
        let name = req.name.trim().to_owned();
        let lifetime = match req.lifetime_seconds {
            0 => DEFAULT_ADMIN_CERT_LIFETIME,
            s => Duration::from_secs(s),
        };
        if lifetime > MAX_CERT_LIFETIME {
            return Err(Status::invalid_argument(format!(
                "admin certificate lifetime {} is out of range: at most 365 days",
                humantime::format_duration(lifetime)
            )));
        }
        let lifetime = time::Duration::try_from(lifetime)
            .map_err(|e| Status::invalid_argument(format!("lifetime: {e}")))?;
        let issued = self
            .core
            .ca
            .issue_admin_cert(&req.csr_pem, &name, lifetime)
            .map_err(|e| e.into_signing_status("an admin certificate"))?;
        // Recorded before it is handed out: a certificate the store does not
        // know is refused off loopback, and could not be revoked.
        let record = admin_cert_record(&issued, &name, berth_proto::now_ms());
        self.core
            .db("record_admin_cert", move |s| s.record_admin_cert(&record))
            .await
            .map_err(store_status)?;
        info!(admin = %name, serial = %issued.serial, not_after = %issued.not_after, by = %caller, "admin certificate issued");
        Ok(Response::new(AdminCertificate {
            not_after_ms: issued.not_after_ms(),
            certificate_pem: issued.pem,
            ca_pem: self.core.ca.cert_pem().to_owned(),
            name,
            serial_number: issued.serial,
        }))
    }

    async fn list_admin_certificates(
        &self,
        _request: Request<ListAdminCertificatesRequest>,
    ) -> Result<Response<ListAdminCertificatesResponse>, Status> {
        let certs = self
            .core
            .db("admin_certs", |s| s.admin_certs())
            .await
            .map_err(store_status)?;
        Ok(Response::new(ListAdminCertificatesResponse {
            certificates: certs.iter().map(admin_cert_message).collect(),
        }))
    }

    async fn revoke_admin_certificate(
        &self,
        request: Request<RevokeAdminCertificateRequest>,
    ) -> Result<Response<RevokeAdminCertificateResponse>, Status> {
        let caller = caller_text(&request);
        let typed = request.into_inner().serial_number;
        let serial = normalize_serial(&typed).ok_or_else(|| {
            Status::invalid_argument(format!(
                "invalid serial number {typed:?}: expected hex digits, as `berth admin-cert ls` shows them"
            ))
        })?;
        let lookup = serial.clone();
        let now = berth_proto::now_ms();
        let (cert, changed) = self
            .core
            .db("revoke_admin_cert", move |s| s.revoke_admin_cert(&lookup, now))
            .await
            .map_err(|e| match e {
                StoreError::NoAdminCertificate(_) => Status::not_found(format!(
                    "no admin certificate with serial number {}: `berth admin-cert ls` lists those this control plane issued",
                    tidy_serial(&typed)
                )),
                other => store_status(other),
            })?;
        if changed {
            info!(serial = %cert.serial, admin = %cert.name, by = %caller, "admin certificate revoked");
        }
        Ok(Response::new(RevokeAdminCertificateResponse {
            certificate: Some(admin_cert_message(&cert)),
            already_revoked: !changed,
        }))
    }

    async fn list_instances(
        &self,
        request: Request<ListInstancesRequest>,
    ) -> Result<Response<ListInstancesResponse>, Status> {
        let cluster = non_empty(&request.into_inner().cluster);
        let (instances, usage) = self
            .core
            .db("list_instances", |s| {
                Ok::<_, StoreError>((s.instances()?, s.usage()?))
            })
            .await
            .map_err(store_status)?;
        let connected = self.core.sessions().connected_instances();
        let instances = instances
            .iter()
            .filter(|i| cluster.as_deref().is_none_or(|c| i.cluster == c))
            .map(|i| {
                let u = usage.get(&i.instance_id).copied().unwrap_or_default();
                instance_message(i, u, connected.contains(&i.instance_id))
            })
            .collect();
        Ok(Response::new(ListInstancesResponse { instances }))
    }

    async fn describe_instance(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<Instance>, Status> {
        let id = request.into_inner().instance_id.trim().to_owned();
        let lookup = id.clone();
        let (instance, usage) = self
            .core
            .db("describe_instance", move |s| {
                let i = s.instance(&lookup)?;
                let u = s.usage()?.get(&lookup).copied().unwrap_or_default();
                Ok::<_, StoreError>((i, u))
            })
            .await
            .map_err(store_status)?;
        let instance = instance.ok_or_else(|| Status::not_found(format!("no instance {id}")))?;
        let connected = self.core.sessions().is_connected(&id);
        Ok(Response::new(instance_message(&instance, usage, connected)))
    }

    async fn deregister_instance(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<Instance>, Status> {
        let id = request.into_inner().instance_id.trim().to_owned();
        let lookup = id.clone();
        let (instance, usage) = self
            .core
            .db("deregister_instance", move |s| {
                let i = s.deregister_instance(&lookup, USER_STOP_CODE, DEREGISTER_REASON)?;
                let u = s.usage()?.get(&lookup).copied().unwrap_or_default();
                Ok::<_, StoreError>((i, u))
            })
            .await
            .map_err(store_status)?;
        info!(instance_id = %id, "instance deregistered");
        self.core.wake_services();
        // The agent learns to stop its tasks, then loses its session; it
        // cannot open another one.
        self.core.sessions().notify_assignment(&id);
        self.core.sessions().close_session(
            &id,
            Status::permission_denied(format!("instance {id} was deregistered")),
        );
        Ok(Response::new(instance_message(&instance, usage, false)))
    }

    async fn accept_instance_capacity(
        &self,
        request: Request<InstanceRef>,
    ) -> Result<Response<Instance>, Status> {
        let caller = caller_text(&request);
        let id = request.into_inner().instance_id.trim().to_owned();
        let lookup = id.clone();
        let (before, after, usage) = self
            .core
            .db("accept_capacity", move |s| {
                let (before, after) = s.accept_capacity(&lookup)?;
                let u = s.usage()?.get(&lookup).copied().unwrap_or_default();
                Ok::<_, StoreError>((before, after, u))
            })
            .await
            .map_err(store_status)?;
        info!(
            instance_id = %id,
            cpu_before = before.cpu,
            memory_mib_before = before.memory_mib,
            cpu = after.cpu,
            memory_mib = after.memory_mib,
            by = %caller,
            "registered the capacity the agent reports"
        );
        let connected = self.core.sessions().is_connected(&id);
        Ok(Response::new(instance_message(&after, usage, connected)))
    }

    // ---- clusters, drain (server/clusters.rs), attributes (server/attributes.rs)

    async fn create_cluster(&self, r: Request<ClusterRef>) -> Result<Response<Cluster>, Status> {
        let caller = caller_text(&r);
        Ok(Response::new(
            clusters::create(&self.core, r.into_inner(), &caller).await?,
        ))
    }

    async fn list_clusters(
        &self,
        _r: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        Ok(Response::new(clusters::list(&self.core).await?))
    }

    async fn describe_cluster(&self, r: Request<ClusterRef>) -> Result<Response<Cluster>, Status> {
        Ok(Response::new(
            clusters::describe(&self.core, r.into_inner()).await?,
        ))
    }

    async fn delete_cluster(&self, r: Request<ClusterRef>) -> Result<Response<Cluster>, Status> {
        let caller = caller_text(&r);
        Ok(Response::new(
            clusters::delete(&self.core, r.into_inner(), &caller).await?,
        ))
    }

    async fn put_attributes(
        &self,
        r: Request<PutAttributesRequest>,
    ) -> Result<Response<Instance>, Status> {
        let caller = caller_text(&r);
        let i = attributes::put(&self.core, r.into_inner(), &caller).await?;
        Ok(Response::new(i))
    }

    async fn delete_attributes(
        &self,
        r: Request<DeleteAttributesRequest>,
    ) -> Result<Response<Instance>, Status> {
        let caller = caller_text(&r);
        let i = attributes::delete(&self.core, r.into_inner(), &caller).await?;
        Ok(Response::new(i))
    }

    async fn list_attributes(
        &self,
        r: Request<ListAttributesRequest>,
    ) -> Result<Response<ListAttributesResponse>, Status> {
        Ok(Response::new(
            attributes::list(&self.core, r.into_inner()).await?,
        ))
    }

    async fn update_instance_state(
        &self,
        r: Request<UpdateInstanceStateRequest>,
    ) -> Result<Response<Instance>, Status> {
        let caller = caller_text(&r);
        let i = clusters::update_instance_state(&self.core, r.into_inner(), &caller).await?;
        Ok(Response::new(i))
    }

    async fn run_task(
        &self,
        request: Request<RunTaskRequest>,
    ) -> Result<Response<RunTaskResponse>, Status> {
        taskdefs::run_task(&self.core, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let request = request.into_inner();
        let filter = non_empty(&request.instance_id);
        let cluster = non_empty(&request.cluster);
        let mut tasks = self
            .core
            .db("tasks", move |s| s.tasks(filter.as_deref()))
            .await
            .map_err(store_status)?;
        if let Some(c) = cluster {
            tasks.retain(|t| t.cluster == c);
        }
        let connected = self.core.sessions().connected_instances();
        let tasks = tasks
            .iter()
            .map(|t| task_message(t, connected.contains(&t.instance_id)))
            .collect();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn describe_task(&self, request: Request<TaskRef>) -> Result<Response<Task>, Status> {
        let id = request.into_inner().task_id.trim().to_owned();
        let lookup = id.clone();
        let task = self
            .core
            .db("task", move |s| s.task(&lookup))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no task {id}")))?;
        let connected = self.core.sessions().is_connected(&task.instance_id);
        Ok(Response::new(task_message(&task, connected)))
    }

    async fn stop_task(&self, request: Request<StopTaskRequest>) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let id = req.task_id.trim().to_owned();
        let reason = non_empty(&req.reason).unwrap_or_else(|| USER_STOP_REASON.to_owned());
        // The agent echoes the reason in its events, where the same bound
        // holds.
        if reason.len() > protocol::MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "reason: {} bytes; use at most {} bytes without control characters",
                reason.len(),
                protocol::MAX_REASON_BYTES
            )));
        }
        let span = info_span!("task", task_id = %id);
        let lookup = id.clone();
        let (task, changed) = self
            .core
            .db("stop_task", move |s| {
                s.stop_task(&lookup, USER_STOP_CODE, &reason)
            })
            .instrument(span.clone())
            .await
            .map_err(store_status)?;
        if changed {
            span.in_scope(|| info!(instance_id = %task.instance_id, "task stop requested"));
            self.core.sessions().notify_assignment(&task.instance_id);
        }
        let connected = self.core.sessions().is_connected(&task.instance_id);
        Ok(Response::new(task_message(&task, connected)))
    }

    // ---- the task-definition registry (server/taskdefs.rs)

    async fn register_task_definition(
        &self,
        r: Request<RegisterTaskDefinitionRequest>,
    ) -> Result<Response<RegisteredTaskDefinition>, Status> {
        taskdefs::register(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_task_definitions(
        &self,
        r: Request<ListTaskDefinitionsRequest>,
    ) -> Result<Response<ListTaskDefinitionsResponse>, Status> {
        taskdefs::list(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_task_definition(
        &self,
        r: Request<TaskDefinitionRef>,
    ) -> Result<Response<RegisteredTaskDefinition>, Status> {
        taskdefs::describe(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn deregister_task_definition(
        &self,
        r: Request<TaskDefinitionRef>,
    ) -> Result<Response<RegisteredTaskDefinition>, Status> {
        taskdefs::deregister(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    // ---- services (server/services.rs)

    async fn create_service(
        &self,
        r: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceDescription>, Status> {
        services::create(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_service(
        &self,
        r: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceDescription>, Status> {
        services::update(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_services(
        &self,
        r: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        services::list(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_service(
        &self,
        r: Request<ServiceRef>,
    ) -> Result<Response<ServiceDescription>, Status> {
        services::describe(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_service(
        &self,
        r: Request<DeleteServiceRequest>,
    ) -> Result<Response<ServiceDescription>, Status> {
        services::delete(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn rollback_service(
        &self,
        r: Request<ServiceRef>,
    ) -> Result<Response<ServiceDescription>, Status> {
        services::rollback(&self.core, r.into_inner())
            .await
            .map(Response::new)
    }

    // ---- secrets (server/secrets.rs)

    async fn create_secret(
        &self,
        r: Request<berth_proto::v1::PutSecretRequest>,
    ) -> Result<Response<berth_proto::v1::SecretInfo>, Status> {
        let caller = caller_text(&r);
        secrets::put(&self.core, r.into_inner(), false, &caller)
            .await
            .map(Response::new)
    }

    async fn rotate_secret(
        &self,
        r: Request<berth_proto::v1::PutSecretRequest>,
    ) -> Result<Response<berth_proto::v1::SecretInfo>, Status> {
        let caller = caller_text(&r);
        secrets::put(&self.core, r.into_inner(), true, &caller)
            .await
            .map(Response::new)
    }

    async fn delete_secret(
        &self,
        r: Request<berth_proto::v1::SecretRef>,
    ) -> Result<Response<berth_proto::v1::DeleteSecretResponse>, Status> {
        let caller = caller_text(&r);
        secrets::delete(&self.core, r.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn list_secrets(
        &self,
        _r: Request<berth_proto::v1::ListSecretsRequest>,
    ) -> Result<Response<berth_proto::v1::ListSecretsResponse>, Status> {
        secrets::list(&self.core).await.map(Response::new)
    }

    // ---- access keys of the ECS API (server/accesskeys.rs)

    async fn create_access_key(
        &self,
        r: Request<berth_proto::v1::CreateAccessKeyRequest>,
    ) -> Result<Response<berth_proto::v1::CreatedAccessKey>, Status> {
        let caller = caller_text(&r);
        accesskeys::create(&self.core, r.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn list_access_keys(
        &self,
        _r: Request<berth_proto::v1::ListAccessKeysRequest>,
    ) -> Result<Response<berth_proto::v1::ListAccessKeysResponse>, Status> {
        accesskeys::list(&self.core).await.map(Response::new)
    }

    async fn revoke_access_key(
        &self,
        r: Request<berth_proto::v1::AccessKeyRef>,
    ) -> Result<Response<berth_proto::v1::AccessKeyInfo>, Status> {
        let caller = caller_text(&r);
        accesskeys::revoke(&self.core, r.into_inner(), &caller)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::RUNNING;

    #[test]
    fn disconnected_tasks_show_unknown_unless_stopped() {
        let t = TaskRecord {
            task_id: "t".into(),
            instance_id: "i".into(),
            last_status: RUNNING.into(),
            ..TaskRecord::default()
        };
        let shown = |t: &TaskRecord, c| {
            task_message(t, c)
                .state
                .map(|s| s.last_status)
                .unwrap_or_default()
        };
        assert_eq!(shown(&t, true), RUNNING);
        assert_eq!(shown(&t, false), UNKNOWN);
        let stopped = TaskRecord {
            last_status: STOPPED.into(),
            ..t
        };
        assert_eq!(shown(&stopped, false), STOPPED);
    }

    #[test]
    fn remaining_is_registered_minus_reserved() {
        let i = InstanceRecord {
            instance_id: "i".into(),
            cpu: 2048,
            memory_mib: 4000,
            reported_cpu: 4096,
            reported_memory_mib: 4000,
            ..InstanceRecord::default()
        };
        let m = instance_message(
            &i,
            Usage {
                cpu: 512,
                memory_mib: 1000,
                running: 1,
                pending: 1,
            },
            true,
        );
        assert_eq!(
            m.remaining,
            Some(Resources {
                cpu: 1536,
                memory_mib: 3000
            })
        );
        assert_eq!(m.running_tasks_count, 1);
        assert!(m.agent_connected);
    }
}
