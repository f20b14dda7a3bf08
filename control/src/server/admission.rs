//! Admission of gRPC calls before their request body is read.
//!
//! tonic reads a unary request's whole body before it calls the handler, so
//! a peer that opens a call and never finishes its body holds the call
//! until the request timeout, with no check run on it. The services of the
//! fleet API are therefore wrapped so that what can be refused from the
//! headers and the connection alone is refused at once:
//! Each is a [`Policy`] of an [`Admit`] service:
//! - [`InFlightLimit`] (on `Enrollment`): at most [`ENROLL_IN_FLIGHT_PER_SOURCE`]
//!   calls in progress per source (an IPv4 address or an IPv6 /64) and
//!   [`ENROLL_IN_FLIGHT_TOTAL`] in all; one more is answered
//!   RESOURCE_EXHAUSTED without waiting for its body.
//! - [`RequireClientCert`] (on `Fleet`): a call without an agent's client
//!   certificate is refused before its body (the handlers check it again).

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::warn;

use super::listener::{Full, Slot, Slots, SourceKey, Throttle, remote_addr};

/// `Enrollment` calls in progress at once from one source.
pub const ENROLL_IN_FLIGHT_PER_SOURCE: usize = 8;
/// `Enrollment` calls in progress at once from all sources.
pub const ENROLL_IN_FLIGHT_TOTAL: usize = 1024;

/// What decides, from a request's headers and connection alone, whether
/// its call may go on; the permit is held until the call is answered.
pub trait Policy: Clone + Send + 'static {
    type Permit: Send + 'static;

    fn admit(&self, extensions: &http::Extensions) -> Result<Self::Permit, tonic::Status>;
}

/// A service behind a [`Policy`]: a refused call is answered with the
/// policy's status at once, before its body is read.
#[derive(Clone)]
pub struct Admit<S, P> {
    inner: S,
    policy: P,
}

impl<S, P> Admit<S, P> {
    pub fn new(inner: S, policy: P) -> Self {
        Admit { inner, policy }
    }
}

impl<S, P, ReqBody, ResBody> Service<http::Request<ReqBody>> for Admit<S, P>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    P: Policy,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.policy.admit(request.extensions()) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
        }
    }
}

impl<S: NamedService, P> NamedService for Admit<S, P> {
    const NAME: &'static str = S::NAME;
}

/// Caps the calls in progress per source and in all; a call over a cap is
/// refused RESOURCE_EXHAUSTED.
#[derive(Clone)]
pub struct InFlightLimit {
    what: &'static str,
    slots: Arc<Slots>,
    refusals: Arc<Throttle>,
}

impl InFlightLimit {
    /// `what` names the calls in messages ("enrollments").
    pub fn new(what: &'static str, per_source: usize, total: usize) -> Self {
        InFlightLimit {
            what,
            slots: Slots::new(per_source, total),
            refusals: Arc::new(Throttle::default()),
        }
    }
}

impl Policy for InFlightLimit {
    type Permit = Slot;

    fn admit(&self, extensions: &http::Extensions) -> Result<Slot, tonic::Status> {
        let peer = remote_addr(extensions);
        // Without a peer address (never over TCP) all such callers share one
        // source.
        let key = SourceKey::of(peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.ip()));
        self.slots.try_acquire(key).map_err(|full| {
            let message = match full {
                Full::PerSource { key, max } => format!(
                    "too many {} in progress from {key} (at most {max} at once); finish or cancel them, then try again",
                    self.what
                ),
                Full::Total { max } => format!(
                    "too many {} in progress on this control plane (at most {max} at once); try again in a few seconds",
                    self.what
                ),
            };
            if let Some(unsaid) = self.refusals.tick() {
                warn!(peer = ?peer, refused_before_unlogged = unsaid, "call refused: {message}");
            }
            tonic::Status::resource_exhausted(message)
        })
    }
}

/// Refuses a call that does not carry an agent's client certificate, with
/// the status the handler would give.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequireClientCert;

impl Policy for RequireClientCert {
    type Permit = ();

    fn admit(&self, extensions: &http::Extensions) -> Result<(), tonic::Status> {
        let certs = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        super::fleet::instance_id_from_certs(certs.as_deref().map(Vec::as_slice)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;

    /// A service that answers only when `release` says so.
    #[derive(Clone)]
    struct Held {
        release: tokio::sync::watch::Receiver<bool>,
    }

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut release = self.release.clone();
            Box::pin(async move {
                let _ = release.wait_for(|r| *r).await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn from(peer: &str) -> http::Request<()> {
        let mut request = http::Request::new(());
        let remote: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(remote),
        });
        request
    }

    fn grpc_status(r: &http::Response<tonic::body::Body>) -> Option<tonic::Code> {
        tonic::Status::from_header_map(r.headers()).map(|s| s.code())
    }

    #[tokio::test]
    async fn calls_in_progress_are_capped_per_source_and_refused_at_once() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let limit = InFlightLimit::new("enrollments", 2, 4);
        let mut svc = Admit::new(Held { release: rx }, limit.clone());
        let mut held: Vec<_> = ["192.0.2.1:1", "192.0.2.1:2", "[2001:db8::1]:1"]
            .into_iter()
            .map(|p| tokio::spawn(svc.call(from(p))))
            .collect();
        // Same source (an IPv4 address): refused without waiting.
        let refused = svc.call(from("192.0.2.1:3")).await.expect("response");
        assert_eq!(grpc_status(&refused), Some(tonic::Code::ResourceExhausted));
        let message = tonic::Status::from_header_map(refused.headers())
            .map(|s| s.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("from 192.0.2.1") && message.contains("at most 2"),
            "{message}"
        );
        // The total is reached too: one more place, then none.
        held.push(tokio::spawn(svc.call(from("[2001:db8::2]:1"))));
        let refused = svc.call(from("198.51.100.7:1")).await.expect("response");
        assert_eq!(grpc_status(&refused), Some(tonic::Code::ResourceExhausted));
        let message = tonic::Status::from_header_map(refused.headers())
            .map(|s| s.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("on this control plane (at most 4"),
            "{message}"
        );
        tx.send(true).expect("release");
        for h in held {
            let r = h.await.expect("join").expect("response");
            assert_eq!(grpc_status(&r), None, "served");
        }
        // The places are back, and nothing is kept per source.
        assert_eq!(limit.slots.held(), 0);
        assert_eq!(limit.slots.sources(), 0);
        let r = svc.call(from("192.0.2.1:4")).await.expect("response");
        assert_eq!(grpc_status(&r), None);
    }

    #[tokio::test]
    async fn a_call_without_a_client_certificate_is_refused_before_its_body() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        // `Held` never answers: only the gate can.
        let mut svc = Admit::new(Held { release: rx }, RequireClientCert);
        let r = svc.call(from("192.0.2.1:1")).await.expect("response");
        assert_eq!(grpc_status(&r), Some(tonic::Code::Unauthenticated));
    }
}
