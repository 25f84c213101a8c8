//! The receivers' listeners: an accept loop that yields plain TCP or TLS
//! connections (rustls, optionally requiring a client certificate), used by
//! both the gRPC and the HTTP server.

use std::fs::File;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;

use super::ReceiveError;
use crate::config::TlsSection;

/// How long a client may take to complete the TLS handshake. Handshakes run
/// in their own tasks, so a slow client delays nobody else; the timeout
/// bounds how many idle half-open connections can pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for the server to pick them up.
const BACKLOG: usize = 64;

/// ALPN protocols offered by the gRPC receiver (gRPC clients such as
/// grpc-go refuse a TLS server that does not negotiate `h2`).
pub(super) const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN protocols offered by the HTTP receiver.
pub(super) const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Builds the rustls server configuration of an endpoint: its certificate
/// chain and key and, with `client_ca_file`, mandatory client certificates
/// signed by one of those CAs. Errors name the file at fault.
pub(super) fn server_config(
    tls: &TlsSection,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, ReceiveError> {
    let provider = Arc::new(ring::default_provider());
    let certs = read_certs(&tls.cert_file)?;
    let key = read_key(&tls.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| ReceiveError::TlsConfig {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            source,
        })?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file)? {
                roots.add(cert).map_err(|e| ReceiveError::TlsInvalid {
                    file: ca_file.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ReceiveError::TlsInvalid {
                    file: ca_file.clone(),
                    reason: format!("cannot verify client certificates with it: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| ReceiveError::TlsConfig {
                cert_file: tls.cert_file.clone(),
                key_file: tls.key_file.clone(),
                source,
            })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn open(path: &Path) -> Result<BufReader<File>, ReceiveError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| ReceiveError::TlsRead {
            file: path.to_owned(),
            source,
        })
}

/// Every certificate of a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReceiveError> {
    let mut reader = open(path)?;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReceiveError::TlsInvalid {
            file: path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ReceiveError::TlsInvalid {
            file: path.to_owned(),
            reason: "no CERTIFICATE section found".into(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ReceiveError> {
    let mut reader = open(path)?;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| ReceiveError::TlsInvalid {
            file: path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?
        .ok_or_else(|| ReceiveError::TlsInvalid {
            file: path.to_owned(),
            reason: "no PRIVATE KEY section found (PKCS#8, PKCS#1 or SEC1)".into(),
        })
}

/// One accepted connection, plain or TLS.
pub(super) struct Conn {
    io: ConnIo,
    local: Option<SocketAddr>,
    peer: SocketAddr,
}

enum ConnIo {
    Plain(TcpStream),
    // Boxed: a rustls connection is a large value and connections are moved
    // through a channel.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The client's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}

/// The connections of one listener. Accepting (and the TLS handshakes) run
/// in a background task that stops, closing the listening socket, when this
/// is dropped: the servers drop it as soon as shutdown starts, so new
/// clients are refused right away while in-flight requests finish.
pub(super) struct Incoming {
    rx: mpsc::Receiver<Conn>,
    local: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Incoming {
    /// Starts accepting on `listener`, with TLS when `tls` is set.
    pub(super) fn start(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        transport: &'static str,
    ) -> Result<Self, ReceiveError> {
        let local = listener.local_addr().map_err(ReceiveError::Listener)?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        let acceptor = tls.map(TlsAcceptor::from);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx, transport));
        Ok(Incoming {
            rx,
            local,
            accept_task,
        })
    }

    /// The address the listener is bound to.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }

    /// The next connection; `None` once the accept loop has ended.
    pub(super) async fn next_conn(&mut self) -> Option<Conn> {
        self.rx.recv().await
    }
}

impl futures::Stream for Incoming {
    type Item = Result<Conn, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.next_conn().await {
            Some(conn) => {
                let peer = conn.peer();
                (conn, peer)
            }
            // The accept loop only ends when this is dropped; never hand
            // out a connection again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<Conn>,
    transport: &'static str,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning,
                // the way hyper and axum do.
                tracing::warn!(transport, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        match &tls {
            None => {
                let conn = Conn {
                    io: ConnIo::Plain(stream),
                    local,
                    peer,
                };
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = Conn {
                                io: ConnIo::Tls(Box::new(tls)),
                                local,
                                peer,
                            };
                            // Fails only when the server has stopped.
                            let _ = tx.send(conn).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(transport, %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::warn!(
                                transport,
                                %peer,
                                "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}"
                            );
                        }
                    }
                });
            }
        }
    }
}

/// Errors that concern one connection only (the client went away before it
/// was accepted); the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
