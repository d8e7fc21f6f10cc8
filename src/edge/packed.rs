//! Whole TLS records for what Pingora writes to a viewer over TLS ([`Packed`]).
//!
//! rustls seals each write it is given into records of its own: a write of 16,393 bytes
//! becomes a record of 16,384 bytes and one of 9. Pingora's HTTP/2 writes every DATA frame
//! as its own write, its 9-byte header chained to its 16,384-byte payload (the client's
//! `SETTINGS_MAX_FRAME_SIZE`), so a segment over h2 went out as two records per frame, a
//! full one and a 9-byte one: twice the records a TLS client has to read and open (an h2load
//! client, OpenSSL, read 346 times per 1 MiB segment from hlsgate against 199 from nginx,
//! and was the bottleneck of the benchmark). And HTTP/1.1 writes a response's header and its
//! body separately: two records for a small playlist where nginx sends one.
//!
//! [`Packed`] sits between Pingora's HTTP layer and the TLS stream and hands rustls whole
//! records:
//!
//! - HTTP/2: whatever is written is passed on in multiples of a full record; the remainder
//!   (under one record, usually a few frame headers' worth) is copied and goes out in front
//!   of the next write, or on a flush. h2 flushes after every DATA frame (its codec holds one
//!   frame at a time), so the first flush after a write is put off by one turn of the
//!   connection's task: it is woken at once, and either writes the next frame (the remainder
//!   goes out with it) or, with nothing more to send, flushes again, and the remainder goes
//!   out then. Nothing waits for a timer or for another write.
//! - HTTP/1.1: a response header whose `Content-Length` body fits with it in one record is
//!   held (copied) and goes out in front of the body, in one record. Nothing else is held:
//!   Pingora flushes only at the end of a `Content-Length` body, and a body arriving slowly
//!   from an origin must not wait for a record to fill. A held header also goes out on any
//!   flush (a response with no body, and `HeaderDeadline`'s flush while the viewer's side
//!   waits).
//!
//! Nothing is held once a flush has completed, so an idle connection holds no buffer.

use pingora_core::protocols::{Peek, Stream};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext one TLS record carries (RFC 8446 §5.1), rustls's fragment size.
pub const RECORD: usize = 16 * 1024;

/// The most of a vectored write passed on in one call (h2 writes two slices: a frame's
/// header and its payload).
const MAX_SLICES: usize = 16;

/// A TLS connection whose writes go to rustls as whole records (see the module's notes).
#[derive(Debug)]
pub struct Packed {
    inner: Stream,
    h2: bool,
    /// Plaintext accepted from the writer and not yet given to the TLS stream; always
    /// shorter than a record.
    pending: Vec<u8>,
    /// h2: a flush was put off (see the module's notes); the next one with no write
    /// between them drains `pending`.
    deferred: bool,
}

impl Packed {
    /// `h2`: the connection speaks HTTP/2 (ALPN), else HTTP/1.1.
    pub fn new(inner: Stream, h2: bool) -> Packed {
        Packed {
            inner,
            h2,
            pending: Vec::new(),
            deferred: false,
        }
    }

    /// Whether a write of `bufs` (`total` bytes) is kept back, whole, for the next.
    fn holds(&self, bufs: &[IoSlice<'_>], total: usize) -> bool {
        if self.h2 {
            return self.pending.len() + total < RECORD;
        }
        match bufs {
            [one] if self.pending.is_empty() => small_response_header(one),
            _ => false,
        }
    }

    /// Give `pending` to the TLS stream, all of it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut *self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Nothing held between responses (an idle connection keeps no buffer).
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }
}

/// Whether `head` is a whole HTTP/1 response header (not a 1xx) with a `Content-Length`
/// body that fits in the same record as the header.
fn small_response_header(head: &[u8]) -> bool {
    if !head.starts_with(b"HTTP/1.") || head.get(9) == Some(&b'1') || !head.ends_with(b"\r\n\r\n") {
        return false;
    }
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .find(|l| l.len() > NAME.len() && l[..NAME.len()].eq_ignore_ascii_case(NAME))
        .and_then(|l| std::str::from_utf8(&l[NAME.len()..]).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| len > 0 && head.len() + len <= RECORD)
}

