//! hlsgate: a secure HLS edge on Pingora.
//!
//! - [`token`]: stateless stream tokens (HMAC-SHA256, key ids, viewer binding)
//! - [`playlist`]: the incremental m3u8 rewriter
//! - [`edge`]: the Pingora proxy that checks tokens and rewrites playlists
//! - [`config`], [`origin`]: the YAML config and stream origins
//! - [`store`]: users, sessions and streams over SQLite or PostgreSQL
//! - [`admin`]: the admin sidecar's HTTP API

pub mod admin;
pub mod cache;
pub mod config;
pub mod edge;
pub mod metrics;
pub mod origin;
pub mod playlist;
pub mod store;
pub mod token;
