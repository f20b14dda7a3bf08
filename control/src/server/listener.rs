//! Incoming connections: the layer every gRPC listener of the control plane
//! (the fleet API, the admin API, and any later one) accepts through.
//!
//! # Background
//! Before this layer a peer without any credential could hold as many TCP
//! connections as it liked, each idle forever after its TLS handshake, and
//! once the process ran out of file descriptors the accept loop spun at a
//! full core while the admin API stopped answering.
//!
//! # Design
//! - [`incoming`] owns the accept loop. An accepted connection takes a
//!   [`Slot`] from the listener's [`Slots`]: at most
//!   [`ConnectionLimits::max_per_address`] per source (an IPv4 address, or
//!   the /64 of an IPv6 address, see [`SourceKey`]) and
//!   [`ConnectionLimits::max_connections`] in all. A connection over either
//!   cap is closed at once, before any TLS, and a warning naming the peer and
//!   the limit goes to the log, at most one every [`WARN_EVERY`] per listener
//!   (with the number left unsaid). Accept errors never end or spin the
//!   loop: a connection-level error is skipped, anything else (EMFILE,
//!   ENFILE, ENOBUFS, ENOMEM) waits [`ACCEPT_BACKOFF`] before the next
//!   accept.
//! - Each admitted connection is a [`Conn`]. It closes itself (its next read
//!   fails with `TimedOut`) once it has had no gRPC call in progress for
//!   [`ConnectionLimits::idle_timeout`], counted from accept: a TLS
//!   handshake, an HTTP/2 preface or keepalive pings alone keep nothing
//!   open. [`TrackStreams`], a tower layer on the router, counts the calls
//!   in progress of each connection; a call lasts until its response body
//!   is done, so an agent's session keeps its connection.
//! - Nothing outlives a connection: the slot, the per-source count and the
//!   live-connection entry go when the connection is dropped.
//! - [`open_file_budget`] fits the caps into the process's open-file limit
//!   (raised to its hard limit first), keeping [`RESERVED_FDS`] for the
//!   store, the logs and the metrics endpoint, so a full fleet listener
//!   cannot take the descriptors the admin API needs.
//!
//! # Limitations
//! A refusal is a closed TCP connection: the peer learns nothing more (the
//! server's log says why). Caps per source do not stop a flood from many
//! addresses (a botnet, or an IPv6 attacker with many /64s): the total cap
//! then bounds memory and descriptors, but legitimate peers are refused
//! while it is full. An idle close is abrupt (no HTTP/2 GOAWAY); a client
//! that starts a call at that very moment sees the connection reset and
//! retries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::codegen::{Bytes, Service};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, warn};

/// Default cap on the fleet API's connections, from all sources.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on the fleet API's connections from one source.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Default time a connection may stay open without a call in progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest and longest idle timeout.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How long the accept loop waits after an error that is not about one
/// connection (out of descriptors, out of memory).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one refusal warning per listener in this time.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Descriptors kept out of every listener's budget: the store, the log, the
/// metrics endpoint, the blocking pool's files.
pub const RESERVED_FDS: u64 = 64;

/// How many connections a listener holds, and how long an idle one lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, from all sources.
    pub max_connections: usize,
    /// Connections open at once from one source (see [`SourceKey`]).
    pub max_per_address: usize,
    /// A connection without any call in progress for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// Checks the ranges; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max connections must be at least 1".into());
        }
        if self.max_per_address == 0 {
            return Err("max connections per address must be at least 1".into());
        }
        if !(MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&self.idle_timeout) {
            return Err(format!(
                "idle timeout {} is out of range (1s to 24h)",
                humantime::format_duration(self.idle_timeout)
            ));
        }
        Ok(())
    }
}

/// What connections and calls are counted under: an IPv4 address (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), or the /64 network
/// of an IPv6 address, since one host is usually given a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6Net(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4),
                None => SourceKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKey::V4(v4) => write!(f, "{v4}"),
            SourceKey::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its state whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counted places, per source and in all; a [`Slot`] gives its place back
/// when dropped, and a source without places held takes no memory.
#[derive(Debug)]
pub struct Slots {
    per_key: usize,
    total: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    by_key: HashMap<SourceKey, usize>,
    held: usize,
}

/// Which cap refused a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The source holds `max` places already.
    PerSource { key: SourceKey, max: usize },
    /// All `max` places are held.
    Total { max: usize },
}

impl Slots {
    pub fn new(per_key: usize, total: usize) -> Arc<Slots> {
        Arc::new(Slots {
            per_key,
            total,
            state: Mutex::new(SlotState::default()),
        })
    }

