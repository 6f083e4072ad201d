//! Slowing down authkey guessing: every `auth` attempt takes a place in its peer's line, and a
//! peer that attempts faster than [`ThrottleConfig`] allows waits for its place before its
//! digest is even checked.
//!
//! A peer is an IP address for TCP and TLS (an IPv6 address by its /64 network, which one host
//! usually owns whole), the user id of the client for a Unix socket (`SO_PEERCRED`), or one
//! shared bucket when neither can be read. Each peer has a *theoretical arrival time*: the
//! place its next attempt may take in its line without waiting. Every attempt moves it one
//! [`ThrottleConfig::interval`] later, and a successful one gives its place back, so a peer
//! that only authenticates successfully never waits; up to [`ThrottleConfig::burst`] attempts
//! go through at once, and after those one per interval. The waiting is the connection task's
//! own (a timer), so other peers, and other connections, are served meanwhile.
//!
//! The attempt waits *before* its digest is checked, whether it will turn out right or wrong:
//! answering a right guess sooner than a wrong one would let a guesser with many connections
//! learn the answer without waiting. An attempt whose place is later than its connection's
//! authentication deadline is refused at once, unchecked, so that a flood of attempts costs the
//! manager neither checks nor connections waiting long.
//!
//! The table of peers is bounded ([`MAX_PEERS`]); a peer whose line is empty is the same as
//! an unknown one, and such entries are dropped to make room.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Most peers remembered at once.
pub const MAX_PEERS: usize = 4096;

/// What an interval too long to add to an Instant stands for: longer than any deadline.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often a throttled peer's refusals are logged, at most.
const LOG_REFUSALS_EVERY: Duration = Duration::from_secs(10);

/// How fast one peer may attempt to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Attempts that go through without waiting, from a peer that made none lately.
    pub burst: u32,
    /// Time between attempts beyond the burst: the peer's steady rate is one per interval.
    pub interval: Duration,
}

impl Default for ThrottleConfig {
    /// 5 attempts at once, then 4 a second: nothing a correct client notices, and about
    /// 350,000 guesses a day from one peer at most.
    fn default() -> ThrottleConfig {
        ThrottleConfig {
            burst: 5,
            interval: Duration::from_millis(250),
        }
    }
}

/// Whom an attempt counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP or TLS client's IPv4 address, or the /64 network of its IPv6 address.
    Ip(IpAddr),
    /// The user id of a Unix socket client.
    Uid(u32),
    /// A peer that could not be told apart: all of them share one line.
    Unknown,
}

impl Peer {
    /// The peer of connected socket `fd`.
    pub fn of(fd: RawFd) -> Peer {
        match peer_address(fd) {
            Some(PeerAddress::Ip(ip)) => Peer::Ip(network(ip)),
            Some(PeerAddress::Unix) => {
                peer_credentials(fd).map_or(Peer::Unknown, |cred| Peer::Uid(cred.uid))
            }
            None => Peer::Unknown,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(IpAddr::V6(net)) => write!(f, "{net}/64"),
            Peer::Ip(ip) => write!(f, "{ip}"),
            Peer::Uid(uid) => write!(f, "uid {uid}"),
            Peer::Unknown => f.write_str("an unidentified peer"),
        }
    }
}

/// An IPv4 address as it is; an IPv6 one as its /64 network (an IPv4-mapped one as the IPv4
/// address it maps).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
        v4 => v4,
    }
}

/// What kind of address a socket's peer has.
pub(crate) enum PeerAddress {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A Unix socket's peer.
    Unix,
}

/// The address of the peer of socket `fd` (`getpeername`).
pub(crate) fn peer_address(fd: RawFd) -> Option<PeerAddress> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of the type.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes, and `len` outlives the call.
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in, which sockaddr_storage is large enough
            // and aligned enough for.
            let v4 = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            Some(PeerAddress::Ip(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                v4.sin_addr.s_addr,
            )))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a sockaddr_in6.
            let v6 = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(PeerAddress::Ip(IpAddr::V6(Ipv6Addr::from(
                v6.sin6_addr.s6_addr,
            ))))
        }
        libc::AF_UNIX => Some(PeerAddress::Unix),
        _ => None,
    }
}

/// The process, user and group ids of the peer of Unix socket `fd` (`SO_PEERCRED`). Call it
/// on Unix sockets only: other sockets answer with made-up ids.
pub fn peer_credentials(fd: RawFd) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes, and `len` outlives the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred)
}

/// What an attempt may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Be checked at this instant (now, or later: the connection waits until then).
    At(Instant),
    /// Be refused unchecked: its place would come after its deadline.
    Refused {
        /// When the peer may attempt again without being refused.
        retry_in: Duration,
        /// Whether to log this refusal, and how many of the peer's went unlogged before it
        /// (refusals come as fast as a guesser connects; the log gets one line per peer every
        /// 10 s).
        log: Option<u64>,
    },
}

/// One peer's line.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// When its next attempt may be checked without waiting, burst aside.
    next: Instant,
    /// When one of its refusals was last logged.
    logged: Option<Instant>,
    /// Its refusals since then.
    unlogged: u64,
}

/// The lines of every peer that attempted to authenticate lately.
#[derive(Debug, Default)]
pub struct Throttle {
    config: ThrottleConfig,
    lines: Mutex<HashMap<Peer, Line>>,
}

