//! Who is at the other end of a connection: its address and, on a Unix socket, its process
//! and user, as the kernel vouches for them (`SO_PEERCRED`).

use std::os::fd::RawFd;

use crate::throttle::{peer_address, peer_credentials, PeerAddress};

/// The peer of one connection, as its log lines and `stats` name it.
///
/// ```
/// use agora_manager::peer::PeerInfo;
/// use std::os::fd::AsRawFd;
///
/// let (ours, _theirs) = std::os::unix::net::UnixStream::pair()?;
/// let peer = PeerInfo::of(ours.as_raw_fd(), "unix peer".to_owned());
/// assert_eq!(peer.pid, Some(std::process::id()));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// A TCP address, or `unix peer`: a Unix socket's client has no address of its own.
    pub address: String,
    /// The process that connected, on a Unix socket.
    pub pid: Option<u32>,
    /// The user that process ran as, on a Unix socket.
    pub uid: Option<u32>,
}

impl PeerInfo {
    /// The peer of socket `fd`, known as `address`, with its credentials when `fd` is a Unix
    /// socket.
    pub fn of(fd: RawFd, address: String) -> PeerInfo {
        let cred = credentials(fd);
        PeerInfo {
            address,
            pid: cred.map(|c| c.pid.unsigned_abs()),
            uid: cred.map(|c| c.uid),
        }
    }
}

/// The credentials of the peer of `fd` when it is a Unix socket; `None` for other sockets
/// (whose `SO_PEERCRED` would answer made-up ids), or when the kernel has none to give.
fn credentials(fd: RawFd) -> Option<libc::ucred> {
    if !matches!(peer_address(fd), Some(PeerAddress::Unix)) {
        return None;
    }
    let cred = peer_credentials(fd)?;
    (cred.pid > 0).then_some(cred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_unix_peer_is_this_process_and_user() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = PeerInfo::of(ours.as_raw_fd(), "unix peer".into());
        assert_eq!(peer.pid, Some(std::process::id()));
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer.uid, Some(unsafe { libc::getuid() }));
    }

    #[test]
    fn a_tcp_peer_has_no_credentials() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = PeerInfo::of(client.as_raw_fd(), "127.0.0.1:1".into());
        assert_eq!((peer.pid, peer.uid), (None, None));
    }
}