    /// Takes a place for `key`, or says which cap is reached.
    pub fn try_acquire(self: &Arc<Self>, key: SourceKey) -> Result<Slot, Full> {
        let mut state = lock(&self.state);
        if state.held >= self.total {
            return Err(Full::Total { max: self.total });
        }
        let of_key = state.by_key.get(&key).copied().unwrap_or(0);
        if of_key >= self.per_key {
            return Err(Full::PerSource {
                key,
                max: self.per_key,
            });
        }
        state.by_key.insert(key, of_key + 1);
        state.held += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Places held, in all.
    pub fn held(&self) -> usize {
        lock(&self.state).held
    }

    /// Sources with at least one place held.
    pub fn sources(&self) -> usize {
        lock(&self.state).by_key.len()
    }
}

/// One place in [`Slots`], given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: SourceKey,
}

impl Slot {
    pub fn key(&self) -> SourceKey {
        self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = lock(&self.slots.state);
        state.held = state.held.saturating_sub(1);
        if let Some(n) = state.by_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.by_key.remove(&self.key);
                // As for the live connections: no table at a flood's size.
                let len = state.by_key.len();
                if state.by_key.capacity() > 64 && len < state.by_key.capacity() / 4 {
                    state.by_key.shrink_to(len * 2);
                }
            }
        }
    }
}

/// A warning that goes to the log at most once per [`WARN_EVERY`].
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// `Some(n)`: log now; `n` earlier occurrences were not logged.
    pub fn tick(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let (last, unsaid) = &mut *state;
        match last {
            Some(at) if now.duration_since(*at) < WARN_EVERY => {
                *unsaid += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(unsaid))
            }
        }
    }
}

/// Calls in progress on one connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    state: Mutex<(usize, Instant)>,
    /// The connection's reader, woken when its last call ends.
    reader: AtomicWaker,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new((0, Instant::now())),
            reader: AtomicWaker::new(),
        }
    }

    /// When the connection times out, unless a call is in progress.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let (open, since) = *lock(&self.state);
        (open == 0).then(|| since + timeout)
    }

    fn call_started(&self) {
        lock(&self.state).0 += 1;
    }

    fn call_ended(&self) {
        let mut state = lock(&self.state);
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 {
            state.1 = Instant::now();
            drop(state);
            self.reader.wake();
        }
    }
}

/// The admitted connections of one listener.
#[derive(Debug)]
pub struct Connections {
    /// "fleet API", "admin API": for the log.
    api: &'static str,
    /// How an operator raises the caps, for the log.
    hint: &'static str,
    limits: ConnectionLimits,
    slots: Arc<Slots>,
    live: Mutex<HashMap<SocketAddr, Arc<Activity>>>,
    refusals: Throttle,
    accept_errors: Throttle,
}

