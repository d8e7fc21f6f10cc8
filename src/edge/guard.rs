//! Bounds on viewers' connections that Pingora does not keep by itself, applied around its
//! HTTP app ([`Guarded`], a `ServerApp` wrapping the proxy):
//!
//! - a cap on open connections (`edge.max_connections`): past it, a new connection is
//!   answered 503 and closed at once; and one per client address
//!   (`edge.max_connections_per_ip`, an IPv6 /64 counting as one address), so that one
//!   client cannot take the whole cap;
//! - a deadline for a whole request header (`edge.header_timeout`). Pingora times each
//!   read of a request header (60 s), not the header: a client trickling one byte a
//!   second keeps a connection and its buffers forever (slowloris). [`HeaderDeadline`]
//!   watches the bytes read for the end of each header (`\r\n\r\n`) and fails the read
//!   once a header has taken longer than the deadline.
//!
//! - the TLS handshake of `edge.tls.listen` done here rather than by Pingora's listener,
//!   so a connection counts against the cap from its accept (Pingora counts nothing until
//!   its handshake is done), and a handshake has `edge.header_timeout` (Pingora's is 60 s):
//!   stalled handshakes cannot pile up file descriptors past the cap.
//!
//! NOTE: the deadline is for HTTP/1 request headers (request bodies are refused, 405,
//! since only GET and HEAD are served). HTTP/2 (TLS with ALPN h2) is bounded by
//! `h2_idle_timeout` instead.

use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::protocols::{Peek, ALPN};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The bounds, changed in place by a config reload; and the connections open now (shared
/// by the edge's plain and TLS listeners).
#[derive(Debug, Default)]
pub struct Limits {
    pub open: AtomicUsize,
    pub max: AtomicUsize,
    pub header_timeout_ms: AtomicU64,
    /// `edge.idle_timeout`: how long a kept-alive HTTP/1 connection may wait for its next
    /// request.
    pub idle_timeout_ms: AtomicU64,
    /// `edge.max_connections_per_ip` (0: no cap) and the connections open per address.
    pub per_ip_max: AtomicUsize,
    per_ip: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl Limits {
    pub fn new(edge: &crate::config::Edge) -> Arc<Limits> {
        let l = Arc::new(Limits::default());
        l.set(edge);
        l
    }

    /// Take `edge`'s bounds (at start and on every reload).
    pub fn set(&self, edge: &crate::config::Edge) {
        self.max.store(edge.max_connections, Ordering::Relaxed);
        self.per_ip_max
            .store(edge.max_connections_per_ip, Ordering::Relaxed);
        self.header_timeout_ms
            .store(edge.header_timeout.as_millis() as u64, Ordering::Relaxed);
        self.idle_timeout_ms.store(
            edge.idle_timeout.as_millis().max(1) as u64,
            Ordering::Relaxed,
        );
    }

    /// Count a connection from `ip` (IPv6 by its /64, see [`crate::net::subscriber`]):
    /// `None` when that address already holds the cap. The count drops when the guard does.
    fn admit_ip(&self, ip: std::net::IpAddr) -> Option<IpGuard<'_>> {
        let max = self.per_ip_max.load(Ordering::Relaxed);
        let key = crate::net::subscriber(ip);
        let mut m = self.per_ip.lock();
        let n = m.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpGuard { limits: self, key })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// A `ServerApp` with a connection cap and a request-header deadline around `inner`.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Arc<Limits>,
    /// Where requests Pingora's parser refuses are logged (see [`Refused`]).
    access: Option<Arc<super::access::AccessLog>>,
    /// The TLS listener's port and its acceptor: connections accepted on that port (a
    /// plain TCP listener for Pingora) are TLS, their handshake done in `process_new`.
    tls: Option<(u16, Acceptor)>,
}

impl<A> Guarded<A> {
    pub fn new(
        inner: Arc<A>,
        limits: Arc<Limits>,
        access: Option<Arc<super::access::AccessLog>>,
    ) -> Guarded<A> {
        Guarded {
            inner,
            limits,
            access,
            tls: None,
        }
    }

    /// Connections accepted on `port` speak TLS (`settings`, built once: its certificate
    /// resolver takes renewals).
    pub fn with_tls(mut self, port: u16, settings: TlsSettings) -> Guarded<A> {
        self.tls = Some((port, settings.build()));
        self
    }

    /// The handshake of a connection accepted on the TLS listener, within
    /// `edge.header_timeout`; `None` when it failed or took too long (the connection is
    /// closed; a client that cannot complete a handshake gets nothing else).
    async fn handshake(&self, acceptor: &Acceptor, session: Stream) -> Option<Stream> {
        let t = Duration::from_millis(self.limits.header_timeout_ms.load(Ordering::Relaxed));
        match tokio::time::timeout(t, acceptor.tls_handshake(Plain(session))).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::debug!(error = %e, "TLS handshake failed");
                }
                METRICS.denials.with_label_values(&["tls_handshake"]).inc();
                None
            }
        }
    }
}

