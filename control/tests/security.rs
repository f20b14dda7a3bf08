//! The control plane's protections (SECURITY.md, "What is protected and
//! how") against the real server in-process: every refusal is clear and
//! changes nothing stored. Activations (hostname binding, expiry, failed
//! attempts per address), certificates (renewal, expiry, another CA, admin
//! certificates), the admin API off loopback and the revocation of admin
//! certificates, and limits (message sizes, malformed messages). The
//! message rate, now per instance, is tested in `hostile_agent.rs`.

mod common;

use common::*;

use std::time::Duration;

use berth_control::server::admin::issue_admin_cert_offline;
use berth_control::{RunningServer, Server, ServerConfig};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, CreateAdminCertificateRequest, CreateTokenRequest, Hello, InstanceRef,
    ListAdminCertificatesRequest, ListInstancesRequest, ListTasksRequest, RenewRequest, Resources,
    RevokeAdminCertificateRequest, RunTaskRequest,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Opens a session (Hello) and returns the stream, or the refusal.
async fn connect(
    channel: Channel,
    instance_id: &str,
    last_event_sequence: u64,
) -> std::result::Result<
    (
        mpsc::Sender<AgentMessage>,
        tonic::Streaming<berth_proto::v1::ServerMessage>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    tx.send(agent(AgentMsg::Hello(Hello {
        instance_id: instance_id.into(),
        capacity: Some(Resources {
            cpu: 1024,
            memory_mib: 1024,
        }),
        last_event_sequence,
        ..Hello::default()
    })))
    .await
    .map_err(|_| tonic::Status::internal("cannot queue Hello"))?;
    let inbound = FleetClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

async fn instance_count(server: &berth_control::RunningServer) -> Result<usize> {
    let mut admin = admin_client(server.admin_addr()).await?;
    Ok(admin
        .list_instances(ListInstancesRequest::default())
        .await?
        .into_inner()
        .instances
        .len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_bound_to_a_hostname_refuse_other_hosts() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let token = admin
        .create_token(CreateTokenRequest {
            ttl_seconds: 0,
            hostname: "web-1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(token.hostname, "web-1");
    let bad = admin
        .create_token(CreateTokenRequest {
            ttl_seconds: 0,
            hostname: "no spaces please".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid hostname");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("invalid hostname"), "{bad:?}");

    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let mut enrollment = EnrollmentClient::new(plain);
    let (_, csr_pem) = csr()?;
    // enroll_request reports hostname "test-host".
    let refused = enrollment
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &csr_pem,
        ))
        .await
        .expect_err("another hostname");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("\"web-1\"") && refused.message().contains("\"test-host\""),
        "the refusal names both hostnames: {}",
        refused.message()
    );
    assert_eq!(instance_count(&server).await?, 0);

    // The activation is still unused: the right host (any case) enrolls.
    let mut right = enroll_request(&token.activation_id, &token.activation_code, &csr_pem);
    if let Some(h) = right.host.as_mut() {
        h.hostname = "WEB-1".into();
    }
    let ok = enrollment.enroll(right).await?.into_inner();
    assert!(ok.instance_id.starts_with("i-"));
    assert_eq!(instance_count(&server).await?, 1);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_enrollments_are_limited_per_source_address() -> Result {
    let dir = private_dir()?;
    let mut cfg = ServerConfig::loopback(dir.path());
    cfg.enroll_failures_per_minute = 3;
    let server = Server::start(cfg).await?;
    let token = server.create_token(None).await?;
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let mut enrollment = EnrollmentClient::new(plain);
    let (_, csr_pem) = csr()?;
    for i in 0..3 {
        let wrong = enrollment
            .enroll(enroll_request(
                &token.activation_id,
                &format!("wrong-{i}"),
                &csr_pem,
            ))
            .await
            .expect_err("wrong code");
        assert_eq!(wrong.code(), Code::PermissionDenied, "attempt {i}");
    }
    // Now even the right code is refused, without looking at it.
    let limited = enrollment
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &csr_pem,
        ))
        .await
        .expect_err("rate limited");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited
            .message()
            .starts_with("too many failed enrollment attempts from 127.0.0.1 (3 in the last 1m)"),
        "{}",
        limited.message()
    );
    assert_eq!(instance_count(&server).await?, 0);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_activation_is_refused() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let token = server.create_token(Some(Duration::from_secs(1))).await?;
    // Wait for the expiry itself (wall clock), with a deadline.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while berth_proto::now_ms() <= token.expires_at_ms {
        assert!(tokio::time::Instant::now() < deadline, "clock stuck?");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let (_, csr_pem) = csr()?;
    let expired = EnrollmentClient::new(plain)
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &csr_pem,
        ))
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), Code::PermissionDenied);
    assert!(
        expired
            .message()
            .starts_with(&format!("activation {} expired at ", token.activation_id)),
        "{}",
        expired.message()
    );
    assert_eq!(instance_count(&server).await?, 0);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_issues_a_new_certificate_for_the_same_instance() -> Result {
    let dir = private_dir()?;
    let mut cfg = ServerConfig::loopback(dir.path());
    cfg.cert_lifetime = Duration::from_secs(3600);
    let server = Server::start(cfg).await?;
    let host = enroll(&server).await?;
    let mtls = host.mtls(&server).await?;
    let mut fleet = FleetClient::new(mtls.clone());

    let (key, csr_pem) = csr()?;
    let renewed = fleet.renew(RenewRequest { csr_pem }).await?.into_inner();
    assert_eq!(renewed.ca_pem, server.ca_pem());
    let lifetime_ms = renewed.not_after_ms - berth_proto::now_ms();
    assert!(
        lifetime_ms > 3_000_000 && lifetime_ms <= 3_600_000,
        "not_after follows --cert-lifetime: {lifetime_ms} ms"
    );
    let der = x509_parser::pem::parse_x509_pem(renewed.certificate_pem.as_bytes())?
        .1
        .contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    assert_eq!(cn, vec![host.instance_id.as_str()]);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    // The new identity connects.
    let new_identity = Identity::from_pem(&renewed.certificate_pem, key.serialize_pem());
    let channel = fleet_channel(server.fleet_addr(), &host.ca_pem, Some(new_identity)).await?;
    let (_tx, mut inbound) = connect(channel, &host.instance_id, 0).await?;
    assert!(matches!(next(&mut inbound).await?, ServerMsg::Welcome(_)));

    // A broken CSR is refused with a status.
    let bad = fleet
        .renew(RenewRequest {
            csr_pem: "not a csr".into(),
        })
        .await
        .expect_err("bad csr");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Without a client certificate: refused.
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let (_, csr_pem) = csr()?;
    let anonymous = FleetClient::new(plain)
        .renew(RenewRequest { csr_pem })
        .await
        .expect_err("no certificate");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // After deregistration: refused.
    let mut admin = admin_client(server.admin_addr()).await?;
    admin
        .deregister_instance(InstanceRef {
            instance_id: host.instance_id.clone(),
        })
        .await?;
    let (_, csr_pem) = csr()?;
    let gone = fleet
        .renew(RenewRequest { csr_pem })
        .await
        .expect_err("deregistered");
    assert_eq!(gone.code(), Code::PermissionDenied);
    assert!(gone.message().contains("deregistered"), "{gone:?}");
    server.shutdown().await?;
    Ok(())
}

