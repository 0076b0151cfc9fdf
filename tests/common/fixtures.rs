//! The small helpers every test file needs, once: key generation, who we are, reading files,
//! and the one way to run a scenario against both kinds of target ([`both_targets!`]).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `mod NAME { fn local(); fn ssh(); }` for each scenario `fn NAME(kind: TargetKind)`: one
/// body, run against a `local` target and against a real sshd. The calling file must have
/// `Local` and `Ssh` in scope (`use common::site::TargetKind::{Local, Ssh};`).
#[allow(unused_macros)]
macro_rules! both_targets {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name(super::Local);
            }
            #[test]
            fn ssh() {
                super::$name(super::Ssh);
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both_targets;

/// `ssh-keygen -q -C NAME -N PASSPHRASE ARGS -f DIR/NAME` (e.g. `-t ed25519`, `-m PEM`): the
/// private key, 0600.
pub fn keygen(dir: &Path, name: &str, args: &[&str], passphrase: &str) -> PathBuf {
    try_keygen(dir, name, args, passphrase).unwrap_or_else(|e| panic!("{e}"))
}

/// [`keygen`], with the failure as a value (the sshd harness retries and explains).
pub fn try_keygen(
    dir: &Path,
    name: &str,
    args: &[&str],
    passphrase: &str,
) -> Result<PathBuf, String> {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-N", passphrase])
        .args(args)
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ssh-keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen {args:?} -f {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The public half of `key` (`KEY.pub`).
pub fn pub_of(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// For tests that need root (mount, chattr, useradd): true as root; otherwise a note and false
/// on a developer machine, a failure under CI (where the tests run as root).
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tests run as root in CI: {what} needs root"
    );
    eprintln!("skipping: {what} needs root");
    false
}

/// The user running the tests.
pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A file's content as text (lossy), panicking with its path when it cannot be read.
pub fn read(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .into_owned()
}
