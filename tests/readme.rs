//! README.md runs as written: every block marked runnable (```` ```sh runnable ````) is run in
//! order, in one shell, in a fresh copy of the checkout (no `data/`: a new store, a new key),
//! by `scripts/readme.py`, which fails on any failing command and on printed output other
//! than the `#>` lines README shows. The copy builds through `scripts/run.sh` into a target
//! folder of its own kept between runs (`target/readme/target`): the first run builds
//! everything once (several minutes), later ones find it fresh. (Sharing this checkout's
//! `target/` does not work: the two source paths' builds invalidate each other's
//! dependencies and every run rebuilt for 3 minutes.)

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn every_runnable_readme_block_runs_and_prints_what_it_shows() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A fixed place (cargo's fingerprints name the source path: a new folder every run
    // would rebuild hlsgate every run).
    let copy = repo.join("target/readme/checkout");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).unwrap();
    }
    std::fs::create_dir_all(&copy).unwrap();
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(files.status.success());
    for f in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(f).unwrap());
        let (from, to) = (repo.join(rel), copy.join(rel));
        if !from.is_file() {
            continue; // deleted in the work tree
        }
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // (cp -p: sources keep their times, so cargo sees the copy's build as fresh)
        let ok = Command::new("cp")
            .arg("-p")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(ok.success(), "{}", from.display());
    }
    let target = repo.join("target/readme/target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, copy.join("target")).unwrap();

    let mut cmd = Command::new("python3");
    cmd.args(["scripts/readme.py", "README.md"])
        .current_dir(&copy);
    // (a build in the copy under cargo's test variables would be rebuilt by a reader's)
    common::shell_env(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "README.md's runnable blocks:\n{err}");
    assert!(
        err.contains("ran and printed what README.md shows"),
        "{err}"
    );
}
