//! systemd service notifications (`sd_notify`): `READY=1`, `STATUS=…`,
//! `WATCHDOG=1`, `STOPPING=1`.
//!
//! # Background
//! `systemd/berth-agent.service` is `Type=notify` with `WatchdogSec=`:
//! systemd considers the agent started only once it sends `READY=1` (state
//! loaded, local API serving), and restarts it when `WATCHDOG=1` stops
//! arriving. `STATUS=` lines show up in `systemctl status berth-agent`.
//!
//! # Design
//! The protocol is one datagram per message on the `AF_UNIX` socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`); a plain
//! [`std::os::unix::net::UnixDatagram`] does it, no crate or `unsafe` needed.
//! The free functions use one process-wide [`Notifier`] read from the
//! environment on first use; every one of them is a no-op when
//! `$NOTIFY_SOCKET` is unset (a terminal, `berth dev`, the tests, a container
//! without systemd). Sending never fails the caller: an error is logged once
//! at `warn` and the agent carries on — a missed notification must not take
//! down the workloads' supervisor.
//!
//! # Limitations
//! - `vsock:` addresses (used by VMs) are not supported; they count as unset.
//! - `$NOTIFY_SOCKET` is not removed from the environment (that needs
//!   `unsafe` in edition 2024); the agent starts no child processes, so
//!   nothing inherits it.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where notifications go: the socket named by `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
    socket: UnixDatagram,
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; `None` when it is unset, empty or
    /// not an `AF_UNIX` address.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::new(&value) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, notify_socket = ?value, "cannot use NOTIFY_SOCKET; systemd notifications are off");
                None
            }
        }
    }

    /// A notifier for the socket address `value` as `$NOTIFY_SOCKET` spells
    /// it: an absolute path, or `@name` for an abstract socket. `Ok(None)`
    /// for an empty value or a `vsock:` address.
    pub fn new(value: &OsStr) -> io::Result<Option<Notifier>> {
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            None => return Ok(None),
            Some(b'@') => abstract_addr(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(Path::new(value))?,
            Some(_) if bytes.starts_with(b"vsock:") => return Ok(None),
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected an absolute path or @abstract-name",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Some(Notifier {
            addr,
            socket,
            warned: AtomicBool::new(false),
        }))
    }

    /// Sends one message (`KEY=value` lines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let n = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if n != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to the notify socket: {n} of {} bytes",
                    message.len()
                ),
            ));
        }
        Ok(())
    }

    /// [`Notifier::send`], logging the first failure instead of returning it.
    fn send_logged(&self, message: &str) {
        if let Err(e) = self.send(message) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify systemd (further failures are logged at debug)");
            } else {
                tracing::debug!(error = %e, "cannot notify systemd");
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

fn global() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

/// The agent is up: state loaded, local API serving. Send once.
pub fn ready() {
    if let Some(n) = global() {
        n.send_logged("READY=1");
    }
}

/// A one-line status for `systemctl status` ("connected, 3 tasks running").
/// Line breaks are replaced by spaces: a status must not smuggle in other
/// assignments such as `READY=1`.
pub fn status(text: &str) {
    if let Some(n) = global() {
        n.send_logged(&status_message(text));
    }
}

/// The agent is shutting down (SIGTERM received); containers keep running.
pub fn stopping() {
    if let Some(n) = global() {
        n.send_logged("STOPPING=1");
    }
}

/// Keep-alive for `WatchdogSec=`: call every [`watchdog_interval`] from the
/// loop whose liveness it vouches for.
pub fn watchdog() {
    if let Some(n) = global() {
        n.send_logged("WATCHDOG=1");
    }
}

/// How often [`until_signal`] refreshes `STATUS=` when the watchdog is off.
const STATUS_EVERY: Duration = Duration::from_secs(15);

/// Waits for SIGTERM or SIGINT. Meanwhile, every [`watchdog_interval`] (15 s
/// when the watchdog is off), asks `status_line` for the `STATUS=` line and
/// feeds the watchdog with it — but only when it answers (`Some`): an agent
/// whose manager hangs stops feeding, and systemd restarts it.
pub async fn until_signal<F, Fut>(status_line: F) -> io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let every = watchdog_interval().unwrap_or(STATUS_EVERY);
    keep_alive(stop, every, status_line, |line| {
        watchdog();
        status(&line);
    })
    .await;
    Ok(())
}

