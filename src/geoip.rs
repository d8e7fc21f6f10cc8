//! The viewer's country, from a MaxMind-format database (`geoip.database`: GeoLite2-Country,
//! GeoIP2-Country, DB-IP Lite Country, or any `.mmdb` whose records hold
//! `country.iso_code`), read by the `maxminddb` crate.
//!
//! - Looked up only when an access rule names countries, and remembered per address for a
//!   minute (100,000 addresses at most).
//! - An address the database does not know is `XX` ([`crate::rules::UNKNOWN`]).
//! - The file is read again on `SIGHUP` (a new config) and, once an edge uses it, whenever
//!   its size or modification time changes (checked every 2 s). A file that no longer reads
//!   as a database is logged and the last good one kept.

use crate::rules::{Country, UNKNOWN};
use maxminddb::{PathElement, Reader};
use parking_lot::RwLock;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How often the file is checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What identifies one version of the file.
type Stamp = (Option<SystemTime>, u64);

pub struct GeoIp {
    path: PathBuf,
    db: RwLock<(Arc<Reader<Vec<u8>>>, Stamp)>,
    cache: moka::sync::Cache<IpAddr, Country>,
    watching: AtomicBool,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp").field("path", &self.path).finish()
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified().ok(), m.len()))
}

fn read(path: &Path) -> Result<(Reader<Vec<u8>>, Stamp), String> {
    let st = stamp(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = Reader::open_readfile(path)
        .map_err(|e| format!("{}: not a MaxMind database: {e}", path.display()))?;
    Ok((r, st))
}

impl GeoIp {
    /// Read the database; an error names the file and what is wrong.
    pub fn open(path: &Path) -> Result<Arc<GeoIp>, String> {
        let (reader, st) = read(path)?;
        Ok(Arc::new(GeoIp {
            path: path.to_owned(),
            db: RwLock::new((Arc::new(reader), st)),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            watching: AtomicBool::new(false),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The country of `ip` (`XX` when unknown).
    pub fn country(&self, ip: IpAddr) -> Country {
        let ip = ip.to_canonical();
        if let Some(c) = self.cache.get(&ip) {
            return c;
        }
        let reader = self.db.read().0.clone();
        let c = lookup(&reader, ip);
        self.cache.insert(ip, c);
        c
    }

    /// Read the file again when it changes, for as long as this database is in use (a
    /// thread holding a weak reference). Idempotent.
    pub fn watch(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<GeoIp> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("geoip-watch".into())
            .spawn(move || loop {
                std::thread::sleep(WATCH_EVERY);
                let Some(g) = weak.upgrade() else { return };
                g.reload_if_changed();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "geoip: cannot watch the database file");
        }
    }

    /// Read the file again if its size or modification time changed.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.path).ok();
        if now.is_none() || now == Some(self.db.read().1) {
            return false;
        }
        match read(&self.path) {
            Ok((reader, st)) => {
                *self.db.write() = (Arc::new(reader), st);
                self.cache.invalidate_all();
                tracing::info!(path = %self.path.display(), "geoip database reloaded");
                true
            }
            Err(e) => {
                // Being written, or broken: keep the last good one, and try again later.
                tracing::warn!(error = %e, "geoip database changed but does not load; keeping the previous one");
                false
            }
        }
    }
}

fn lookup(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Country {
    const PATHS: [[PathElement<'static>; 2]; 2] = [
        [PathElement::Key("country"), PathElement::Key("iso_code")],
        [
            PathElement::Key("registered_country"),
            PathElement::Key("iso_code"),
        ],
    ];
    let Ok(found) = reader.lookup(ip) else {
        return UNKNOWN;
    };
    PATHS
        .iter()
        .find_map(|p| {
            found
                .decode_path::<&str>(p)
                .ok()
                .flatten()
                .and_then(crate::rules::country_code)
        })
        .unwrap_or(UNKNOWN)
}