/// Whether `session` was accepted on `port`.
fn accepted_on(session: &Stream, port: u16) -> bool {
    session
        .get_socket_digest()
        .and_then(|d| d.local_addr().map(|a| a.as_inet().map(|a| a.port())))
        .flatten()
        == Some(port)
}

/// A request Pingora's own parser refused (an invalid header line, say): Pingora answers
/// it 400 itself, before any of the proxy's phases, so neither the access log nor the
/// metrics would hear of it. Its answer is the one response the edge sends with Pingora's
/// `Server` header; the connection sees it written and records it here.
pub struct Refused {
    access: Option<Arc<super::access::AccessLog>>,
    client: Option<std::net::IpAddr>,
    tls: bool,
    started: Instant,
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused")
            .field("client", &self.client)
            .finish()
    }
}

impl Refused {
    /// Whether `head` (the start of a write) is Pingora's own 400 for a request it could
    /// not parse.
    fn is_parser_400(head: &[u8]) -> bool {
        head.starts_with(b"HTTP/1.1 400 ")
            && memchr::memmem::find(head, b"\r\nServer: Pingora\r\n").is_some()
    }

    fn record(&self) {
        METRICS.request(crate::media::Kind::Other, "400");
        METRICS.denials.with_label_values(&["bad_request"]).inc();
        if let Some(log) = &self.access {
            log.log(&super::access::Entry {
                client: self.client,
                method: "-",
                path: "-",
                status: 400,
                bytes: 0,
                duration: self.started.elapsed(),
                stream: "-",
                kind: crate::media::Kind::Other.label(),
                cache: "-",
                deny: "bad_request",
                proto: "h1",
                tls: self.tls,
                country: None,
                host: "-",
            });
        }
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 35\r\nConnection: close\r\nRetry-After: 1\r\nX-Content-Type-Options: nosniff\r\n\
\r\n{\"error\":\"too many open connections\"}";

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let l = &self.limits;
        let open = l.open.fetch_add(1, Ordering::AcqRel) + 1;
        let _open = OpenGuard(&l.open);
        let tls = self
            .tls
            .as_ref()
            .filter(|(port, _)| accepted_on(&session, *port));
        let peer = session
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // (counted only while the cap is on: no map of every address otherwise)
        let _per_ip = match peer.filter(|_| l.per_ip_max.load(Ordering::Relaxed) > 0) {
            Some(ip) => match l.admit_ip(ip) {
                Some(g) => Some(g),
                None => return refuse(session, tls.is_none(), "ip_connection_limit").await,
            },
            None => None,
        };
        if open > l.max.load(Ordering::Relaxed) {
            return refuse(session, tls.is_none(), "connection_limit").await;
        }
        let h2 = if let Some((_, acceptor)) = tls {
            let tls = self.handshake(acceptor, session).await?;
            let h2 = matches!(tls.selected_alpn_proto(), Some(ALPN::H2));
            session = Box::new(super::packed::Packed::new(tls, h2));
            h2
        } else {
            false
        };
        // HTTP/2 (ALPN h2) is Pingora's own: its frames are not HTTP/1 header lines, and
        // h2 bounds its idle connections itself (`h2_idle_timeout`). So is h2c, were it on.
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        if h2 || h2c {
            return self.inner.process_new(session, shutdown).await;
        }
        let t = Duration::from_millis(l.header_timeout_ms.load(Ordering::Relaxed));
        let refused = Refused {
            access: self.access.clone(),
            client: peer,
            tls: session.get_ssl_digest().is_some(),
            started: Instant::now(),
        };
        let mut deadline = HeaderDeadline::new(session, t);
        deadline.refused = Some(refused);
        let stream: Stream = Box::new(deadline);
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Guarded<A> {
    /// Pingora's HTTP/1 keep-alive loop (`HttpServerApp`'s `process_new`), with the wait
    /// for each next request done here. Pingora waits inside `process_new_http`, whose
    /// future holds the whole proxy's state (tens of KiB) for as long as the connection
    /// idles; here an idle connection holds only this small future, its socket and the
    /// header deadline, and the proxy's state exists while a request is being served.
    async fn serve_http1(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut result = self.inner.process_new_http(session, shutdown).await;
        // One timer and one shutdown watch for the connection's life, not one of each per
        // request: registering and dropping them for every wait cost about 1.4 µs a
        // request on a kept-alive connection (7 % of a cached playlist's answer).
        let mut stop = shutdown.clone();
        let stopped = stop.changed();
        tokio::pin!(stopped);
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        while let Some((mut stream, settings)) = result.map(|r| r.consume()) {
            if *shutdown.borrow() || !self.idle(&mut stream, &mut timer, stopped.as_mut()).await {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(s) = settings {
                s.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
    }

    /// Wait for the first byte of the next request on a kept-alive connection: `false`
    /// when it closed, failed, stayed idle for `edge.idle_timeout`, or the edge is
    /// shutting down (`stopped`: an idle connection is closed at once then). The bytes
    /// waited for are read for real (see [`HeaderDeadline`]'s `try_peek`), TLS ones too.
    /// `timer` is the connection's: it is moved only when it goes off before this wait's
    /// end (at most once per idle period), so a busy connection does not re-register a
    /// timer for every request.
    async fn idle(
        &self,
        stream: &mut Stream,
        timer: &mut Pin<Box<Sleep>>,
        mut stopped: Pin<&mut impl std::future::Future>,
    ) -> bool {
        let idle = Duration::from_millis(self.limits.idle_timeout_ms.load(Ordering::Relaxed));
        let until = tokio::time::Instant::now() + idle;
        if timer.deadline() > until {
            timer.as_mut().reset(until);
        }
        let mut first = [0u8; 1];
        let peek = stream.try_peek(&mut first);
        tokio::pin!(peek);
        loop {
            tokio::select! {
                r = &mut peek => return r.is_ok(),
                _ = timer.as_mut() => {
                    if tokio::time::Instant::now() >= until {
                        return false;
                    }
                    timer.as_mut().reset(until);
                }
                _ = &mut stopped => return false,
            }
        }
    }
}

/// The traits of Pingora's `IO` that a wrapper of a `Stream` (in its field `$field`) passes
/// to the stream as they are: shutdown, identity, TLS facts, digests.
macro_rules! delegate_stream_digests {
    ($t:ty, $field:tt) => {
        #[async_trait::async_trait]
        impl pingora_core::protocols::Shutdown for $t {
            async fn shutdown(&mut self) {
                pingora_core::protocols::Shutdown::shutdown(&mut *self.$field).await
            }
        }

        impl pingora_core::protocols::UniqueID for $t {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                self.$field.id()
            }
        }

        impl pingora_core::protocols::Ssl for $t {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                self.$field.get_ssl()
            }
            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
                self.$field.get_ssl_digest()
            }
            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                self.$field.selected_alpn_proto()
            }
        }

        impl pingora_core::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                self.$field.get_timing_digest()
            }
            fn get_read_pending_time(&self) -> std::time::Duration {
                self.$field.get_read_pending_time()
            }
            fn get_write_pending_time(&self) -> std::time::Duration {
                self.$field.get_write_pending_time()
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                self.$field.get_proxy_digest()
            }
            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                self.$field.set_proxy_digest(digest)
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $t {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                self.$field.get_socket_digest()
            }
            fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
                self.$field.set_socket_digest(digest)
            }
        }
    };
}
pub(crate) use delegate_stream_digests;

