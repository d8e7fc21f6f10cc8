//! hlsgate: a secure HLS edge on Pingora.
//!
//! - [`token`]: stateless stream tokens (HMAC-SHA256, key ids, viewer binding)
//! - [`playlist`]: the incremental m3u8 rewriter
//! - [`edge`]: the Pingora proxy that checks tokens and rewrites playlists
//! - [`config`], [`origin`]: the YAML config and stream origins

pub mod cache;
pub mod config;
pub mod edge;
pub mod metrics;
pub mod origin;
pub mod playlist;
pub mod token;