impl AsyncRead for Packed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Packed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let bufs = &bufs[..bufs.len().min(MAX_SLICES)];
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        this.deferred = false;
        if this.holds(bufs, total) {
            for b in bufs {
                this.pending.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        loop {
            let held = this.pending.len();
            // h2: whole records only, the rest held; h1: the held header and all of this.
            let send = if this.h2 {
                (held + total) / RECORD * RECORD
            } else {
                held + total
            };
            let mut slices = [IoSlice::new(&[]); MAX_SLICES + 1];
            let mut n = 0;
            let mut left = send;
            for b in std::iter::once(&this.pending[..]).chain(bufs.iter().map(|b| &**b)) {
                if left == 0 {
                    break;
                }
                let take = b.len().min(left);
                if take > 0 {
                    slices[n] = IoSlice::new(&b[..take]);
                    n += 1;
                    left -= take;
                }
            }
            let written = match Pin::new(&mut *this.inner).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(w)) => w,
                other => return other,
            };
            if written <= held {
                // Only (some of) what was held went: the writer's bytes are still its own.
                this.pending.drain(..written);
                continue;
            }
            this.pending.clear();
            let taken = written - held;
            if taken < send - held {
                return Poll::Ready(Ok(taken));
            }
            // All the whole records went: the remainder (under one record) is held.
            let mut skip = taken;
            for b in bufs {
                let from = skip.min(b.len());
                skip -= from;
                this.pending.extend_from_slice(&b[from..]);
            }
            return Poll::Ready(Ok(total));
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.h2 && !self.pending.is_empty() && !self.deferred {
            // Put off by one turn of the task, woken now (see the module's notes); the
            // whole records already written are flushed.
            self.deferred = true;
            cx.waker().wake_by_ref();
        } else {
            std::task::ready!(self.poll_drain(cx))?;
            self.deferred = false;
        }
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

super::guard::delegate_stream_digests!(Packed, inner);

#[async_trait::async_trait]
impl Peek for Packed {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A TLS stream stand-in that records each write it is given (each would be sealed
    /// into records of its own), taking at most `limit` bytes per call.
    #[derive(Debug, Default)]
    struct Writes {
        calls: Arc<Mutex<Vec<Vec<u8>>>>,
        limit: usize,
    }

    impl AsyncRead for Writes {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(_cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut got = Vec::new();
            for b in bufs {
                got.extend_from_slice(b);
            }
            got.truncate(self.limit);
            let n = got.len();
            self.calls.lock().unwrap().push(got);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[async_trait::async_trait]
    impl pingora_core::protocols::Shutdown for Writes {
        async fn shutdown(&mut self) {}
    }
    impl pingora_core::protocols::UniqueID for Writes {
        fn id(&self) -> pingora_core::protocols::UniqueIDType {
            0
        }
    }
    impl pingora_core::protocols::Ssl for Writes {}
    impl pingora_core::protocols::GetTimingDigest for Writes {
        fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
            vec![]
        }
    }
    impl pingora_core::protocols::GetProxyDigest for Writes {
        fn get_proxy_digest(
            &self,
        ) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
            None
        }
    }
    impl pingora_core::protocols::GetSocketDigest for Writes {
        fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
            None
        }
    }
    #[async_trait::async_trait]
    impl Peek for Writes {}

    fn packed(h2: bool, limit: usize) -> (Packed, Arc<Mutex<Vec<Vec<u8>>>>) {
        let w = Writes {
            limit,
            ..Writes::default()
        };
        let calls = w.calls.clone();
        (Packed::new(Box::new(w), h2), calls)
    }

    /// What the writer wrote, through `p`, as h2's codec writes a frame: header and payload
    /// as two slices, until all is taken.
    async fn write_frame(p: &mut Packed, header: &[u8], payload: &[u8]) {
        let all: Vec<u8> = [header, payload].concat();
        let mut at = 0;
        while at < all.len() {
            let (h, b) = if at < header.len() {
                (&header[at..], payload)
            } else {
                (&[][..], &payload[at - header.len()..])
            };
            let n = std::future::poll_fn(|cx| {
                Pin::new(&mut *p).poll_write_vectored(cx, &[IoSlice::new(h), IoSlice::new(b)])
            })
            .await
            .unwrap();
            assert!(n > 0);
            at += n;
        }
    }

    #[tokio::test]
    async fn h2_frames_go_out_as_whole_records_and_the_rest_on_flush() {
        use tokio::io::AsyncWriteExt;
        for limit in [usize::MAX, 40_000, 5_000] {
            let (mut p, calls) = packed(true, limit);
            let payload: Vec<u8> = (0..RECORD).map(|i| (i % 251) as u8).collect();
            let mut want = Vec::new();
            for i in 0..64u8 {
                let header = [i; 9];
                write_frame(&mut p, &header, &payload).await;
                // h2's codec flushes after each DATA frame: put off, not drained
                p.flush().await.unwrap();
                want.extend_from_slice(&header);
                want.extend_from_slice(&payload);
            }
            assert!(p.pending.len() < RECORD && !p.pending.is_empty());
            // the connection's next turn, nothing more written: its flush drains
            p.flush().await.unwrap();
            assert!(
                p.pending.is_empty() && p.pending.capacity() == 0,
                "nothing held"
            );
            let calls = calls.lock().unwrap();
            assert_eq!(calls.concat(), want, "every byte, in order (limit {limit})");
            if limit == usize::MAX {
                // 64 frames of 16,393 bytes: 64 whole records and a last one of 576 bytes.
                let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
                assert!(
                    sizes[..sizes.len() - 1].iter().all(|&n| n % RECORD == 0),
                    "{sizes:?}"
                );
                assert_eq!(*sizes.last().unwrap(), 64 * 9);
            }
        }
    }

    #[tokio::test]
    async fn h2_small_writes_wait_for_the_flush() {
        use tokio::io::AsyncWriteExt;
        let (mut p, calls) = packed(true, usize::MAX);
        p.write_all(b"headers frame").await.unwrap();
        p.write_all(b"data frame").await.unwrap();
        assert!(calls.lock().unwrap().is_empty());
        // the first flush is put off and wakes the task; the second one drains
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut p).poll_flush(&mut cx).is_ready());
        assert!(
            woken.0.load(std::sync::atomic::Ordering::SeqCst),
            "woken to flush again"
        );
        assert!(calls.lock().unwrap().is_empty());
        assert!(Pin::new(&mut p).poll_flush(&mut cx).is_ready());
        assert_eq!(
            *calls.lock().unwrap(),
            vec![b"headers framedata frame".to_vec()]
        );
        // a shutdown sends what is held at once
        p.write_all(b"goaway").await.unwrap();
        p.shutdown().await.unwrap();
        assert_eq!(calls.lock().unwrap()[1], b"goaway");
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nContent-Length: 12\r\n\r\n";

    #[tokio::test]
    async fn h1_a_small_responses_header_and_body_are_one_write() {
        use tokio::io::AsyncWriteExt;
        let (mut p, calls) = packed(false, usize::MAX);
        p.write_all(HEAD).await.unwrap();
        assert!(
            calls.lock().unwrap().is_empty(),
            "the header waits for its body"
        );
        p.write_all(b"#EXTM3U\na.ts").await.unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            vec![[HEAD, b"#EXTM3U\na.ts"].concat()]
        );
        assert!(p.pending.is_empty());
        // A header flushed on its own (no body follows, or the body is slow) goes out then.
        p.write_all(HEAD).await.unwrap();
        p.flush().await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 2);
        assert_eq!(calls.lock().unwrap()[1], HEAD);
    }

    #[tokio::test]
    async fn h1_holds_nothing_else() {
        use tokio::io::AsyncWriteExt;
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let informational = b"HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\n\r\n";
        for head in [&big[..], chunked, informational, b"body bytes"] {
            let (mut p, calls) = packed(false, usize::MAX);
            p.write_all(head).await.unwrap();
            assert_eq!(*calls.lock().unwrap(), vec![head.to_vec()], "{head:?}");
        }
        // a body after a held header is passed on whole, however it is cut
        let (mut p, calls) = packed(false, 100);
        p.write_all(HEAD).await.unwrap();
        p.write_all(b"#EXTM3U\na.ts").await.unwrap();
        p.flush().await.unwrap();
        assert_eq!(
            calls.lock().unwrap().concat(),
            [HEAD, b"#EXTM3U\na.ts"].concat()
        );
    }

    #[test]
    fn small_response_headers() {
        assert!(small_response_header(HEAD));
        assert!(small_response_header(
            b"HTTP/1.1 200 OK\r\ncontent-length:  16000\r\n\r\n"
        ));
        assert!(!small_response_header(
            b"HTTP/1.1 200 OK\r\ncontent-length: 16384\r\n\r\n"
        ));
        assert!(!small_response_header(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!small_response_header(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n"
        ));
        assert!(!small_response_header(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"
        ));
    }
}