/// A connection as Pingora's listener gave it, as a type the TLS acceptor takes.
#[derive(Debug)]
struct Plain(Stream);

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

delegate_stream_digests!(Plain, 0);

#[async_trait]
impl Peek for Plain {}

/// A connection past a cap: counted under `reason`, answered 503 and closed. (A TLS client
/// could not read a plain answer: it is only closed.)
async fn refuse(mut session: Stream, plain: bool, reason: &str) -> Option<Stream> {
    METRICS.denials.with_label_values(&[reason]).inc();
    if plain {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = session.write_all(BUSY).await;
            let _ = session.flush().await;
        })
        .await;
    }
    None
}

struct OpenGuard<'a>(&'a AtomicUsize);

/// One connection counted against its address (see [`Limits::admit_ip`]).
struct IpGuard<'a> {
    limits: &'a Limits,
    key: std::net::IpAddr,
}

impl Drop for IpGuard<'_> {
    fn drop(&mut self) {
        let mut m = self.limits.per_ip.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the reader is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the idle (keep-alive) timeout is Pingora's.
    Idle,
    /// Inside a request header; `line_empty`: nothing but `\r` since the last `\n` (the
    /// next `\n` ends the header; CRLF and bare LF line ends both count).
    Header { line_empty: bool },
}

