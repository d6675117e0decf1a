//! The Debian package (cargo-deb, `[package.metadata.deb]`) built from this test run's binaries and
//! unpacked into a scratch root with `dpkg -x`: binaries, unit, conffile, maintainer scripts, and a daemon
//! that starts from what was unpacked. The container image definition is checked against what it names.
//!
//! cargo-deb is found as `RGITALY_CARGO_DEB` (`.ci/run` installs a pinned one under `target/tools`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn cargo_deb() -> PathBuf {
    let path = std::env::var_os("RGITALY_CARGO_DEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/cargo-deb"));
    assert!(path.is_file(), "cargo-deb not found at {}: run .ci/run, which installs it", path.display());
    path
}

#[test]
fn debian_package_installs_what_a_service_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rgitaly")).parent().unwrap().to_path_buf();
    let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
    let out_dir = tempfile::tempdir().unwrap();
    let deb = out_dir.path().join("rgitaly.deb");
    // The binaries this test run built (no second, release, build): cargo-deb maps the manifest's
    // target/release/ assets to the profile's directory.
    let profile_arg = if profile == "debug" { "dev".to_string() } else { profile.clone() };
    let out = Command::new(cargo_deb())
        .current_dir(root)
        .args(["deb", "--no-build", "--no-strip", "--fast", "--profile", &profile_arg, "--output"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let field = |name: &str| stdout(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name));
    assert_eq!(field("Package"), "rgitaly");
    assert!(field("Depends").contains("git"), "{}", field("Depends"));

    let scratch = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(scratch.path()));
    let r = scratch.path();
    for bin in ["rgitaly", "rgitaly-ssh", "rgitaly-hooks", "rgitaly-worker"] {
        let p = r.join("usr/bin").join(bin);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755, "{bin}");
    }
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/rgitaly.service")).unwrap();
    for want in
        ["ExecStart=/usr/bin/rgitaly serve /etc/rgitaly/config.toml", "LimitNOFILE=65536", "User=git", "Type=notify"]
    {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    let config = r.join("etc/rgitaly/config.toml");
    assert_eq!(std::fs::read(&config).unwrap(), std::fs::read(root.join("config.toml.sample")).unwrap());

    // Control files: the config is a conffile (kept on upgrade), postinst makes the system user.
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/rgitaly/config.toml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system") && postinst.contains("/var/lib/rgitaly/run/storages/default"));

    // What was unpacked runs: the shipped config checks from the unit's working directory layout, and the
    // daemon serves from the unpacked binaries (hooks and worker found beside it).
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("run/storages/default")).unwrap();
    let out =
        Command::new(r.join("usr/bin/rgitaly")).current_dir(state.path()).arg("check").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let version = stdout(Command::new(r.join("usr/bin/rgitaly")).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

#[test]
fn container_image_definition_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read_to_string(root.join("Containerfile")).unwrap();
    // Non-root, storages on a volume, health through the gRPC health service, every copied file exists.
    assert!(file.lines().any(|l| l.starts_with("USER ") && !l.contains("root")));
    assert!(file.contains("VOLUME [\"/var/opt/gitlab/git-data\""));
    assert!(file.contains("HEALTHCHECK") && file.contains("\"rgitaly\", \"health\""));
    for line in file.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let src = line.split_whitespace().nth(1).unwrap();
        if src != "." {
            assert!(root.join(src).exists(), "{src}");
        }
    }
    // The image's config is valid once its storage exists.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(root.join("packaging/container/config.toml"))
        .unwrap()
        .replace("/var/opt/gitlab", &dir.path().display().to_string());
    std::fs::create_dir_all(dir.path().join("git-data/repositories")).unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rgitaly")).arg("check").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