impl Throttle {
    /// A throttle with these rates.
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            lines: Mutex::default(),
        }
    }

    /// Takes a place in `peer`'s line for an attempt made `now`, or refuses it when the place
    /// would come after `deadline`.
    pub fn admit(&self, peer: Peer, now: Instant, deadline: Instant) -> Admission {
        // Saturating: extreme settings (a burst of u32::MAX, an interval of years) must
        // mean "never wait" or "wait past any deadline", not a panic on every attempt.
        let tolerance = self
            .config
            .interval
            .checked_mul(self.config.burst.saturating_sub(1))
            .unwrap_or(Duration::MAX);
        let mut lines = self.lines.lock();
        let next = lines.get(&peer).map_or(now, |line| line.next.max(now));
        let at = next.checked_sub(tolerance).map_or(now, |at| at.max(now));
        if !lines.contains_key(&peer) {
            make_room(&mut lines, now);
        }
        if at > deadline {
            let line = lines.entry(peer).or_insert(Line {
                next,
                logged: None,
                unlogged: 0,
            });
            line.unlogged += 1;
            let due = line.logged.is_none_or(|t| now >= t + LOG_REFUSALS_EVERY);
            let log = due.then(|| {
                line.logged = Some(now);
                std::mem::take(&mut line.unlogged) - 1
            });
            return Admission::Refused {
                retry_in: at - now,
                log,
            };
        }
        let line = Line {
            // An interval an Instant cannot reach is, to a guesser, the same as a century.
            next: next
                .checked_add(self.config.interval)
                .or_else(|| next.checked_add(CENTURY))
                .unwrap_or(next),
            logged: None,
            unlogged: 0,
        };
        match lines.get_mut(&peer) {
            Some(old) => old.next = line.next,
            None => {
                lines.insert(peer, line);
            }
        }
        Admission::At(at)
    }

    /// Gives back the place of `peer`'s attempt that succeeded at `now`.
    pub fn succeeded(&self, peer: Peer, now: Instant) {
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(&peer) {
            line.next = line
                .next
                .checked_sub(self.config.interval)
                .map_or(now, |next| next.max(now));
            if line.next <= now {
                lines.remove(&peer);
            }
        }
    }

    /// How many peers are remembered.
    pub fn peers(&self) -> usize {
        self.lines.lock().len()
    }
}

/// Makes room for one more line: drops the lines that are empty by `now`, then, if the table
/// is still full, the one that empties first.
fn make_room(lines: &mut HashMap<Peer, Line>, now: Instant) {
    if lines.len() < MAX_PEERS {
        return;
    }
    lines.retain(|_, line| line.next > now);
    if lines.len() < MAX_PEERS {
        return;
    }
    let first = lines
        .iter()
        .min_by_key(|(_, line)| line.next)
        .map(|(p, _)| *p);
    if let Some(peer) = first {
        lines.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Peer = Peer::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    const TWO: Peer = Peer::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig {
            burst: 3,
            interval: Duration::from_secs(1),
        })
    }

    #[test]
    fn a_burst_goes_through_then_one_attempt_per_interval() {
        let t = throttle();
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(t.admit(ONE, now, far), Admission::At(now));
        }
        assert_eq!(
            t.admit(ONE, now, far),
            Admission::At(now + Duration::from_secs(1))
        );
        assert_eq!(
            t.admit(ONE, now, far),
            Admission::At(now + Duration::from_secs(2))
        );
        // Another peer is not slowed.
        assert_eq!(t.admit(TWO, now, far), Admission::At(now));
    }

    #[test]
    fn an_attempt_placed_after_its_deadline_is_refused_and_takes_no_place() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..20 {
            assert!(matches!(t.admit(ONE, now, far(now)), Admission::At(_)));
        }
        // The next place is 18 s away (20 taken, 3 at once).
        let soon = now + Duration::from_secs(1);
        assert_eq!(t.admit(ONE, now, soon), refusal(18, Some(0)));
        // Unlogged until 10 s later, then logged with the count of those in between; none
        // took a place.
        assert!(matches!(
            t.admit(ONE, now, soon),
            Admission::Refused { log: None, .. }
        ));
        let later = now + LOG_REFUSALS_EVERY;
        assert_eq!(t.admit(ONE, later, later), refusal(8, Some(1)));
        assert_eq!(
            t.admit(ONE, now, far(now)),
            Admission::At(now + Duration::from_secs(18))
        );
    }

    fn refusal(retry_in_secs: u64, log: Option<u64>) -> Admission {
        let retry_in = Duration::from_secs(retry_in_secs);
        Admission::Refused { retry_in, log }
    }

    fn far(now: Instant) -> Instant {
        now + Duration::from_secs(3600)
    }

    #[test]
    fn successes_give_their_place_back() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(t.admit(ONE, now, far(now)), Admission::At(now));
            t.succeeded(ONE, now);
        }
        assert_eq!(t.peers(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_empty_lines_first() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..MAX_PEERS as u32 + 10 {
            let peer = Peer::Uid(i);
            assert!(matches!(t.admit(peer, now, far(now)), Admission::At(_)));
        }
        assert_eq!(t.peers(), MAX_PEERS);
        let later = now + Duration::from_secs(5);
        assert!(matches!(t.admit(ONE, later, far(later)), Admission::At(_)));
        assert_eq!(t.peers(), 1, "every line had emptied by then");
    }

    #[test]
    fn ipv6_peers_count_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_eq!(network(a).to_string(), "2001:db8:1:2::");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(network(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_unix_peer_is_its_uid() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(Peer::of(a.as_raw_fd()), Peer::Uid(uid));
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let many = Throttle::new(ThrottleConfig {
            burst: u32::MAX,
            interval: Duration::from_secs(u64::MAX / 2),
        });
        assert_eq!(many.admit(ONE, now, far), Admission::At(now));
        let slow = Throttle::new(ThrottleConfig {
            burst: 1,
            interval: Duration::MAX,
        });
        assert_eq!(slow.admit(ONE, now, far), Admission::At(now));
        // The next place is out of reach: refused, not a panic.
        assert!(matches!(
            slow.admit(ONE, now, far),
            Admission::Refused { .. }
        ));
    }
}
