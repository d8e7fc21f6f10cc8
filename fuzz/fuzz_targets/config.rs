//! The YAML config: any text is a config or an error naming the key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = hlsgate::config::Config::parse(text, Path::new("/nonexistent/fuzz.yaml")) {
        let _ = e.to_string();
    }
});