/// A connection whose request headers must each arrive within `timeout`.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    phase: Phase,
    /// When the current header began; the timer is only armed (from it) when a read of
    /// the header has to wait, so a request that arrives whole costs a clock read.
    started: Instant,
    armed: bool,
    deadline: Pin<Box<Sleep>>,
    /// A response header is written but may sit in Pingora's write buffer: flushed as
    /// soon as the connection has to wait for anything (see `poll_read`).
    header_pending: bool,
    /// Bytes read by `try_peek` (the wait for a kept-alive connection's next request) and
    /// not yet read by Pingora: `early[early_at..]`.
    early: Vec<u8>,
    early_at: usize,
    /// Records the requests Pingora's parser refuses.
    refused: Option<Refused>,
}

/// How much the wait for the next request reads at once: a player's whole request (a
/// longer one is read on by Pingora as usual); on the stack of one poll, not held while the
/// connection waits. Pingora's own peek reads one byte and hands it back, so its parser
/// first sees a one-byte request and reads again: a `recv` per request more than reading
/// the request in one go.
const EARLY_READ: usize = 2048;

impl HeaderDeadline {
    /// A new connection: its first request header must be complete within `timeout` of
    /// the accept (a connection that sends nothing is cut off as well).
    pub fn new(inner: Stream, timeout: Duration) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            timeout,
            phase: Phase::Header { line_empty: false },
            started: Instant::now(),
            armed: false,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            header_pending: false,
            early: Vec::new(),
            early_at: 0,
            refused: None,
        }
    }

    /// Follow the header state over bytes just read: line by line (`memchr` finds each
    /// line end; only a line's first bytes are looked at to see whether it is empty).
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                // stray line ends between requests (RFC 9112 §2.2)
                Phase::Idle => match bytes.iter().position(|&b| b != b'\r' && b != b'\n') {
                    None => return,
                    Some(i) => {
                        self.started = Instant::now();
                        self.armed = false;
                        self.phase = Phase::Header { line_empty: false };
                        bytes = &bytes[i + 1..];
                    }
                },
                Phase::Header { line_empty } => {
                    let end = memchr::memchr(b'\n', bytes);
                    let line = &bytes[..end.unwrap_or(bytes.len())];
                    let empty = line_empty && line.iter().all(|&b| b == b'\r');
                    match end {
                        None => {
                            self.phase = Phase::Header { line_empty: empty };
                            return;
                        }
                        Some(i) => {
                            self.phase = if empty {
                                Phase::Idle
                            } else {
                                Phase::Header { line_empty: true }
                            };
                            bytes = &bytes[i + 1..];
                        }
                    }
                }
            }
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if this.early_at < this.early.len() {
            let n = buf.remaining().min(this.early.len() - this.early_at);
            buf.put_slice(&this.early[this.early_at..this.early_at + n]);
            this.early_at += n;
            if this.early_at == this.early.len() {
                // All read: nothing is held until the next wait reads ahead again.
                this.early = Vec::new();
                this.early_at = 0;
            }
            this.scan(&buf.filled()[before..]);
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scan(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Pingora does not flush a response header while a body is to follow: a
                // viewer of a slow origin would see nothing until body bytes filled the
                // write buffer. While the connection waits (Pingora polls the viewer's side
                // for a hang-up meanwhile), the header goes out.
                if this.header_pending {
                    if let Poll::Ready(Ok(())) = Pin::new(&mut this.inner).poll_flush(cx) {
                        this.header_pending = false;
                    }
                }
                if matches!(this.phase, Phase::Header { .. }) {
                    if !this.armed {
                        let at = this.started + this.timeout;
                        this.deadline.as_mut().reset(at);
                        this.armed = true;
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        METRICS.denials.with_label_values(&["header_timeout"]).inc();
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "request header took too long",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if buf.starts_with(b"HTTP/1.") {
            this.header_pending = true;
            if let (Some(refused), true) = (&mut this.refused, Refused::is_parser_400(buf)) {
                refused.record();
                refused.started = Instant::now();
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.header_pending = false;
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

delegate_stream_digests!(HeaderDeadline, inner);

/// Peeking reads the bytes for real, into `early`, and `poll_read` hands them out first.
/// Each read goes into a buffer on the stack of that one poll, so a connection waiting for
/// its next request holds no buffer; `early` is allocated for what arrived and freed once
/// Pingora has read it.
#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        while self.early.len() - self.early_at < buf.len() {
            let n = std::future::poll_fn(|cx| {
                let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); EARLY_READ];
                let mut rb = ReadBuf::uninit(&mut tmp);
                match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        self.early.extend_from_slice(rb.filled());
                        Poll::Ready(Ok(rb.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        buf.copy_from_slice(&self.early[self.early_at..self.early_at + buf.len()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline-watched connection and the other end of it.
    fn pair() -> (HeaderDeadline, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(c).unwrap();
        let s = pingora_core::protocols::l4::stream::Stream::from(tcp);
        let (peer, _) = l.accept().unwrap();
        (
            HeaderDeadline::new(Box::new(s), Duration::from_secs(1)),
            peer,
        )
    }

    fn dl() -> HeaderDeadline {
        // scan() does no I/O; any connected stream will do.
        pair().0
    }

    /// The header state machine a byte at a time: what `scan` must agree with.
    fn scan_bytewise(mut phase: Phase, bytes: &[u8]) -> (Phase, usize) {
        let mut starts = 0;
        for &b in bytes {
            phase = match (phase, b) {
                (Phase::Idle, b'\r' | b'\n') => Phase::Idle,
                (Phase::Idle, _) => {
                    starts += 1;
                    Phase::Header { line_empty: false }
                }
                (Phase::Header { line_empty: true }, b'\n') => Phase::Idle,
                (Phase::Header { .. }, b'\n') => Phase::Header { line_empty: true },
                (p @ Phase::Header { .. }, b'\r') => p,
                (Phase::Header { .. }, _) => Phase::Header { line_empty: false },
            };
        }
        (phase, starts)
    }

    #[tokio::test]
    async fn the_line_scan_agrees_with_the_bytewise_state_machine() {
        // Requests made of the bytes that matter (CR, LF, others), cut into reads at
        // arbitrary points: the same phase after every read, and a header's clock started
        // exactly when a request begins.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut d = dl();
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 5 {
                    0 | 1 => b'\n',
                    2 => b'\r',
                    _ => b'a',
                })
                .collect();
            let before = d.phase;
            let t0 = d.started;
            let (want, starts) = scan_bytewise(before, &bytes);
            std::thread::sleep(Duration::from_micros(2));
            d.scan(&bytes);
            assert_eq!(d.phase, want, "{before:?} then {bytes:?}");
            assert_eq!(d.started != t0, starts > 0, "{before:?} then {bytes:?}");
        }
    }

    #[tokio::test]
    async fn a_peek_reads_the_waiting_requests_once_and_reads_hand_them_out() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let (mut d, mut peer) = pair();
        let sent = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n";
        peer.write_all(sent).unwrap();
        let mut first = [0u8; 1];
        assert!(d.try_peek(&mut first).await.unwrap());
        assert_eq!(&first, b"G");
        assert_eq!(d.early, sent, "read ahead for real, not one byte at a time");
        let mut buf = [0u8; 10];
        d.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET /a HTT", "handed out first, in order");
        let mut buf = vec![0u8; 4096];
        let n = d.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &sent[10..], "the rest of what was read ahead");
        assert_eq!(d.early.capacity(), 0, "nothing held while waiting for more");
        assert!(
            matches!(d.phase, Phase::Header { .. }),
            "the deadline saw the bytes: inside the second header"
        );
        // Nothing read ahead: the next peek waits for the next bytes.
        peer.write_all(b"Host: y\r\n\r\n").unwrap();
        assert!(d.try_peek(&mut first).await.unwrap());
        assert_eq!(&first, b"H");
        let n = d.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"Host: y\r\n\r\n");
        assert_eq!(d.phase, Phase::Idle);
        drop(peer);
        let err = d.try_peek(&mut first).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "closed");
    }

    #[tokio::test]
    async fn headers_are_tracked_across_reads_and_pipelined_requests() {
        let mut d = dl();
        assert!(
            matches!(d.phase, Phase::Header { .. }),
            "the deadline runs from the accept"
        );
        d.scan(b"GET / HTTP/1.1\r\nHo");
        assert!(matches!(d.phase, Phase::Header { .. }));
        d.scan(b"st: x\r\n\r");
        assert_eq!(d.phase, Phase::Header { line_empty: true });
        d.scan(b"\n");
        assert_eq!(d.phase, Phase::Idle);
        d.scan(b"\r\nGET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nX: y");
        assert!(matches!(d.phase, Phase::Header { .. }));
        d.scan(b"\n\n");
        assert_eq!(d.phase, Phase::Idle, "LF-only line ends");
    }
}