/// Signs a client certificate for `cn` with the server's CA key, valid in
/// `[not_before, not_after]` (relative to now), with `ou` if given.
fn forged_with_server_ca(
    data_dir: &std::path::Path,
    cn: &str,
    ou: Option<&str>,
    valid: (time::Duration, time::Duration),
) -> Result<Identity> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(data_dir.join("ca.key"))?)?;
    let ca_pem = std::fs::read_to_string(data_dir.join("ca.crt"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + valid.0;
    params.not_after = now + valid.1;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Identity::from_pem(cert.pem(), key.serialize_pem()))
}

/// A session attempt that must fail; returns what the client saw.
async fn refused_session(
    server: &berth_control::RunningServer,
    identity: Identity,
    instance_id: &str,
) -> String {
    let channel = match fleet_channel(server.fleet_addr(), server.ca_pem(), Some(identity)).await {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    match connect(channel, instance_id, 0).await {
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
        Ok((_tx, mut inbound)) => match next(&mut inbound).await {
            Ok(msg) => panic!("the session was accepted: {msg:?}"),
            Err(e) => format!("stream: {e}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_and_admin_certificates_open_no_session() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let host = enroll(&server).await?;

    // Signed by the right CA, for a registered instance, but expired.
    let expired = forged_with_server_ca(
        dir.path(),
        &host.instance_id,
        None,
        (time::Duration::hours(-2), time::Duration::hours(-1)),
    )?;
    let seen = refused_session(&server, expired, &host.instance_id).await;
    assert!(!seen.is_empty());
    assert!(!server.is_connected(&host.instance_id), "{seen}");

    // A certificate of another CA.
    let other_dir = private_dir()?;
    let other = Server::start(ServerConfig::loopback(other_dir.path())).await?;
    let stranger = enroll(&other).await?;
    let seen = refused_session(&server, stranger.identity(), &stranger.instance_id).await;
    assert!(!seen.is_empty());
    other.shutdown().await?;

    // An admin certificate is not an agent's identity, even with the
    // common name of a registered instance.
    let admin_as_agent = forged_with_server_ca(
        dir.path(),
        &host.instance_id,
        Some("admin"),
        (time::Duration::hours(-1), time::Duration::hours(1)),
    )?;
    let seen = refused_session(&server, admin_as_agent, &host.instance_id).await;
    assert!(
        seen.contains("PermissionDenied") && seen.contains("admin certificate"),
        "{seen}"
    );
    assert!(!server.is_connected(&host.instance_id));

    // Plaintext on the TLS port: no gRPC at all. Today the TCP connect
    // succeeds and the first call fails below gRPC (the TLS server's answer
    // is not HTTP/2: an h2 protocol error). Either way, the call must never
    // reach the enrollment service, which would refuse these made-up values
    // with a status of its own.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.fleet_addr()))?
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = EnrollmentClient::new(channel)
            .enroll(enroll_request("x", "y", "z"))
            .await
            .err()
            .ok_or("a plaintext enroll on the TLS fleet port was answered")?;
        assert!(
            std::error::Error::source(&status).is_some(),
            "plaintext on the TLS fleet port reached the enrollment service: {status:?}"
        );
    }

    // The real identity still works: nothing above changed anything.
    let mtls = host.mtls(&server).await?;
    let (_tx, mut inbound) = connect(mtls, &host.instance_id, 0).await?;
    assert!(matches!(next(&mut inbound).await?, ServerMsg::Welcome(_)));
    server.shutdown().await?;
    Ok(())
}

/// An admin client over TLS to `addr`, presenting `identity` (if any).
async fn tls_admin(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<AdminClient<Channel>> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

/// A server in `dir` whose admin API listens off loopback (TLS, admin
/// certificates only).
async fn off_loopback_server(dir: &std::path::Path) -> Result<RunningServer> {
    let mut cfg = ServerConfig::loopback(dir);
    cfg.admin_listen = "0.0.0.0:0".parse()?;
    let server = Server::start(cfg).await?;
    assert!(server.admin_tls());
    Ok(server)
}

/// An admin certificate for `name` signed offline with the CA in the data
/// dir (`berth admin-cert create --data-dir`): its identity and serial.
fn offline_admin(data_dir: &std::path::Path, name: &str) -> Result<(Identity, String)> {
    let (key, csr_pem) = csr()?;
    let (issued, _ca_pem) =
        issue_admin_cert_offline(data_dir, &csr_pem, name, time::Duration::hours(1))?;
    Ok((
        Identity::from_pem(&issued.pem, key.serialize_pem()),
        issued.serial,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_off_loopback_takes_admin_certificates_only() -> Result {
    let dir = private_dir()?;
    let server = off_loopback_server(dir.path()).await?;
    let addr = server.admin_addr();
    let ca_pem = server.ca_pem().to_owned();

    // Plaintext: refused.
    if let Ok(mut plain) =
        admin_client(std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))).await
    {
        plain
            .list_instances(ListInstancesRequest::default())
            .await
            .expect_err("plaintext admin call");
    }
    // TLS without a client certificate: refused.
    if let Ok(mut anonymous) = tls_admin(addr, &ca_pem, None).await {
        anonymous
            .create_token(CreateTokenRequest::default())
            .await
            .expect_err("no client certificate");
    }
    // An agent's certificate: refused by name.
    let host = enroll(&server).await?;
    let mut as_agent = tls_admin(addr, &ca_pem, Some(host.identity())).await?;
    let denied = as_agent
        .create_token(CreateTokenRequest::default())
        .await
        .expect_err("agent certificate");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("not an admin certificate"),
        "{denied:?}"
    );
    let denied = as_agent
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.into(),
            instance_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("agent certificate");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // An admin certificate with the CA's signature and the admin marker
    // that the control plane has no record of (one issued before it kept
    // records): refused, naming its serial.
    let unrecorded = forged_with_server_ca(
        dir.path(),
        "mallory",
        Some("admin"),
        (time::Duration::hours(-1), time::Duration::hours(1)),
    )?;
    let mut as_unrecorded = tls_admin(addr, &ca_pem, Some(unrecorded)).await?;
    let denied = as_unrecorded
        .create_token(CreateTokenRequest::default())
        .await
        .expect_err("unrecorded admin certificate");
    assert_eq!(denied.code(), Code::Unauthenticated, "{denied:?}");
    assert!(
        denied.message().contains("\"mallory\"")
            && denied
                .message()
                .contains("not one this control plane issued"),
        "{denied:?}"
    );

    // An admin certificate signed offline with the CA in the data dir, and
    // recorded there.
    let (alice, _) = offline_admin(dir.path(), "alice")?;
    let mut admin = tls_admin(addr, &ca_pem, Some(alice)).await?;
    let listed = admin
        .list_instances(ListInstancesRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.instances.len(), 1);
    let token = admin
        .create_token(CreateTokenRequest::default())
        .await?
        .into_inner();
    assert!(!token.activation_code.is_empty());
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_certificate_is_refused_on_its_next_call() -> Result {
    let dir = private_dir()?;
    let server = off_loopback_server(dir.path()).await?;
    let addr = server.admin_addr();
    let ca_pem = server.ca_pem().to_owned();

    // Two admin certificates: alice's signed offline, bob's over the API.
    let (alice_identity, alice_serial) = offline_admin(dir.path(), "alice")?;
    let mut alice = tls_admin(addr, &ca_pem, Some(alice_identity)).await?;
    let (bob_key, csr_pem) = csr()?;
    let issued = alice
        .create_admin_certificate(CreateAdminCertificateRequest {
            csr_pem,
            name: "bob".into(),
            lifetime_seconds: 3600,
        })
        .await?
        .into_inner();
    let bob_serial = issued.serial_number.clone();
    assert_eq!(bob_serial.len(), 32, "{bob_serial}");
    assert_ne!(bob_serial, alice_serial);
    let bob_identity = || Identity::from_pem(&issued.certificate_pem, bob_key.serialize_pem());
    let mut bob = tls_admin(addr, &ca_pem, Some(bob_identity())).await?;
    // Both work.
    alice
        .list_instances(ListInstancesRequest::default())
        .await?;
    bob.list_instances(ListInstancesRequest::default()).await?;
    let listed = bob
        .list_admin_certificates(ListAdminCertificatesRequest {})
        .await?
        .into_inner()
        .certificates;
    let seen: Vec<(&str, &str, i64)> = listed
        .iter()
        .map(|c| (c.serial_number.as_str(), c.name.as_str(), c.revoked_at_ms))
        .collect();
    assert_eq!(
        seen,
        [
            (alice_serial.as_str(), "alice", 0),
            (bob_serial.as_str(), "bob", 0)
        ]
    );
    assert!(listed.iter().all(|c| c.not_after_ms > c.issued_at_ms));

    // Alice revokes bob's certificate (typed in upper case, as openssl
    // prints serial numbers).
    let revoked = alice
        .revoke_admin_certificate(RevokeAdminCertificateRequest {
            serial_number: bob_serial.to_uppercase(),
        })
        .await?
        .into_inner();
    assert!(!revoked.already_revoked);
    let record = revoked.certificate.unwrap_or_default();
    assert_eq!(record.serial_number, bob_serial);
    assert_eq!(record.name, "bob");
    let revoked_at_ms = record.revoked_at_ms;
    assert!(revoked_at_ms > 0);

    // Bob's next call, on the connection he already has, is refused.
    let refused = bob
        .list_instances(ListInstancesRequest::default())
        .await
        .expect_err("revoked certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("revoked") && refused.message().contains(&bob_serial),
        "{refused:?}"
    );
    // State-changing calls with it change nothing stored.
    let refused = bob
        .revoke_admin_certificate(RevokeAdminCertificateRequest {
            serial_number: alice_serial.clone(),
        })
        .await
        .expect_err("revoked certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = bob
        .create_admin_certificate(CreateAdminCertificateRequest {
            csr_pem: csr()?.1,
            name: "bob2".into(),
            lifetime_seconds: 3600,
        })
        .await
        .expect_err("revoked certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let host = enroll(&server).await?;
    let refused = bob
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.into(),
            instance_id: host.instance_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("revoked certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // A new connection with it is refused too.
    let mut bob_again = tls_admin(addr, &ca_pem, Some(bob_identity())).await?;
    let refused = bob_again
        .list_tasks(ListTasksRequest::default())
        .await
        .expect_err("revoked certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Alice still works, and sees that bob's attempts changed nothing.
    let tasks = alice
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "{tasks:?}");
    let listed = alice
        .list_admin_certificates(ListAdminCertificatesRequest {})
        .await?
        .into_inner()
        .certificates;
    let seen: Vec<(&str, i64)> = listed
        .iter()
        .map(|c| (c.name.as_str(), c.revoked_at_ms))
        .collect();
    assert_eq!(seen, [("alice", 0), ("bob", revoked_at_ms)]);

    // Twice: already revoked, the first revocation time stays.
    let again = alice
        .revoke_admin_certificate(RevokeAdminCertificateRequest {
            serial_number: bob_serial.clone(),
        })
        .await?
        .into_inner();
    assert!(again.already_revoked);
    assert_eq!(
        again.certificate.map(|c| c.revoked_at_ms),
        Some(revoked_at_ms)
    );
    // An unknown serial: NOT_FOUND naming it; not hex: INVALID_ARGUMENT.
    let unknown = alice
        .revoke_admin_certificate(RevokeAdminCertificateRequest {
            serial_number: "0123456789abcdef".into(),
        })
        .await
        .expect_err("unknown serial");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown.message().contains("0123456789abcdef"),
        "{unknown:?}"
    );
    let malformed = alice
        .revoke_admin_certificate(RevokeAdminCertificateRequest {
            serial_number: "not-hex".into(),
        })
        .await
        .expect_err("malformed serial");
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    assert!(malformed.message().contains("\"not-hex\""), "{malformed:?}");
    let count = alice
        .list_admin_certificates(ListAdminCertificatesRequest {})
        .await?
        .into_inner()
        .certificates
        .len();
    assert_eq!(count, 2);
    server.shutdown().await?;

    // The revocation is stored: after a restart on the same data dir bob
    // stays refused, and alice is accepted.
    let server = off_loopback_server(dir.path()).await?;
    let addr = server.admin_addr();
    let mut bob = tls_admin(addr, &ca_pem, Some(bob_identity())).await?;
    let refused = bob
        .list_instances(ListInstancesRequest::default())
        .await
        .expect_err("revoked certificate after a restart");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut alice = tls_admin(addr, &ca_pem, Some(offline_admin(dir.path(), "alice")?.0)).await?;
    alice
        .list_instances(ListInstancesRequest::default())
        .await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_refused_with_a_status() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let host = enroll(&server).await?;
    let mut admin = admin_client(server.admin_addr()).await?;

    // A task definition over the limit: INVALID_ARGUMENT naming the size.
    let padding = "x".repeat(berth_taskdef::MAX_DEFINITION_BYTES);
    let huge =
        TASK_DEFINITION.replace("\"family\": \"web\"", &format!("\"family\": \"{padding}\""));
    let refused = admin
        .run_task(RunTaskRequest {
            task_definition_json: huge.clone(),
            instance_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("oversized definition");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(&format!("{} bytes", huge.len())),
        "{}",
        refused.message()
    );

    // More containers than ECS allows: refused naming the limit.
    let containers: Vec<String> = (0..=berth_taskdef::MAX_CONTAINERS)
        .map(|i| format!(r#"{{"name": "c{i}", "image": "busybox", "memory": 8}}"#))
        .collect();
    let crowded = format!(
        r#"{{"family": "crowded", "containerDefinitions": [{}]}}"#,
        containers.join(",")
    );
    let refused = admin
        .run_task(RunTaskRequest {
            task_definition_json: crowded,
            instance_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("too many containers");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(&format!(
            "at most {} container definitions",
            berth_taskdef::MAX_CONTAINERS
        )),
        "{}",
        refused.message()
    );

    // 10 MiB and 64 MiB messages on Fleet.Connect: refused, never read.
    for mib in [10usize, 64] {
        let mtls = host.mtls(&server).await?;
        let (tx, rx) = mpsc::channel::<AgentMessage>(1);
        tx.send(agent(AgentMsg::Hello(Hello {
            instance_id: host.instance_id.clone(),
            hostname: "h".repeat(mib * 1024 * 1024),
            ..Hello::default()
        })))
        .await?;
        let outcome = async {
            let mut inbound = FleetClient::new(mtls)
                .max_encoding_message_size(usize::MAX)
                .connect(ReceiverStream::new(rx))
                .await?
                .into_inner();
            inbound.message().await
        };
        let err = tokio::time::timeout(DEADLINE, outcome)
            .await?
            .expect_err("an oversized message is refused");
        assert_eq!(err.code(), Code::OutOfRange, "{mib} MiB: {err:?}");
        assert!(
            err.message()
                .contains(&format!("the limit is: {} bytes", 4 * 1024 * 1024)),
            "{mib} MiB: {err:?}"
        );
        drop(tx);
    }

    // An oversized enrollment (no certificate needed to try): refused.
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let token = server.create_token(None).await?;
    let err = EnrollmentClient::new(plain.clone())
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &"A".repeat(1024 * 1024),
        ))
        .await
        .expect_err("oversized enrollment");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // A message that is not what the service expects (a Heartbeat where a
    // ServerMessage-bound AgentMessage should be; wire types differ).
    let mtls = host.mtls(&server).await?;
    let mut grpc = tonic::client::Grpc::new(mtls);
    grpc.ready().await?;
    let garbage = tokio_stream::iter(vec![berth_proto::v1::Heartbeat { sent_at_ms: 7 }]);
    let outcome = async {
        let mut inbound = grpc
            .streaming::<_, berth_proto::v1::Heartbeat, berth_proto::v1::ServerMessage, _>(
                tonic::Request::new(garbage),
                tonic::codegen::http::uri::PathAndQuery::from_static("/berth.v1.Fleet/Connect"),
                tonic_prost::ProstCodec::default(),
            )
            .await?
            .into_inner();
        inbound.message().await
    };
    let err = tokio::time::timeout(DEADLINE, outcome)
        .await?
        .expect_err("a malformed message is refused");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message()
            .starts_with("failed to decode Protobuf message"),
        "{err:?}"
    );

    // The server still serves: enrollment, sessions and the admin API.
    let again = enroll(&server).await?;
    let mtls = again.mtls(&server).await?;
    let (_tx, mut inbound) = connect(mtls, &again.instance_id, 0).await?;
    assert!(matches!(next(&mut inbound).await?, ServerMsg::Welcome(_)));
    assert_eq!(instance_count(&server).await?, 2);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cannot_report_events_for_another_instances_tasks() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut a = FakeAgent::start(&server, 1024, 1024).await?;
    let mut b = FakeAgent::start(&server, 1024, 1024).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let task_id = admin
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.replace("\"memory\": 512", "\"memory\": 64"),
            instance_id: b.instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0)
        .state
        .unwrap_or_default()
        .task_id;
    assert_eq!(next_assignment(&mut b.inbound).await?.tasks.len(), 1);

    // A claims B's task stopped: acknowledged (so A does not replay it),
    // and ignored.
    a.tx.send(event(1, &task_id, "STOPPED")).await?;
    assert_eq!(next_ack(&mut a.inbound).await?, 1);
    assert_eq!(last_status(&mut admin, &task_id).await?, "PENDING");
    let listed = admin
        .list_tasks(ListTasksRequest {
            instance_id: a.instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks;
    assert!(listed.is_empty(), "A gained no task: {listed:?}");

    // B's own report counts.
    b.tx.send(event(1, &task_id, "RUNNING")).await?;
    assert_eq!(next_ack(&mut b.inbound).await?, 1);
    assert_eq!(last_status(&mut admin, &task_id).await?, "RUNNING");
    server.shutdown().await?;
    Ok(())
}
