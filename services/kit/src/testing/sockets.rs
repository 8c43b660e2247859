//! The TCP sockets another process (or this one) holds, with the options
//! that matter for latency, so a test can check what a running binary set on
//! its own sockets. Each descriptor is duplicated with `pidfd_getfd` and read
//! with `getsockopt`; this needs the right to ptrace the process (a child of
//! the test, or the test itself).

use std::{io, net::SocketAddr};

use rustix::{
    net::{getpeername, getsockname, sockopt},
    process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open},
};

/// One TCP socket of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// Its local address.
    pub local: SocketAddr,
    /// Its peer; `None` for a listener.
    pub peer: Option<SocketAddr>,
    /// Whether `TCP_NODELAY` is set.
    pub nodelay: bool,
}

/// Every TCP socket that process `pid` has open now.
pub fn tcp_sockets(pid: u32) -> io::Result<Vec<TcpSocket>> {
    let raw = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::other("pid 0"))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{raw}/fd"))? {
        let entry = entry?;
        // Descriptors close while we look; those are simply gone.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(dup) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let Some(local) = getsockname(&dup).ok().and_then(|a| SocketAddr::try_from(a).ok()) else {
            continue; // not an IP socket
        };
        // A UDP socket has no TCP options.
        let Ok(nodelay) = sockopt::tcp_nodelay(&dup) else {
            continue;
        };
        let peer = getpeername(&dup)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok());
        sockets.push(TcpSocket { local, peer, nodelay });
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nodelay_option_of_a_processs_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nodelay(true).unwrap();
        client.set_nodelay(false).unwrap();

        let sockets = tcp_sockets(std::process::id()).unwrap();
        let find = |local, peer| sockets.iter().find(|s| s.local == local && s.peer == peer).copied();
        let server = listener.local_addr().unwrap();
        let client_addr = client.local_addr().unwrap();
        assert!(find(server, Some(client_addr)).unwrap().nodelay);
        assert!(!find(client_addr, Some(server)).unwrap().nodelay);
        assert!(find(server, None).is_some(), "the listener: {sockets:?}");
    }
}