impl Connections {
    pub fn new(api: &'static str, limits: ConnectionLimits, hint: &'static str) -> Arc<Self> {
        Arc::new(Connections {
            api,
            hint,
            limits,
            slots: Slots::new(limits.max_per_address, limits.max_connections),
            live: Mutex::new(HashMap::new()),
            refusals: Throttle::default(),
            accept_errors: Throttle::default(),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.slots.held()
    }

    /// Entries kept in memory: sources counted and connections tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.slots.sources(), lock(&self.live).len())
    }

    /// Admits `stream` from `peer`, or closes it (dropping it) and says why.
    pub fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> Option<Conn> {
        let slot = match self.slots.try_acquire(SourceKey::of(peer.ip())) {
            Ok(slot) => slot,
            Err(full) => {
                drop(stream);
                self.refused(peer, full);
                return None;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(api = self.api, %peer, error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        lock(&self.live).insert(peer, Arc::clone(&activity));
        Some(Conn {
            io: stream,
            idle: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
            entry: Entry {
                conns: Arc::clone(self),
                peer,
                activity,
                _slot: slot,
            },
        })
    }

    fn refused(&self, peer: SocketAddr, full: Full) {
        let Some(unsaid) = self.refusals.tick() else {
            return;
        };
        match full {
            Full::PerSource { key, max } => warn!(
                api = self.api,
                %peer,
                source = %key,
                limit = max,
                refused_before_unlogged = unsaid,
                "connection refused: this source already holds as many connections as one source may ({}); {}",
                max,
                self.hint
            ),
            Full::Total { max } => warn!(
                api = self.api,
                %peer,
                limit = max,
                refused_before_unlogged = unsaid,
                "connection refused: the listener holds as many connections as it may ({}); {}",
                max,
                self.hint
            ),
        }
    }

    /// After a failed accept: skip a connection-level error, back off on
    /// anything else.
    async fn accept_failed(&self, e: &io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
        ) {
            debug!(api = self.api, error = %e, "accept: connection gone before it was accepted");
            return;
        }
        if let Some(unsaid) = self.accept_errors.tick() {
            let out_of_fds = matches!(
                e.raw_os_error(),
                Some(code) if code == nix::errno::Errno::EMFILE as i32 || code == nix::errno::Errno::ENFILE as i32
            );
            let advice = if out_of_fds {
                "the process is out of file descriptors: raise its open-file limit (LimitNOFILE=, ulimit -n) or lower --max-connections"
            } else {
                "retrying"
            };
            warn!(
                api = self.api,
                error = %e,
                errors_before_unlogged = unsaid,
                backoff = ?ACCEPT_BACKOFF,
                "cannot accept connections: {advice}"
            );
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }

    /// Counts a call on the connection from `peer`, until the guard drops.
    fn call_started(&self, peer: SocketAddr) -> Option<CallGuard> {
        let activity = lock(&self.live).get(&peer).cloned()?;
        activity.call_started();
        Some(CallGuard { activity })
    }
}

/// The accepted connections of `listener`, admitted by `conns`. Never ends
/// and never yields an error (tonic's own loop would retry it at once).
pub fn incoming(
    listener: TcpListener,
    conns: Arc<Connections>,
) -> impl Stream<Item = Result<Conn, Infallible>> + Send + 'static {
    let listener = Arc::new(listener);
    incoming_from(
        move || {
            let listener = Arc::clone(&listener);
            async move { listener.accept().await }
        },
        conns,
    )
}

/// [`incoming`] over any accept function (tests give it failing ones).
fn incoming_from<A, F>(
    accept: A,
    conns: Arc<Connections>,
) -> impl Stream<Item = Result<Conn, Infallible>> + Send + 'static
where
    A: FnMut() -> F + Send + 'static,
    F: Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send,
{
    futures_util::stream::unfold((accept, conns), |(mut accept, conns)| async move {
        loop {
            match accept().await {
                Ok((stream, peer)) => {
                    if let Some(conn) = conns.admit(stream, peer) {
                        return Some((Ok(conn), (accept, conns)));
                    }
                }
                Err(e) => conns.accept_failed(&e).await,
            }
        }
    })
}

/// What an admitted connection holds; dropped with it.
#[derive(Debug)]
struct Entry {
    conns: Arc<Connections>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut live = lock(&self.conns.live);
        if live
            .get(&self.peer)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            live.remove(&self.peer);
        }
        // A map does not shrink by itself: after a flood its table would
        // stay at the flood's size.
        let len = live.len();
        if live.capacity() > 64 && len < live.capacity() / 4 {
            live.shrink_to(len * 2);
        }
    }
}

/// An admitted TCP connection that closes itself when idle.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    idle: Pin<Box<Sleep>>,
    entry: Entry,
}

impl Conn {
    /// `Some(Err)` once the idle deadline has passed without a call.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let activity = &self.entry.activity;
        activity.reader.register(cx.waker());
        let deadline = activity.idle_deadline(self.entry.conns.limits.idle_timeout)?;
        if self.idle.deadline() != deadline {
            self.idle.as_mut().reset(deadline);
        }
        if self.idle.as_mut().poll(cx).is_pending() {
            return None;
        }
        debug!(api = self.entry.conns.api, peer = %self.entry.peer, "idle connection closed");
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no call for {} on this connection",
                humantime::format_duration(self.entry.conns.limits.idle_timeout)
            ),
        ))
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        // The peer as accepted: the key [`TrackStreams`] finds this
        // connection by, even if the socket can no longer say it.
        TcpConnectInfo {
            local_addr: self.io.local_addr().ok(),
            remote_addr: Some(self.entry.peer),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_idle(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One call in progress on a connection.
#[derive(Debug)]
struct CallGuard {
    activity: Arc<Activity>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.activity.call_ended();
    }
}

/// The peer of a request, from what tonic's transport put in it.
pub fn remote_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
}

/// Tower layer for a router served from [`incoming`]: counts each call on
/// its connection from the request until the end of the response body.
#[derive(Debug, Clone)]
pub struct TrackStreams {
    conns: Arc<Connections>,
}

impl TrackStreams {
    pub fn new(conns: Arc<Connections>) -> Self {
        TrackStreams { conns }
    }
}

