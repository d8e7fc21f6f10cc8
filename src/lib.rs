//! hlsgate: a secure HLS edge on Pingora.
//!
//! - [`token`]: stateless stream tokens (HMAC-SHA256, key ids, viewer binding)
//! - [`playlist`]: the incremental m3u8 rewriter
//! - [`playback`]: the edge's URL grammar (`/api/hls/{token}/{stream}/{path}`), built and
//!   parsed in one place
//! - [`edge`]: the Pingora proxy; [`edge::admission`] decides every request without sockets
//! - [`config`], [`origin`], [`stream`]: the YAML config, stream origins and where they may point
//! - [`net`], [`media`]: addresses (internal, client IP) and object kinds / media types
//! - [`private`]: the folders hlsgate creates for its keys, store and upgrade socket (0700)
//! - [`store`]: users, sessions and streams over SQLite or PostgreSQL
//! - [`admin`]: the admin sidecar's HTTP API

pub mod admin;
pub mod cache;
pub mod config;
pub mod edge;
pub mod geoip;
pub mod media;
pub mod metrics;
pub mod net;
pub mod origin;
pub mod playback;
pub mod playlist;
pub mod private;
pub mod recent;
pub mod rules;
pub mod server;
pub mod store;
pub mod stream;
pub mod tls;
pub mod token;
