//! Folders only the service's user may enter: the ones hlsgate creates for its key file,
//! its SQLite store and its upgrade socket (`data/` by default). A socket in a folder
//! others can enter could be connected to by another local user first, who would then be
//! handed the listening sockets at the next upgrade.

use std::path::Path;

/// Create the folder `dir` (and any missing parents) with mode 0700 where it is missing;
/// an existing folder is left as it is (an operator's `/run/hlsgate`, say).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_folders_are_the_owners_only_and_existing_ones_are_left() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/data");
        super::create_dir(&d).unwrap();
        for p in [t.path().join("a"), d.clone()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::create_dir(&open).unwrap();
        let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
}
