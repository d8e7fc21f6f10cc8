//! The ceiling for `bench/ceiling.sh`: a bare Pingora 0.9 service answering every request
//! with one file's bytes (a shared `Bytes`, no copy) from `request_filter`: no token, no
//! cache lookup, no metrics, no log. Whatever hlsgate does to a cached segment on top of
//! this is measured as the ratio of the two under the same load.
//!
//!   cargo run --release --example bare_pingora -- 127.0.0.1:18090 FILE \
//!       [THREADS [WORK_STEALING [TLS_LISTEN CERT KEY]]]
//!
//! THREADS (default 2) and WORK_STEALING (`true`/`false`, default `false`) as hlsgate's
//! `edge.threads` and `edge.work_stealing`, so the two run the same runtime. With
//! TLS_LISTEN, CERT and KEY it also answers over TLS (h2 and http/1.1 by ALPN) with
//! hlsgate's own TLS set-up (`hlsgate::tls::Certs`, rustls), as `edge.tls` does
//! (`bench/tls.sh`).
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

struct Bare {
    body: Bytes,
    length: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let mut h = ResponseHeader::build(200, Some(2))?;
        h.insert_header("Content-Type", "video/mp2t")?;
        h.insert_header("Content-Length", self.length.as_str())?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(self.body.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        unreachable!("every request is answered in request_filter")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("listen address");
    let file = args.next().expect("file to serve");
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("threads"));
    let work_stealing: bool = args
        .next()
        .is_some_and(|w| w.parse().expect("true or false"));
    let tls = args.next().map(|listen| {
        let (cert, key) = (args.next().expect("CERT"), args.next().expect("KEY"));
        let t = hlsgate::config::Tls {
            listen: listen.parse().expect("TLS listen address"),
            pairs: vec![(cert.into(), key.into())],
        };
        (
            listen,
            hlsgate::tls::Certs::load(&t, "bare").expect("certificate and key"),
        )
    });
    let body = Bytes::from(std::fs::read(&file).expect("readable file"));
    let conf = ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let bare = Bare {
        length: body.len().to_string(),
        body,
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, bare);
    service.add_tcp(&listen);
    if let Some((listen, certs)) = &tls {
        service.add_tls_with_settings(listen, None, certs.settings(true));
    }
    server.add_service(service);
    server.run_forever();
}