impl<S> tower::Layer<S> for TrackStreams {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            conns: Arc::clone(&self.conns),
        }
    }
}

/// See [`TrackStreams`].
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    conns: Arc<Connections>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Tracked<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = remote_addr(request.extensions()).and_then(|peer| self.conns.call_started(peer));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body: Box::pin(body),
                _call: call,
            }))
        })
    }
}

/// A response body that keeps its call counted until it is dropped.
pub struct TrackedBody<B> {
    body: Pin<Box<B>>,
    _call: Option<CallGuard>,
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        self.get_mut().body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The budget of listeners under the process's open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The open-file (soft) limit in force; `None`: unknown.
    pub open_file_limit: Option<u64>,
    /// Connections the fleet and the admin API may hold.
    pub fleet: usize,
    pub admin: usize,
}

/// Raises the soft open-file limit to the hard one and returns the limit in
/// force (`None` if it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => debug!(soft, hard, error = %e, "cannot raise the open-file limit"),
        }
    }
    Some(soft)
}

/// Fits the fleet and admin caps under `open_file_limit`, less
/// [`RESERVED_FDS`]: the admin API keeps its cap (at most a quarter of what
/// is left), the fleet API gets the rest. `Err` when too few descriptors are
/// left for both.
pub fn open_file_budget(
    open_file_limit: Option<u64>,
    fleet: usize,
    admin: usize,
) -> Result<Budget, String> {
    let Some(limit) = open_file_limit else {
        return Ok(Budget {
            open_file_limit,
            fleet,
            admin,
        });
    };
    let left = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let admin = admin.min(left / 4);
    let fleet = fleet.min(left.saturating_sub(admin));
    if admin == 0 || fleet == 0 {
        return Err(format!(
            "the open-file limit ({limit}) is too low: berth server keeps {RESERVED_FDS} descriptors for itself and needs at least {} for its listeners; raise it (LimitNOFILE= in the unit, ulimit -n)",
            RESERVED_FDS + 8
        ));
    }
    Ok(Budget {
        open_file_limit,
        fleet,
        admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

    fn v6(s: &str) -> IpAddr {
        s.parse().expect("IPv6 address")
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(SourceKey::of(V4).to_string(), "203.0.113.9");
        let a = SourceKey::of(v6("2001:db8:1:2::1"));
        let b = SourceKey::of(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = SourceKey::of(v6("2001:db8:1:3::1"));
        assert_eq!(a, b, "one /64 is one source");
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(SourceKey::of(v6("::ffff:203.0.113.9")), SourceKey::of(V4));
    }

    #[test]
    fn slots_cap_each_source_and_the_total_and_forget_released_sources() {
        let slots = Slots::new(2, 3);
        let a = SourceKey::of(V4);
        let b = SourceKey::of(v6("2001:db8::1"));
        let a1 = slots.try_acquire(a).expect("first of a");
        let a2 = slots.try_acquire(a).expect("second of a");
        assert_eq!(
            slots.try_acquire(a).expect_err("third of a"),
            Full::PerSource { key: a, max: 2 }
        );
        // Another address of the same /64 is the same source.
        let b1 = slots
            .try_acquire(SourceKey::of(v6("2001:db8::ffff")))
            .expect("first of b");
        assert_eq!(b1.key(), b);
        assert_eq!(
            slots.try_acquire(b).expect_err("over the total"),
            Full::Total { max: 3 }
        );
        drop(a1);
        let b2 = slots.try_acquire(b).expect("a place freed by a");
        assert_eq!((slots.held(), slots.sources()), (3, 2));
        drop((a2, b1, b2));
        assert_eq!((slots.held(), slots.sources()), (0, 0), "nothing kept");
    }

    #[test]
    fn budget_fits_the_open_file_limit() {
        let b = open_file_budget(Some(256), 10_000, 64).expect("budget");
        assert_eq!((b.fleet, b.admin), (144, 48));
        let b = open_file_budget(Some(1 << 20), 10_000, 64).expect("budget");
        assert_eq!((b.fleet, b.admin), (10_000, 64));
        let b = open_file_budget(None, 7, 3).expect("budget");
        assert_eq!((b.fleet, b.admin), (7, 3));
        let e = open_file_budget(Some(64), 10, 10).expect_err("too low");
        assert!(
            e.contains("open-file limit (64)") && e.contains("LimitNOFILE"),
            "{e}"
        );
    }

    #[test]
    fn limits_are_validated() {
        assert!(ConnectionLimits::default().validate().is_ok());
        let bad = ConnectionLimits {
            max_per_address: 0,
            ..ConnectionLimits::default()
        };
        assert!(bad.validate().expect_err("0").contains("per address"));
        let bad = ConnectionLimits {
            idle_timeout: Duration::from_millis(10),
            ..ConnectionLimits::default()
        };
        assert!(bad.validate().expect_err("10ms").contains("idle timeout"));
    }

    fn limits(per_address: usize, total: usize, idle: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_per_address: per_address,
            idle_timeout: idle,
        }
    }

    /// Serves `incoming` on loopback: every admitted connection echoes
    /// until it fails.
    async fn echo_server(conns: Arc<Connections>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut incoming = std::pin::pin!(incoming(listener, conns));
            while let Some(Ok(mut conn)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Reads until EOF or an error: the server closed the connection.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf).await, Ok(0) | Err(_))
    }

    async fn echoes(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4];
        stream.write_all(b"ping").await.is_ok()
            && stream.read_exact(&mut buf).await.is_ok()
            && &buf == b"ping"
    }

    async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .expect("bind the source address");
        socket.connect(to).await.expect("connect")
    }

    #[tokio::test]
    async fn caps_per_source_and_in_total_close_the_connection_at_once() {
        let conns = Connections::new("test API", limits(2, 3, Duration::from_secs(3600)), "hint");
        let (addr, server) = echo_server(Arc::clone(&conns)).await;
        let one = Ipv4Addr::new(127, 0, 0, 1);
        let two = Ipv4Addr::new(127, 0, 0, 2);
        let mut a1 = connect_from(one, addr).await;
        let mut a2 = connect_from(one, addr).await;
        assert!(echoes(&mut a1).await && echoes(&mut a2).await);
        let mut a3 = connect_from(one, addr).await;
        assert!(
            closed(&mut a3).await,
            "a third connection from one source is closed"
        );
        let mut b1 = connect_from(two, addr).await;
        assert!(echoes(&mut b1).await, "another source still gets in");
        let mut b2 = connect_from(two, addr).await;
        assert!(closed(&mut b2).await, "over the total: closed");
        // The admitted ones were never disturbed.
        assert!(echoes(&mut a1).await && echoes(&mut a2).await && echoes(&mut b1).await);
        assert_eq!(conns.open(), 3);
        drop((a1, a2, a3, b1, b2));
        wait_until(|| conns.tracked() == (0, 0)).await;
        assert_eq!(conns.open(), 0);
        server.abort();
    }

    /// Polls `done` every few milliseconds until it holds (tests only; each
    /// test bounds its own run with tokio's test timeout of the harness).
    pub(crate) async fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "condition not reached in 30s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_without_a_call_is_closed_after_the_idle_timeout() {
        let conns = Connections::new("test API", limits(8, 8, Duration::from_secs(1)), "hint");
        let (addr, server) = echo_server(Arc::clone(&conns)).await;
        let one = Ipv4Addr::new(127, 0, 0, 1);
        // `busy` is accepted first, so its idle deadline comes first.
        let mut busy = connect_from(one, addr).await;
        wait_until(|| conns.tracked().1 == 1).await;
        let mut idle = connect_from(one, addr).await;
        // A call in progress on `busy` keeps it open past the timeout.
        let call = conns
            .call_started(busy.local_addr().expect("local addr"))
            .expect("busy is tracked");
        // Traffic alone (not a call) does not keep a connection open.
        assert!(echoes(&mut idle).await);
        assert!(closed(&mut idle).await, "the idle connection is closed");
        // `busy`'s deadline has passed too, but its call keeps it open.
        assert!(
            echoes(&mut busy).await,
            "a connection with a call stays open"
        );
        drop(call);
        assert!(
            closed(&mut busy).await,
            "closed once its last call ended and the timeout passed"
        );
        wait_until(|| conns.tracked() == (0, 0)).await;
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let conns = Connections::new("test API", limits(8, 8, Duration::from_secs(60)), "hint");
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let stream = incoming_from(
            move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async {
                    Err(io::Error::from_raw_os_error(
                        nix::errno::Errno::EMFILE as i32,
                    ))
                }
            },
            conns,
        );
        let pump = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let _ = stream.next().await;
        });
        // One virtual second: with the back-off that is about 11 accepts;
        // a spinning loop would make millions (time does not pass by itself
        // while paused, so this counts attempts, it measures no speed).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = calls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=12).contains(&n),
            "{n} accept calls in one second of EMFILE"
        );
        pump.abort();
    }
}
