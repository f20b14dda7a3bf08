//! A TCP proxy between an agent and the control plane that can blackhole
//! the link: stop forwarding without closing anything.
//!
//! # Design
//! One thread accepts on a loopback port chosen by the kernel; each accepted
//! connection gets one thread per direction that reads from one socket and
//! writes to the other. A shared switch says whether bytes flow:
//! - **forwarding**: bytes are copied as they come; an end of stream is
//!   passed on as a half-close (`shutdown(Write)`), so TLS close-notify and
//!   FIN reach the other side;
//! - **blackholed**: a copying thread that has read something waits before
//!   writing it, and new connections are accepted but not connected
//!   upstream. Nothing is closed and nothing is refused: to both ends the
//!   link looks like a network path that silently drops everything. What
//!   was held is delivered, in order, once the link heals (as TCP would
//!   retransmit it).
//!
//! # Limitations
//! The proxy's own kernel still acknowledges what the peers send while
//! blackholed (up to the socket buffers), so a peer sees its writes succeed;
//! it notices the dead link only by the absence of answers — which is what
//! HTTP/2 keepalive and the control plane's heartbeat grace detect.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy to `upstream`. Dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    /// `true` while bytes flow; guarded for the condition variable.
    forwarding: Mutex<bool>,
    changed: Condvar,
    closed: AtomicBool,
    /// Every socket the proxy holds, to shut them down on drop.
    sockets: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
}

impl Shared {
    fn lock_forwarding(&self) -> MutexGuard<'_, bool> {
        // A panicking copy thread cannot leave the flag half-written.
        self.forwarding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Blocks while the link is blackholed; `false` once the proxy closes.
    fn wait_forwarding(&self) -> bool {
        let mut forwarding = self.lock_forwarding();
        while !*forwarding && !self.closed.load(Ordering::SeqCst) {
            forwarding = self
                .changed
                .wait(forwarding)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !self.closed.load(Ordering::SeqCst)
    }

    fn set_forwarding(&self, on: bool) {
        *self.lock_forwarding() = on;
        self.changed.notify_all();
    }

    fn keep(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(clone);
        }
    }
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("proxy: cannot listen on 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy: no local address: {e}"));
        let shared = Arc::new(Shared {
            forwarding: Mutex::new(true),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            let upstream = upstream.to_string();
            std::thread::Builder::new()
                .name(format!("proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &upstream, &shared))
                .unwrap_or_else(|e| panic!("proxy: cannot spawn the accept thread: {e}"))
        };
        Proxy {
            addr,
            upstream: upstream.to_string(),
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: what an agent uses as its server.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops forwarding; every connection stays open.
    pub fn blackhole(&self) {
        self.shared.set_forwarding(false);
    }

    /// Forwards again, delivering what was held.
    pub fn heal(&self) {
        self.shared.set_forwarding(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.set_forwarding(false);
        for s in self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept call; the loop sees `closed` and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: &str, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.keep(&client);
        let shared = Arc::clone(shared);
        let upstream = upstream.to_string();
        let spawned = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || connection(client, &upstream, &shared));
        if let Err(e) = spawned {
            eprintln!("proxy: cannot spawn a connection thread: {e}");
        }
    }
}

/// One accepted connection: connect upstream (once the link forwards), then
/// copy both ways.
fn connection(client: TcpStream, upstream: &str, shared: &Arc<Shared>) {
    if !shared.wait_forwarding() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let server = match upstream
        .parse::<SocketAddr>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        .and_then(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
    {
        Ok(s) => s,
        Err(_) => {
            // Upstream down: the client sees its connection reset, as it
            // would connecting directly.
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    shared.keep(&server);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        return;
    };
    let up = {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(client, server, &shared))
    };
    pump(server2, client2, shared);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

/// Copies `from` → `to` while the switch allows; ends on EOF or error.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(_) => {
                if shared.wait_forwarding() {
                    let _ = to.shutdown(Shutdown::Both);
                }
                return;
            }
        };
        // Held while blackholed: nothing, not even an end of stream, passes.
        if !shared.wait_forwarding() {
            return;
        }
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, t)
    }

    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("read");
        got
    }

    #[test]
    fn forwards_holds_while_blackholed_and_delivers_on_heal() {
        let (addr, echo) = echo_server();
        let proxy = Proxy::start(&addr.to_string());
        let mut s = TcpStream::connect(proxy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert_eq!(round_trip(&mut s, b"one"), b"one");

        proxy.blackhole();
        s.write_all(b"two")
            .expect("a blackholed link still takes writes");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).expect_err("nothing may come back");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );

        proxy.heal();
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = [0u8; 3];
        s.read_exact(&mut got).expect("held bytes arrive on heal");
        assert_eq!(&got, b"two");
        assert_eq!(proxy.connections(), 1);
        drop(s);
        drop(proxy);
        echo.join().expect("echo server");
    }
}
