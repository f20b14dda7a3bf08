//! Static host ports: free before a task's containers are created.
//!
//! # Background
//! A task that asks for a fixed host port (`hostPort` in bridge mode, the
//! `containerPort` itself in host mode) cannot run while something else holds
//! that port. Docker would only find out when it starts the container, after
//! the images are pulled and some of the task's containers may already run,
//! and its message does not say who holds the port. berth checks first and
//! names the holder: `host port 8080/tcp is already in use by nginx (pid
//! 1234)` (issue 3 item 8).
//!
//! # Design
//! - A port is free when the agent can bind it on `0.0.0.0` (and on `::` when
//!   the host has IPv6), with the mapping's protocol. Only "address in use"
//!   counts as taken; any other bind error (say, no permission for a port
//!   below 1024 in a test run as a user) leaves the decision to Docker.
//! - The holder is found the way `ss -p` does it: the socket's inode from
//!   `/proc/net/{tcp,tcp6,udp,udp6}`, then the process whose
//!   `/proc/<pid>/fd/*` links to `socket:[inode]`, then `/proc/<pid>/comm`.
//!   Best effort: without permission to read another process's fds the
//!   holder is "an unknown holder".
//!
//! # Limitations
//! - The check and Docker's own bind are not atomic: a port taken between the
//!   two still fails the container at start, with Docker's message.
//! - Ports of dynamic mappings (`hostPort` 0 or absent in bridge mode, and
//!   `containerPortRange` in bridge mode) are Docker's to choose and are not
//!   checked.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use berth_taskdef::{NetworkMode, TaskDefinition};
use tracing::debug;

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// ECS' `protocol`: `tcp` (default) or `udp`, any case.
    pub fn from_ecs(protocol: Option<&str>) -> Self {
        match protocol {
            Some(p) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
            _ => Protocol::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host port a task binds, with the container that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub port: u16,
    pub protocol: Protocol,
    /// Index of the container definition.
    pub container: usize,
}

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`: the executable's name, at most 15 bytes.
    pub command: String,
}

/// A static host port that something else holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host port {port}/{protocol} is already in use by {}", holder_text(.holder))]
pub struct PortInUse {
    pub port: u16,
    pub protocol: Protocol,
    /// `None` when the holder could not be found.
    pub holder: Option<Holder>,
    /// Index of the container definition that asks for the port.
    pub container: usize,
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => format!("{} (pid {})", h.command, h.pid),
        None => "an unknown holder".to_owned(),
    }
}

/// The static host ports of the containers at `containers` (indexes into
/// the definition), without duplicates, in definition order.
pub fn static_host_ports(def: &TaskDefinition, containers: &[usize]) -> Vec<HostPort> {
    let mode = def.network_mode();
    let mut out: Vec<HostPort> = Vec::new();
    for &i in containers {
        let Some(c) = def.container_definitions.get(i) else {
            continue;
        };
        for m in &c.port_mappings {
            let protocol = Protocol::from_ecs(m.protocol.as_deref());
            let ports: Vec<u16> = match mode {
                NetworkMode::None => Vec::new(),
                NetworkMode::Bridge => match (m.container_port, m.host_port) {
                    (Some(_), Some(host)) if host != 0 => vec![host],
                    _ => Vec::new(),
                },
                // In host mode the container binds its own ports on the host.
                NetworkMode::Host => match (m.container_port, m.container_port_range.as_deref()) {
                    (Some(port), _) => vec![port],
                    (None, Some(range)) => port_range(range),
                    (None, None) => Vec::new(),
                },
            };
            for port in ports {
                if !out.iter().any(|p| p.port == port && p.protocol == protocol) {
                    out.push(HostPort {
                        port,
                        protocol,
                        container: i,
                    });
                }
            }
        }
    }
    out
}

/// `8000-8010` → 8000..=8010; anything else → nothing (validation refuses it).
fn port_range(range: &str) -> Vec<u16> {
    let Some((low, high)) = range.split_once('-') else {
        return Vec::new();
    };
    match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
        (Ok(low), Ok(high)) if low <= high => (low..=high).collect(),
        _ => Vec::new(),
    }
}

/// Checks that every static host port of the containers at `containers` is
/// free on this host; the first one that is not, with its holder.
pub fn check_task(def: &TaskDefinition, containers: &[usize]) -> Result<(), PortInUse> {
    check_free(&static_host_ports(def, containers))
}

/// Checks that each port is free; the first one that is not, with its holder.
pub fn check_free(ports: &[HostPort]) -> Result<(), PortInUse> {
    for p in ports {
        if in_use(p.port, p.protocol) {
            let holder = find_holder(p.port, p.protocol);
            return Err(PortInUse {
                port: p.port,
                protocol: p.protocol,
                holder,
                container: p.container,
            });
        }
    }
    Ok(())
}

/// Whether binding the port on every address fails with "address in use".
fn in_use(port: u16, protocol: Protocol) -> bool {
    let bind = |addr: SocketAddr| -> io::Result<()> {
        match protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        }
    };
    // One address at a time: the IPv6 wildcard also covers IPv4 (unless the
    // host sets bindv6only), so holding both at once would collide.
    for addr in [
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    ] {
        match bind(addr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return true,
            Err(e) => {
                // No IPv6, or no permission: Docker will tell.
                debug!(%addr, protocol = %protocol, error = %e, "cannot probe host port");
            }
        }
    }
    false
}

/// The process holding `port`, from `/proc` (best effort).
pub fn find_holder(port: u16, protocol: Protocol) -> Option<Holder> {
    find_holder_in(Path::new("/proc"), port, protocol)
}

fn find_holder_in(proc: &Path, port: u16, protocol: Protocol) -> Option<Holder> {
    let tables: &[&str] = match protocol {
        Protocol::Tcp => &["net/tcp", "net/tcp6"],
        Protocol::Udp => &["net/udp", "net/udp6"],
    };
    let mut inodes = Vec::new();
    for table in tables {
        match std::fs::read_to_string(proc.join(table)) {
            Ok(text) => inodes.extend(socket_inodes(&text, port, protocol)),
            Err(e) => debug!(table, error = %e, "cannot read socket table"),
        }
    }
    // Listening sockets first: they are what holds a TCP port.
    inodes.sort_by_key(|(_, listening)| !*listening);
    inodes.dedup();
    inodes
        .into_iter()
        .find_map(|(inode, _)| process_of_socket(proc, inode))
}

/// Inodes of the sockets bound to local `port` in a `/proc/net/{tcp,udp}[6]`
/// table, each with whether it is a listening TCP socket. The header and
/// malformed lines are skipped; inode 0 (a socket being torn down) too.
pub fn socket_inodes(table: &str, port: u16, protocol: Protocol) -> Vec<(u64, bool)> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let local_port = u16::from_str_radix(hex_port, 16).ok()?;
            (local_port == port && inode != 0)
                .then(|| (inode, protocol == Protocol::Tcp && *state == TCP_LISTEN))
        })
        .collect()
}

/// The process with a file descriptor on socket `inode`.
fn process_of_socket(proc: &Path, inode: u64) -> Option<Holder> {
    let target = format!("socket:[{inode}]");
    let entries = std::fs::read_dir(proc).ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            // Gone, or not ours to read.
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        });
        if holds {
            let command = std::fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_else(|_| "an unknown process".to_owned());
            return Some(Holder { pid, command });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{ContainerDefinition, PortMapping};

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 34567 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 34999 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C351 06 00000000:00000000 03:00000F9C 00000000     0        0 0 3 0000000000000000
garbage line
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55555 1 0000000000000000 100 0 0 10 0
";

    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 777 2 0000000000000000 0
";

    #[test]
    fn proc_net_lines_give_the_inodes_of_a_port() {
        assert_eq!(
            socket_inodes(TCP, 8080, Protocol::Tcp),
            vec![(34567, true), (34999, false)],
            "inode 0 (TIME_WAIT) and other ports are left out"
        );
        assert_eq!(socket_inodes(TCP, 22, Protocol::Tcp), vec![(12345, true)]);
        assert_eq!(
            socket_inodes(TCP6, 8080, Protocol::Tcp),
            vec![(55555, true)]
        );
        assert_eq!(socket_inodes(UDP, 53, Protocol::Udp), vec![(777, false)]);
        assert_eq!(socket_inodes(TCP, 9999, Protocol::Tcp), Vec::new());
        assert_eq!(socket_inodes("", 80, Protocol::Tcp), Vec::new());
    }

    #[test]
    fn the_holder_comes_from_a_proc_tree() -> std::io::Result<()> {
        let proc = tempfile::tempdir()?;
        let root = proc.path();
        std::fs::create_dir_all(root.join("net"))?;
        std::fs::write(root.join("net/tcp"), TCP)?;
        std::fs::write(root.join("net/tcp6"), TCP6)?;
        // pid 42 holds the established socket, pid 7 the listening one.
        for (pid, comm, inode) in [(42, "client", 34999), (7, "nginx", 34567)] {
            let fd = root.join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd)?;
            std::fs::write(root.join(format!("{pid}/comm")), format!("{comm}\n"))?;
            std::os::unix::fs::symlink("/dev/null", fd.join("0"))?;
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join("3"))?;
        }
        std::fs::create_dir_all(root.join("self"))?;
        assert_eq!(
            find_holder_in(root, 8080, Protocol::Tcp),
            Some(Holder {
                pid: 7,
                command: "nginx".to_owned()
            }),
            "the listening socket's process wins"
        );
        assert_eq!(find_holder_in(root, 22, Protocol::Tcp), None);
        assert_eq!(find_holder_in(root, 8080, Protocol::Udp), None);
        Ok(())
    }

    #[test]
    fn messages_name_port_protocol_and_holder() {
        let known = PortInUse {
            port: 8080,
            protocol: Protocol::Tcp,
            holder: Some(Holder {
                pid: 1234,
                command: "nginx".to_owned(),
            }),
            container: 0,
        };
        assert_eq!(
            known.to_string(),
            "host port 8080/tcp is already in use by nginx (pid 1234)"
        );
        let unknown = PortInUse {
            holder: None,
            protocol: Protocol::Udp,
            ..known
        };
        assert_eq!(
            unknown.to_string(),
            "host port 8080/udp is already in use by an unknown holder"
        );
    }

    fn task(mode: Option<&str>, mappings: Vec<PortMapping>) -> TaskDefinition {
        TaskDefinition {
            family: "web".to_owned(),
            network_mode: mode.map(str::to_owned),
            container_definitions: vec![
                ContainerDefinition {
                    name: "init".to_owned(),
                    ..Default::default()
                },
                ContainerDefinition {
                    name: "app".to_owned(),
                    port_mappings: mappings,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn mapping(container: Option<u16>, host: Option<u16>, protocol: Option<&str>) -> PortMapping {
        PortMapping {
            container_port: container,
            host_port: host,
            protocol: protocol.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn bridge_mode_checks_only_static_host_ports() {
        let def = task(
            None,
            vec![
                mapping(Some(80), Some(8080), None),
                mapping(Some(81), Some(0), None),
                mapping(Some(82), None, None),
                mapping(Some(53), Some(5353), Some("UDP")),
                PortMapping {
                    container_port_range: Some("9000-9002".to_owned()),
                    ..Default::default()
                },
            ],
        );
        assert_eq!(
            static_host_ports(&def, &[0, 1]),
            vec![
                HostPort {
                    port: 8080,
                    protocol: Protocol::Tcp,
                    container: 1
                },
                HostPort {
                    port: 5353,
                    protocol: Protocol::Udp,
                    container: 1
                },
            ]
        );
        assert_eq!(
            static_host_ports(&def, &[0]),
            Vec::new(),
            "only the given containers"
        );
    }

    #[test]
    fn host_mode_checks_container_ports_and_ranges() {
        let def = task(
            Some("host"),
            vec![
                mapping(Some(8080), None, None),
                mapping(Some(8080), Some(8080), Some("tcp")),
                PortMapping {
                    container_port_range: Some("9000-9001".to_owned()),
                    protocol: Some("udp".to_owned()),
                    ..Default::default()
                },
            ],
        );
        let ports: Vec<(u16, Protocol)> = static_host_ports(&def, &[1])
            .into_iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            vec![
                (8080, Protocol::Tcp),
                (9000, Protocol::Udp),
                (9001, Protocol::Udp)
            ]
        );
        let none = task(Some("none"), vec![mapping(Some(80), Some(80), None)]);
        assert_eq!(static_host_ports(&none, &[1]), Vec::new());
    }

    #[test]
    fn a_port_held_here_is_in_use_and_a_released_one_is_free() -> std::io::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let ports = [HostPort {
            port,
            protocol: Protocol::Tcp,
            container: 3,
        }];
        let err = check_free(&ports).err();
        assert_eq!(err.as_ref().map(|e| (e.port, e.container)), Some((port, 3)));
        assert_eq!(
            err.and_then(|e| e.holder).map(|h| h.pid),
            Some(std::process::id())
        );
        drop(listener);
        assert_eq!(check_free(&ports), Ok(()));

        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = socket.local_addr()?.port();
        let err = check_free(&[HostPort {
            port,
            protocol: Protocol::Udp,
            container: 0,
        }])
        .err();
        assert_eq!(err.map(|e| e.protocol), Some(Protocol::Udp));
        Ok(())
    }
}