/// The loop of [`until_signal`]: until `stop` completes, every `every`, the
/// line `status_line` answers is given to `feed`; no answer, no feed.
async fn keep_alive<F, Fut>(
    stop: impl std::future::Future<Output = ()>,
    every: Duration,
    mut status_line: F,
    mut feed: impl FnMut(String),
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let mut tick = tokio::time::interval(every);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                if let Some(line) = status_line().await {
                    feed(line);
                }
            }
        }
    }
}

/// How often to call [`watchdog`]: half of the service's `WatchdogSec=` (as
/// systemd recommends), or `None` when the watchdog is off — no
/// `$WATCHDOG_USEC`, or a `$WATCHDOG_PID` that is not this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from the values of `$WATCHDOG_USEC` and
/// `$WATCHDOG_PID` (the same rules as `sd_watchdog_enabled(3)`).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_watchdog_is_fed_only_when_the_agent_answers() {
        use std::sync::{Arc, Mutex};
        // Stops once the status was asked for four times; the second
        // answer is "no answer" (a hung manager).
        let (done, stop) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(Mutex::new(Some(done)));
        let asked = Arc::new(Mutex::new(0u32));
        let mut fed = Vec::new();
        keep_alive(
            async {
                let _ = stop.await;
            },
            Duration::from_millis(1),
            || {
                let asked = Arc::clone(&asked);
                let done = Arc::clone(&done);
                async move {
                    let n = {
                        let mut asked = asked.lock().expect("lock");
                        *asked += 1;
                        *asked
                    };
                    if n == 4
                        && let Some(done) = done.lock().expect("lock").take()
                    {
                        let _ = done.send(());
                    }
                    (n != 2).then(|| format!("line {n}"))
                }
            },
            |line| fed.push(line),
        )
        .await;
        assert_eq!(fed[..2], ["line 1".to_owned(), "line 3".to_owned()]);
        assert!(!fed.contains(&"line 2".to_owned()), "{fed:?}");
    }

    fn bound(dir: &Path) -> (UnixDatagram, Notifier) {
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind notify socket");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let notifier = Notifier::new(path.as_os_str())
            .expect("valid address")
            .expect("a notifier");
        (server, notifier)
    }

    fn recv(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_arrive_as_one_datagram_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, notifier) = bound(dir.path());
        notifier.send("READY=1").expect("send");
        notifier
            .send(&status_message("connected, 2 tasks running"))
            .expect("send");
        notifier.send("WATCHDOG=1").expect("send");
        assert_eq!(recv(&server), "READY=1");
        assert_eq!(recv(&server), "STATUS=connected, 2 tasks running");
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn status_cannot_inject_other_assignments() {
        assert_eq!(status_message("a\nREADY=1\r\nb"), "STATUS=a READY=1  b");
    }

    #[test]
    fn abstract_socket_addresses_work() {
        let name = format!("berth-notify-test-{}", uuid::Uuid::new_v4().simple());
        let addr = abstract_addr(name.as_bytes()).expect("abstract address");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let notifier = Notifier::new(OsStr::new(&format!("@{name}")))
            .expect("valid")
            .expect("a notifier");
        notifier.send("READY=1").expect("send");
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn unset_empty_and_vsock_addresses_mean_no_notifier() {
        assert!(
            Notifier::new(OsStr::new(""))
                .expect("empty is ok")
                .is_none()
        );
        assert!(
            Notifier::new(OsStr::new("vsock:2:1234"))
                .expect("vsock is ok")
                .is_none()
        );
        let err = Notifier::new(OsStr::new("relative/path")).expect_err("relative");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_listener_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone.sock");
        let notifier = Notifier::new(path.as_os_str())
            .expect("valid")
            .expect("a notifier");
        assert!(notifier.send("READY=1").is_err());
        // The logging variant swallows it (and only warns once).
        notifier.send_logged("READY=1");
        notifier.send_logged("READY=1");
        assert!(notifier.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn free_functions_are_no_ops_without_notify_socket() {
        // The test runner is not started by systemd: NOTIFY_SOCKET is unset
        // (if it were set, these would still only send datagrams).
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(global().is_none());
        }
        ready();
        status("test");
        watchdog();
        stopping();
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        let me = std::process::id();
        let me_s = me.to_string();
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, me),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some(&me_s), me),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("1"), me.max(2)),
            None
        );
        assert_eq!(watchdog_interval_from(None, None, me), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, me), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), me),
            None
        );
    }
}
