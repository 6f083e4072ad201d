//! TLS on TCP: the server's certificate and key, and a TLS connection as the session serves it.
//!
//! TLS wraps the very byte stream a plain TCP connection carries (`PROTOCOL.md`, section 1):
//! once the TLS handshake is done, the client says `hello` and `auth` as on any other
//! connection. The handshake happens in the connection's own task, after it has taken its
//! place among [`crate::Config::max_connections`], and within
//! [`crate::Config::auth_timeout`] of being accepted together with `hello` and `auth`: a
//! client that never finishes it costs one place for that long, as one that never
//! authenticates does. A peer that does not speak TLS (a plain client) fails the handshake
//! and is closed at once.
//!
//! The session reads and writes a TLS connection through [`TlsConn`], which implements
//! [`crate::session::Transport`] as the plain sockets do: its reads that never wait feed what
//! the socket holds to rustls and hand back what that decrypts, so a busy TLS connection
//! polls for its next request as a plain one does.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Transport;

/// The server side of TLS from a PEM certificate chain (the server's certificate first) and
/// its PEM private key (PKCS#8, PKCS#1 or SEC1). The errors name the file and what is wrong
/// with it.
pub fn server_config(cert_file: &Path, key_file: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let bad = |file: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {what}", file.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad(
                cert_file,
                format!("cannot read a PEM certificate chain: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(bad(
            cert_file,
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad(key_file, format!("cannot read a PEM private key: {e}")))?;
    // ring, not rustls's default aws-lc (a long C build); so no post-quantum key exchange,
    // which is what the deprecation says.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(
                key_file,
                format!("cannot serve {} with this key: {e}", cert_file.display()),
            )
        })?;
    // Clients reconnect rarely and never resume sessions: no tickets to make and send.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// One TLS connection of the manager, after its handshake.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
}

impl TlsConn {
    /// The connection a finished handshake gave.
    pub fn new(stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> TlsConn {
        TlsConn { stream }
    }

    /// Sends what rustls has encrypted, as far as the socket takes it now.
    fn send_encrypted(&mut self) -> io::Result<()> {
        let fd = self.stream.as_raw_fd();
        let (_, tls) = self.stream.get_mut();
        while tls.wants_write() {
            if tls.write_tls(&mut SocketNow(fd))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// The socket, read and written without waiting (`WouldBlock` when it would), bypassing
/// tokio's readiness tracking, which is harmless: tokio tries again when it thinks the socket
/// ready and learns otherwise from `EAGAIN`.
struct SocketNow(RawFd);

impl Read for SocketNow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is the connection's open socket; `buf` is writable for its
        // length.
        let n = unsafe {
            libc::recv(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl Write for SocketNow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::session::send_now(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TlsConn {
    fn read_now(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        let fd = self.stream.as_raw_fd();
        let (_, tls) = self.stream.get_mut();
        loop {
            // What was decrypted already comes first, all of it.
            let mut taken = 0;
            let end = loop {
                let mut reader = tls.reader();
                match reader.fill_buf() {
                    // A clean end (close_notify).
                    Ok([]) => break Some(Ok(())),
                    Ok(plain) => {
                        let n = plain.len();
                        buf.extend_from_slice(plain);
                        reader.consume(n);
                        taken += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    // The peer's end of file without TLS's close_notify: an end of file all the
                    // same, since the protocol's messages delimit themselves.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Some(Ok(())),
                    Err(e) => break Some(Err(e)),
                }
            };
            if taken > 0 {
                // The end, if that is what follows, is read next time.
                return Some(Ok(taken));
            }
            if let Some(end) = end {
                return Some(end.map(|()| 0));
            }
            match tls.read_tls(&mut SocketNow(fd)) {
                // At the end of file too: the reader says so on the next turn.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert that says why, if the socket takes it now.
                let _ = tls.write_tls(&mut SocketNow(fd));
                return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }

    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Records encrypted earlier go first: while they wait, nothing more is taken.
        self.send_encrypted()?;
        let (_, tls) = self.stream.get_mut();
        let taken = tls.writer().write(bytes)?;
        // What the socket does not take now goes out as it drains (`pending_output`).
        match self.send_encrypted() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ if taken == 0 && !bytes.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(taken),
        }
    }

    fn pending_output(&self) -> bool {
        self.stream.get_ref().1.wants_write()
    }
}

impl AsRawFd for TlsConn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            // As in `read_now`: an end of file without close_notify is an end of file.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Sends TLS's close_notify if the socket takes it now, then shuts the socket's writing
    /// side down. Never waits, as a plain socket's shutdown does not: a client that reads
    /// nothing must not keep a closing connection (and its place) forever.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.get_mut().1.send_close_notify();
        if let Err(e) = self.send_encrypted() {
            if e.kind() != io::ErrorKind::WouldBlock {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(self.stream.get_mut().0).poll_shutdown(cx)
    }
}
