//! The ceiling of the queue figures: the same producer and consumer processes moving the same
//! items through one raw pipe, with no manager between them.
//!
//! Every item travels as a frame, a 4-byte little-endian length and then the item's MessagePack
//! bytes (what the queue carries), and a producer writes [`crate::blocking::BATCH`] frames a
//! `write(2)`, as `put_many` sends them a call. The pipe is in packet mode (`O_DIRECT`): with
//! several consumers on one pipe, each read then takes one producer's write whole instead of
//! splitting a frame between two consumers.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use crate::harness::run_workers;

type BoxError = Box<dyn std::error::Error>;

/// Bytes the kernel writes to a pipe atomically; a packet holds at most this many.
const PIPE_BUF: usize = libc::PIPE_BUF;

/// The frames of `items`, each a 4-byte length and the item's MessagePack encoding.
fn frames(items: &[u64], out: &mut Vec<u8>) -> Result<(), BoxError> {
    out.clear();
    for item in items {
        let bytes = rmp_serde::to_vec(item)?;
        out.extend((bytes.len() as u32).to_le_bytes());
        out.extend(bytes);
    }
    Ok(())
}

/// Decodes the frames of one packet; returns how many items it held.
fn unframe(mut packet: &[u8]) -> Result<u64, BoxError> {
    let mut items = 0u64;
    while !packet.is_empty() {
        let (len, rest) = packet
            .split_first_chunk::<4>()
            .ok_or("raw pipe: a frame cut inside its length")?;
        let len = u32::from_le_bytes(*len) as usize;
        let item = rest
            .get(..len)
            .ok_or("raw pipe: a frame cut inside its item")?;
        let _: u64 = rmp_serde::from_slice(item)?;
        packet = &rest[len..];
        items += 1;
    }
    Ok(items)
}

/// Waits up to `patience` for the pipe end `fd` to be ready for `events` (`POLLIN`/`POLLOUT`).
fn wait(fd: &File, events: libc::c_short, patience: Duration) -> Result<(), BoxError> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd we own, for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, patience.as_millis() as libc::c_int) };
    let e = std::io::Error::last_os_error();
    if r < 0 && e.kind() != ErrorKind::Interrupted {
        return Err(format!("raw pipe: poll: {e}").into());
    }
    Ok(())
}

/// Writes one packet of `batch` frames after another until `deadline`.
fn produce(
    pipe: &File,
    batch: &[u64],
    deadline: Instant,
    patience: Duration,
) -> Result<(), BoxError> {
    let mut packet = Vec::new();
    while Instant::now() < deadline {
        frames(batch, &mut packet)?;
        match (&*pipe).write(&packet) {
            Ok(n) if n == packet.len() => {}
            Ok(n) => return Err(format!("raw pipe: {n} of {} bytes written", packet.len()).into()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(pipe, libc::POLLOUT, patience)?,
            Err(e) => return Err(format!("raw pipe: write: {e}").into()),
        }
    }
    Ok(())
}

/// Reads packets until `deadline`; returns the items they held.
fn consume(pipe: &File, deadline: Instant, patience: Duration) -> Result<u64, BoxError> {
    let mut packet = vec![0u8; PIPE_BUF];
    let mut items = 0u64;
    while Instant::now() < deadline {
        match (&*pipe).read(&mut packet) {
            Ok(n) => items += unframe(&packet[..n])?,
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(pipe, libc::POLLIN, patience)?,
            Err(e) => return Err(format!("raw pipe: read: {e}").into()),
        }
    }
    Ok(items)
}

/// Moves items from `producers` processes to `consumers` processes through one pipe for
/// `duration`; returns the items consumed per second. Nobody blocks past its deadline by more
/// than `patience`: the pipe does not block, and a full or empty one is waited on with poll.
pub fn flow(
    producers: usize,
    consumers: usize,
    batch: &[u64],
    duration: Duration,
    patience: Duration,
) -> Result<f64, BoxError> {
    let mut probe = Vec::new();
    frames(batch, &mut probe)?;
    if probe.len() > PIPE_BUF {
        return Err(format!("raw pipe: a batch is {} bytes, over PIPE_BUF", probe.len()).into());
    }
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(OFlag::O_DIRECT | OFlag::O_NONBLOCK)
        .map_err(|e| format!("raw pipe: pipe2(O_DIRECT) (packet mode, Linux 3.4+): {e}"))?;
    // Shared, not duplicated: each forked worker gets its own copy of these descriptors.
    let (r, w) = (Rc::new(File::from(r)), Rc::new(File::from(w)));
    let batch = batch.to_vec();
    run_workers(producers + consumers, duration, move |index, deadline| {
        if index < producers {
            produce(&w, &batch, deadline, patience).map(|()| 0)
        } else {
            consume(&r, deadline, patience)
        }
    })
}
