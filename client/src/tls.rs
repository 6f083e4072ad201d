//! TLS on TCP (`tls:HOST:PORT`): the handshake, and the encryption of a connection's byte
//! stream.
//!
//! The connection reads and writes the socket as it does a plain one (polling included, see
//! [`crate::spin`]): what it reads is ciphertext, which [`TlsStream::decrypt`] turns into the
//! plaintext it decodes, and what it writes goes through [`TlsStream::write_all`]. Decrypting
//! hands over *all* the plaintext rustls has each time, so that none waits inside rustls
//! while the reader sleeps on the socket: the socket being readable, or a deadline passing,
//! means the same as on a plain connection.
//!
//! The manager's certificate is verified against the CA file of
//! [`ConnectOptions::tls_ca_file`](crate::ConnectOptions::tls_ca_file) (`AGORA_TLS_CA`), or
//! else against the system's trusted roots, for the host named in the address.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::FrameDecoder;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::connection::{send, send_all};
use crate::error::Error;

/// Plaintext encrypted at a time: a huge request is sent as it is encrypted, never held whole
/// in its encrypted form.
const WRITE_CHUNK: usize = 64 * 1024;

/// The TLS side of one connection. Reading (the reader role) and writing (under the
/// connection's write lock) each hold the rustls state only while they encrypt or decrypt,
/// never while they wait on the socket.
pub(crate) struct TlsStream {
    sock: TcpStream,
    tls: Mutex<rustls::ClientConnection>,
    /// Held from taking encrypted records out of rustls until they are sent, so that records
    /// go out in the order they were made; the buffer they are taken into.
    sending: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port`, as a name to verify the certificate for (a DNS name, or an
/// IP address, brackets removed).
fn server_name(host_port: &str) -> Option<ServerName<'static>> {
    let (host, _) = host_port.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

/// The client configuration: the CA file's certificates as roots, or the system's.
fn client_config(address: &str, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let fail = |reason: String| Error::Tls {
        address: address.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    fail(format!(
                        "cannot read the CA file {} (AGORA_TLS_CA): {e}",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(fail(format!(
                    "the CA file {} holds no usable PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(fail(
                    "no trusted root certificates found on this system: give the manager's \
                     CA as a PEM file (AGORA_TLS_CA, or ConnectOptions::tls_ca_file)"
                        .to_owned(),
                ));
            }
        }
    }
    // ring, not rustls's default aws-lc (a long C build); so no post-quantum key exchange,
    // which is what the deprecation says.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What a TLS session with the manager at `address` (`tls:HOST:PORT`) starts from: the client
/// configuration and the name the certificate must be for. Shared by the blocking and the
/// async connection.
pub(crate) fn session_parts(
    address: &str,
    host_port: &str,
    ca_file: Option<&Path>,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), Error> {
    let name = server_name(host_port).ok_or_else(|| Error::Tls {
        address: address.to_owned(),
        reason: format!("the host of {host_port:?} is neither a DNS name nor an IP address"),
    })?;
    Ok((shared_config(address, ca_file)?, name))
}

/// What a built configuration was built from: the CA file (with its modification time, so
/// that a file replaced in place is read again), or the system's roots (`None`).
type ConfigKey = Option<(std::path::PathBuf, std::time::SystemTime)>;

/// [`client_config`], built once per CA setting and shared by every later connection:
/// loading the system's roots reads and parses every certificate of the system store, far
/// more than a connection's own work, and reconnections would do it again each time.
/// Failures are not kept: the next connection tries again, and reports as this one did.
fn shared_config(
    address: &str,
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    static BUILT: std::sync::OnceLock<
        Mutex<std::collections::HashMap<ConfigKey, Arc<rustls::ClientConfig>>>,
    > = std::sync::OnceLock::new();
    let key = match ca_file {
        None => None,
        Some(path) => match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(modified) => Some((path.to_owned(), modified)),
            // Unreadable: building the configuration says why.
            Err(_) => return client_config(address, ca_file).map(Arc::new),
        },
    };
    let built = BUILT.get_or_init(Default::default);
    if let Some(config) = built.lock().get(&key) {
        return Ok(config.clone());
    }
    // Built outside the lock: another connection's TLS setup need not wait for this one.
    let config = Arc::new(client_config(address, ca_file)?);
    let mut built = built.lock();
    // What an older version of the same file gave is not wanted again.
    built.retain(|old, _| old.as_ref().map(|(p, _)| p.as_path()) != ca_file || *old == key);
    Ok(built.entry(key).or_insert(config).clone())
}

/// The socket as rustls reads and writes it during the handshake: writes never raise
/// SIGPIPE.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send(self.0.as_raw_fd(), buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why the handshake failed, in words that say what to do.
pub(crate) fn handshake_failure(e: &io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "the manager's certificate is not valid for this address: {why} (a certificate \
             signed by a private CA needs that CA's PEM file in AGORA_TLS_CA, or \
             ConnectOptions::tls_ca_file; the host in the address must be a name or address \
             the certificate is for)"
        ),
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "the peer does not speak TLS ({e}): is the manager started with --tls-cert and \
             --tls-key? A plain manager is reached at tcp:HOST:PORT"
        ),
        Some(other) => other.to_string(),
        None => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => format!(
                "the peer closed the connection during the TLS handshake ({e}): a manager \
                 that already serves --max-connections closes new ones so, and a peer that \
                 does not speak TLS may too"
            ),
            _ => format!("the TLS handshake failed: {e}"),
        },
    }
}

impl TlsStream {
    /// The TLS handshake on a connected socket, for the manager at `address`
    /// (`tls:HOST:PORT`), done by `deadline` if one is given.
    pub(crate) fn handshake(
        sock: TcpStream,
        address: &str,
        host_port: &str,
        ca_file: Option<&Path>,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<TlsStream, Error> {
        let fail = |reason: String| Error::Tls {
            address: address.to_owned(),
            reason,
        };
        let (config, name) = session_parts(address, host_port, ca_file)?;
        let mut tls =
            rustls::ClientConnection::new(config, name).map_err(|e| fail(e.to_string()))?;
        // What is written is encrypted in chunks and sent at once (`write_all`): no limit.
        tls.set_buffer_limit(None);
        let timed_out = |after: Duration| Error::Timeout {
            address: address.to_owned(),
            what: "the TLS handshake (AGORA_HANDSHAKE_TIMEOUT)".to_owned(),
            after,
        };
        let socket_io = |e: io::Error| fail(format!("cannot set a socket timeout: {e}"));
        while tls.is_handshaking() {
            if let Some((at, after)) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out(after));
                }
                sock.set_read_timeout(Some(left)).map_err(socket_io)?;
                sock.set_write_timeout(Some(left)).map_err(socket_io)?;
            }
            match tls.complete_io(&mut Sock(&sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some((_, after)) = deadline {
                        return Err(timed_out(after));
                    }
                    return Err(fail(handshake_failure(&e)));
                }
                Err(e) => return Err(fail(handshake_failure(&e))),
            }
        }
        if deadline.is_some() {
            sock.set_read_timeout(None).map_err(socket_io)?;
            sock.set_write_timeout(None).map_err(socket_io)?;
        }
        Ok(TlsStream {
            sock,
            tls: Mutex::new(tls),
            sending: Mutex::new(Vec::new()),
        })
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Feeds `cipher`, bytes read from the socket, to rustls, and appends all the plaintext
    /// it has to `decoder`. Fails on bytes that are not TLS from the manager.
    pub(crate) fn decrypt(&self, mut cipher: &[u8], decoder: &mut FrameDecoder) -> io::Result<()> {
        let mut tls = self.tls.lock();
        loop {
            loop {
                let mut reader = tls.reader();
                match reader.fill_buf() {
                    Ok([]) => break,
                    Ok(plain) => {
                        let n = plain.len();
                        decoder.extend(plain);
                        reader.consume(n);
                    }
                    // Nothing more for now; or the end, which the socket tells next.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
            if cipher.is_empty() {
                break;
            }
            // Reads from the slice, which it advances. Nothing is taken after the manager's
            // close_notify: the rest is dropped.
            if tls.read_tls(&mut cipher)? == 0 {
                break;
            }
            if let Err(e) = tls.process_new_packets() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        let reply = tls.wants_write();
        drop(tls);
        // A record rustls must answer (a key update): sent now unless a writer is sending,
        // in which case it goes before that writer's next request.
        if reply {
            if let Some(mut out) = self.sending.try_lock() {
                self.send_pending(&mut out)?;
            }
        }
        Ok(())
    }

    /// Takes the encrypted records out of rustls and sends them (the `sending` lock held).
    fn send_pending(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        {
            let mut tls = self.tls.lock();
            while tls.wants_write() {
                tls.write_tls(out)?;
            }
        }
        let sent = send_all(self.sock.as_raw_fd(), out);
        if out.capacity() > 4 * WRITE_CHUNK {
            *out = Vec::new();
        }
        sent
    }

    /// Encrypts and sends all of `buf`.
    pub(crate) fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut out = self.sending.lock();
        for chunk in buf.chunks(WRITE_CHUNK) {
            self.tls.lock().writer().write_all(chunk)?;
            self.send_pending(&mut out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host() {
        let name = |s: &str| server_name(s).map(|n| n.to_str().into_owned());
        assert_eq!(name("localhost:5555").as_deref(), Some("localhost"));
        assert_eq!(name("127.0.0.1:1").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:1").as_deref(), Some("::1"));
        assert_eq!(
            name("manager.example:443").as_deref(),
            Some("manager.example")
        );
        assert_eq!(name("no port"), None);
        assert_eq!(name("bad_name!:1"), None);
    }
}
