//! A throwaway "project + server" for end-to-end deploy tests.
//!
//! A [`Site`] owns one temp dir holding everything a test touches:
//!
//! ```text
//! TMP/src/            the source tree to deploy (written by the test)
//! TMP/app/            the deploy path (the "server" side: SSH targets are 127.0.0.1)
//! TMP/home/           HOME of the cutover process, so the user's ~/.ssh is never read
//! TMP/cutover.toml    written by `configure`, with one target named `t`
//! ```
//!
//! The same test body runs against `host = "local"` and against a real sshd (see
//! [`TargetKind`]); the deploy path is inspected directly on the file system either way.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Sshd;

/// The target name every generated config uses.
pub const TARGET: &str = "t";

/// How long one cutover invocation may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `host = "local"`: files copied locally, script run by /bin/sh.
    Local,
    /// A real OpenSSH sshd on 127.0.0.1 (tests/common/mod.rs).
    Ssh,
    /// `sftp_only = true` against an sshd whose account runs nothing but SFTP
    /// (`ForceCommand internal-sftp`; see [`Site::sftp_only`]).
    SftpOnly,
}

/// The sshd config of an SFTP-only account: `force` is its ForceCommand (`internal-sftp`,
/// maybe with flags), `chroot` its ChrootDirectory. sshd logs every channel of a forced command
/// as `forced-command`, whatever was asked; LogLevel DEBUG1 adds the request itself
/// (`req exec`, `req subsystem`), which is how a test counts exec requests.
pub fn sftp_only_config(force: &str, chroot: Option<&Path>) -> String {
    let user = super::site_user();
    let chroot = chroot
        .map(|d| format!("    ChrootDirectory {}\n", d.display()))
        .unwrap_or_default();
    format!("Match User {user}\n{chroot}    ForceCommand {force}\n    LogLevel DEBUG1\n")
}

pub struct Site {
    pub kind: TargetKind,
    pub sshd: Option<Sshd>,
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub path: PathBuf,
    pub home: PathBuf,
    pub config: PathBuf,
    /// Top-level TOML (before the target table), e.g. `keep_releases = 2`.
    top: String,
    /// Extra keys inside `[targets.t]`.
    target_extra: String,
    /// known_hosts file for SSH targets (default: the sshd's, which holds its key).
    known_hosts: Option<PathBuf>,
    /// The deploy path as the server's account sees it, when that is not `path` (a chroot).
    remote_path: Option<String>,
    /// The root-owned directory a chrooted account is locked into (removed on drop).
    jail: Option<tempfile::TempDir>,
}

impl Site {
    /// A fresh site with an empty source dir and a config for one target `t`. None when the
    /// target kind needs sshd and it is not installed (the test is skipped; panics under CI).
    pub fn new(kind: TargetKind) -> Option<Site> {
        let sshd = match kind {
            TargetKind::Local => None,
            TargetKind::Ssh | TargetKind::SftpOnly => {
                if !super::sshd_or_skip() {
                    return None;
                }
                Some(match kind {
                    TargetKind::SftpOnly => {
                        Sshd::start_with(&sftp_only_config("internal-sftp", None))
                    }
                    _ => Sshd::start(),
                })
            }
        };
        let tmp = tempfile::Builder::new()
            .prefix("cutover-e2e-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        let src = root.join("src");
        let home = root.join("home");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&home).unwrap();
        let site = Site {
            kind,
            sshd,
            src,
            path: root.join("app"),
            home,
            config: root.join("cutover.toml"),
            tmp,
            top: String::new(),
            target_extra: String::new(),
            known_hosts: None,
            remote_path: None,
            jail: None,
        };
        site.write_config();
        Some(site)
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// An `sftp_only = true` site whose account's ForceCommand is `force` (`internal-sftp`
    /// with flags, e.g. `-P hardlink,copy-data`).
    pub fn sftp_only(force: &str) -> Option<Site> {
        let mut site = Site::new(TargetKind::Local)?;
        if !super::sshd_or_skip() {
            return None;
        }
        site.sshd = Some(Sshd::start_with(&sftp_only_config(force, None)));
        site.kind = TargetKind::SftpOnly;
        site.write_config();
        Some(site)
    }

    /// An `sftp_only = true` site whose account is locked into a chroot (`ChrootDirectory`):
    /// it sees the deploy path as `/app`, which is `JAIL/app` here. sshd wants every directory
    /// of the jail's path owned by root and writable by no one else, so the jail lives in a
    /// root-owned directory of /var/lib, and the test needs root (skipped otherwise; CI runs
    /// as root, and fails rather than skips there).
    pub fn sftp_chroot() -> Option<Site> {
        if !super::running_as_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the chroot test needs root under CI"
            );
            eprintln!("skipping: a ChrootDirectory needs root-owned directories (run as root)");
            return None;
        }
        let mut site = Site::new(TargetKind::Local)?;
        if !super::sshd_or_skip() {
            return None;
        }
        let base = Path::new("/var/lib/cutover-tests");
        mkdirs(base);
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
        let jail = tempfile::Builder::new()
            .prefix("jail-")
            .tempdir_in(base)
            .unwrap();
        fs::set_permissions(jail.path(), fs::Permissions::from_mode(0o755)).unwrap();
        site.sshd = Some(Sshd::start_with(&sftp_only_config(
            "internal-sftp",
            Some(jail.path()),
        )));
        site.kind = TargetKind::SftpOnly;
        site.path = jail.path().join("app");
        site.remote_path = Some("/app".into());
        site.jail = Some(jail);
        site.write_config();
        Some(site)
    }

    pub fn sshd(&self) -> &Sshd {
        self.sshd.as_ref().expect("an SSH site")
    }

    /// Replaces the top-level TOML (keys before the target table) and the extra target keys,
    /// and rewrites the config file.
    pub fn configure(&mut self, top: &str, target_extra: &str) {
        self.top = top.to_string();
        self.target_extra = target_extra.to_string();
        self.write_config();
    }

    /// Moves the deploy path (before the first deploy), e.g. to a name full of shell syntax.
    pub fn set_path(&mut self, path: PathBuf) {
        self.path = path;
        self.write_config();
    }

    /// Points the SSH target at another known_hosts file.
    pub fn set_known_hosts(&mut self, file: &Path) {
        self.known_hosts = Some(file.to_path_buf());
        self.write_config();
    }

    /// The `[targets.t]` table for this site (without extra keys).
    pub fn target_table(&self) -> String {
        let path = toml_str(
            &self
                .remote_path
                .clone()
                .unwrap_or_else(|| self.path.display().to_string()),
        );
        let sftp_only = if self.kind == TargetKind::SftpOnly {
            "sftp_only = true\n"
        } else {
            ""
        };
        match &self.sshd {
            None => format!("[targets.{TARGET}]\nhost = \"local\"\npath = {path}\n"),
            Some(s) => format!(
                "[targets.{TARGET}]\nhost = \"127.0.0.1\"\nport = {}\nuser = {}\npath = {path}\n\
                 {sftp_only}identity_file = {}\nknown_hosts = {}\n",
                s.port,
                toml_str(&s.user),
                toml_str(&s.identity.display().to_string()),
                toml_str(
                    &self
                        .known_hosts
                        .as_ref()
                        .unwrap_or(&s.known_hosts)
                        .display()
                        .to_string()
                ),
            ),
        }
    }

    fn write_config(&self) {
        let text = format!(
            "source = {}\n{}\n{}{}\n",
            toml_str(&self.src.display().to_string()),
            self.top,
            self.target_table(),
            self.target_extra
        );
        fs::write(&self.config, text).unwrap();
    }

    // --- running cutover ---------------------------------------------------------------------

    /// Runs `cutover --config CONFIG ARGS...` with a private HOME and no ssh-agent, and waits
    /// for what the deploy script does after cutover returns (see [`Site::wait_for_prune`]).
    pub fn cutover(&self, args: &[&str]) -> Run {
        let mut full: Vec<String> = vec!["--config".into(), self.config.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let run = run_cutover(self.root(), &self.home, &full);
        self.wait_for_prune();
        run
    }

    /// See [`DeployPath::wait_for_prune`].
    pub fn wait_for_prune(&self) {
        self.app().wait_for_prune();
    }

    /// Starts `cutover --config CONFIG ARGS...` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut full: Vec<String> = vec!["--config".into(), self.config.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        spawn_cutover(self.root(), &self.home, &full)
    }

    /// [`Site::cutover`] with extra environment variables.
    pub fn cutover_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut full: Vec<String> = vec!["--config".into(), self.config.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let run = spawn_cutover_env(self.root(), &self.home, &full, env).wait();
        self.wait_for_prune();
        run
    }

    /// `cutover deploy` with extra flags, whatever the outcome.
    pub fn deploy_with(&self, flags: &[&str]) -> Run {
        let mut args = vec!["deploy"];
        args.extend_from_slice(flags);
        self.cutover(&args)
    }

    /// A deploy that must succeed (exit 0); returns its parsed summary. Also checks that the
    /// summary's release is the one `current` now points to.
    pub fn deploy(&self) -> Summary {
        let run = self.deploy_with(&[]);
        run.expect_code(0, "deploy");
        let summary = run.summary();
        assert_eq!(
            self.current_id().as_deref(),
            Some(summary.release.as_str()),
            "after a successful deploy, current points to the release the summary names\n{}",
            run.describe()
        );
        summary
    }

    /// Exec channels sshd started so far (None for a local target). For an SFTP-only
    /// account, the exec requests it was sent (each refused: the forced command runs instead).
    pub fn exec_sessions(&self) -> Option<usize> {
        self.sshd.as_ref().map(|s| match self.kind {
            TargetKind::SftpOnly => s.exec_requests(),
            _ => s.exec_sessions(),
        })
    }

    /// The deploy script did not run since `execs_before` was counted: of the one exec call a
    /// deploy makes, at most the shell was started (a deploy starts it while it plans); it was
    /// never given the script, so the script said nothing.
    pub fn assert_script_never_ran(&self, execs_before: Option<usize>, run: &Run) {
        if let (Some(before), Some(now)) = (execs_before, self.exec_sessions()) {
            assert!(
                now <= before + 1,
                "{now} exec calls after {before}\n{}",
                run.describe()
            );
        }
        assert!(
            !run.stderr.contains("copying release") && !run.stderr.contains("current -> "),
            "the script never ran\n{}",
            run.describe()
        );
    }

    pub fn sftp_sessions(&self) -> Option<usize> {
        self.sshd.as_ref().map(|s| s.sftp_sessions())
    }

    // --- the source tree ---------------------------------------------------------------------

    /// Writes a regular file (0644), creating parent directories (0755).
    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        write_file(&self.src.join(rel), content.as_ref(), 0o644);
    }

    /// Writes an executable file (0755).
    pub fn write_exec(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        write_file(&self.src.join(rel), content.as_ref(), 0o755);
    }

    pub fn mkdir(&self, rel: impl AsRef<Path>) {
        mkdirs(&self.src.join(rel));
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) {
        let at = self.src.join(rel);
        if let Some(parent) = at.parent() {
            mkdirs(parent);
        }
        let _ = fs::remove_file(&at);
        symlink(target, &at).unwrap();
    }

    /// Removes a file, symlink or whole directory from the source.
    pub fn remove(&self, rel: impl AsRef<Path>) {
        remove_any(&self.src.join(rel));
    }

    // --- the deploy path ---------------------------------------------------------------------

    /// The deploy path, for inspection.
    pub fn app(&self) -> DeployPath {
        DeployPath::new(&self.path)
    }

    pub fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.app().at(rel)
    }

    /// The target of `current`, when it is a symlink.
    pub fn current_link(&self) -> Option<String> {
        self.app().current_link()
    }

    /// The release id `current` points to (`releases/ID` expected).
    pub fn current_id(&self) -> Option<String> {
        self.app().current_id()
    }

    /// Names in `releases/`, sorted (empty when it does not exist).
    pub fn releases(&self) -> Vec<String> {
        self.app().releases()
    }

    /// Renames release `id` (its directory and manifest) to `to`, and points `current` at it:
    /// a release dated otherwise (a server clock ahead, say).
    pub fn redate(&self, id: &str, to: &str) {
        fs::rename(self.release_dir(id), self.release_dir(to)).unwrap();
        fs::rename(
            self.at(format!(".cutover/manifests/{id}")),
            self.at(format!(".cutover/manifests/{to}")),
        )
        .unwrap();
        fs::remove_file(self.at("current")).unwrap();
        std::os::unix::fs::symlink(format!("releases/{to}"), self.at("current")).unwrap();
    }

    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.app().release_dir(id)
    }

    /// Names in `.cutover/manifests/`, sorted.
    pub fn manifests(&self) -> Vec<String> {
        self.app().manifests()
    }

    /// Entries left in `.cutover/staging/` (empty when it does not exist).
    pub fn staging_leftovers(&self) -> Vec<String> {
        self.app().staging_leftovers()
    }

    pub fn lock_exists(&self) -> bool {
        self.app().lock_exists()
    }

    /// See [`DeployPath::leftovers`].
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.app().leftovers()
    }

    /// See [`DeployPath::assert_clean`].
    pub fn assert_clean(&self, context: &str) {
        self.app().assert_clean(context)
    }

    /// Asserts that the release `id` holds exactly the source tree (after `skip` paths are
    /// removed from the source view, e.g. `.git`).
    pub fn assert_release_is_source(&self, id: &str, skip: &[&str]) {
        self.app().assert_release_is(&self.src, id, skip)
    }
}

/// A deploy path seen from the file system (the "server" of every test is this machine): what a
/// test inspects after a deploy. A [`Site`] has one, and so has each host of a fleet
/// (tests/common/fleet.rs).
#[derive(Debug, Clone)]
pub struct DeployPath {
    pub path: PathBuf,
}

impl DeployPath {
    pub fn new(path: &Path) -> DeployPath {
        DeployPath {
            path: path.to_path_buf(),
        }
    }

    pub fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// The target of `current`, when it is a symlink.
    pub fn current_link(&self) -> Option<String> {
        fs::read_link(self.path.join("current"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The release id `current` points to (`releases/ID` expected).
    pub fn current_id(&self) -> Option<String> {
        let link = self.current_link()?;
        Some(
            link.strip_prefix("releases/")
                .unwrap_or_else(|| panic!("current -> {link:?}, expected releases/ID"))
                .to_string(),
        )
    }

    /// Names in `releases/`, sorted (empty when it does not exist).
    pub fn releases(&self) -> Vec<String> {
        list_names(&self.path.join("releases"))
    }

    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.path.join("releases").join(id)
    }

    /// Names in `.cutover/manifests/`, sorted.
    pub fn manifests(&self) -> Vec<String> {
        list_names(&self.path.join(".cutover/manifests"))
    }

    /// Entries left in `.cutover/staging/` (empty when it does not exist).
    pub fn staging_leftovers(&self) -> Vec<String> {
        list_names(&self.path.join(".cutover/staging"))
    }

    pub fn lock_exists(&self) -> bool {
        fs::symlink_metadata(self.path.join(".cutover/lock")).is_ok()
    }

    /// Every path under the deploy path whose name ends in `.partial` or starts with `.current.`
    /// (the swap's temporary link). Waits first for a pruned release still being deleted
    /// (the deploy reports before it empties the trash): the walk would see it vanish.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.wait_for_prune();
        snapshot(&self.path)
            .keys()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with(".partial") || name.starts_with(".current.")
            })
            .cloned()
            .collect()
    }

    /// Asserts the state every finished deploy (good or failed) must leave: no lock, no staging,
    /// no partial release, no temporary swap link.
    pub fn assert_clean(&self, context: &str) {
        assert!(
            !self.lock_exists(),
            "{context}: the lock {} was left behind",
            self.path.join(".cutover/lock").display()
        );
        assert_eq!(
            self.staging_leftovers(),
            Vec::<String>::new(),
            "{context}: staging left behind"
        );
        assert_eq!(
            self.leftovers(),
            Vec::<PathBuf>::new(),
            "{context}: partial releases or temporary links left behind"
        );
    }

    /// Asserts that the release `id` holds exactly the tree `src` (after `skip` paths are
    /// removed from the source view, e.g. `.git`).
    pub fn assert_release_is(&self, src: &Path, id: &str, skip: &[&str]) {
        let expected = source_view(src, skip);
        let actual = snapshot(&self.release_dir(id));
        assert_trees_equal(&expected, &actual, &format!("release {id} vs. the source"));
    }

    /// Waits until the upload of a running deploy has sent at least `bytes` (its archives
    /// `staging/ID/files*.tar` together) and returns its staging directory.
    pub fn wait_for_upload(&self, bytes: u64) -> PathBuf {
        let staging = self.at(".cutover/staging");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(id) = list_names(&staging).first() {
                let dir = staging.join(id);
                let sent: u64 = list_names(&dir)
                    .iter()
                    .filter(|n| n.starts_with("files") && n.ends_with(".tar"))
                    .filter_map(|n| fs::metadata(dir.join(n)).ok())
                    .map(|m| m.len())
                    .sum();
                if sent >= bytes {
                    return dir;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: the upload never started",
                self.path.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the deploy script runs: its partial release appears (the copy of the live
    /// release starts while the files are still uploading).
    pub fn wait_for_script(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.releases().iter().any(|n| n.ends_with(".partial")) {
            assert!(
                Instant::now() < deadline,
                "{}: the deploy script never started",
                self.path.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits (up to 30 s) until no lock, staging or partial release is left: what a deploy
    /// script that lost its client removes by itself.
    pub fn wait_until_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lock_exists()
            || !self.staging_leftovers().is_empty()
            || !self.leftovers().is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "{}: left behind: lock {}, staging {:?}, {:?}",
                self.path.display(),
                self.lock_exists(),
                self.staging_leftovers(),
                self.leftovers()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A deploy reports its release live before its script deletes the releases it pruned
    /// (`.cutover/trash/ID.PID`, PID being that script's): wait (at most 30 s) until no such
    /// script runs, so a test sees the deploy path at rest.
    pub fn wait_for_prune(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy = list_names(&self.path.join(".cutover/trash"))
                .iter()
                .filter_map(|n| {
                    n.rsplit_once('.')
                        .and_then(|(_, pid)| pid.parse::<u32>().ok())
                })
                .any(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !busy || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs the cutover binary in `cwd` with HOME=`home`, no agent, stdout/stderr captured.
pub fn run_cutover(cwd: &Path, home: &Path, args: &[String]) -> Run {
    spawn_cutover(cwd, home, args).wait()
}

/// Starts the cutover binary (see [`run_cutover`]) without waiting for it.
pub fn spawn_cutover(cwd: &Path, home: &Path, args: &[String]) -> Running {
    spawn_cutover_env(cwd, home, args, &[])
}

/// [`spawn_cutover`] with extra environment variables.
pub fn spawn_cutover_env(
    cwd: &Path,
    home: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Running {
    let out_dir = tempfile::Builder::new()
        .prefix("cutover-run-")
        .tempdir()
        .unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let child = Command::new(super::cutover_bin())
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CUTOVER_SSH_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawning cutover");
    Running {
        child,
        args: args.to_vec(),
        out_dir,
    }
}

/// A cutover process that is still running.
pub struct Running {
    pub child: std::process::Child,
    args: Vec<String>,
    out_dir: tempfile::TempDir,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`INT`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{name} {}", self.pid());
    }

    /// Waits (at most RUN_TIMEOUT) and collects the output.
    pub fn wait(mut self) -> Run {
        let stderr_path = self.out_dir.path().join("stderr");
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "cutover {:?} did not finish within {RUN_TIMEOUT:?}\nstderr:\n{}",
                    self.args,
                    String::from_utf8_lossy(&fs::read(&stderr_path).unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Run {
            args: self.args.clone(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&fs::read(self.out_dir.path().join("stdout")).unwrap())
                .into_owned(),
            stderr: String::from_utf8_lossy(&fs::read(&stderr_path).unwrap()).into_owned(),
        }
    }
}

/// Waits until `path` exists (at most 30 s).
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::symlink_metadata(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One finished cutover invocation.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "cutover {:?} exited {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    pub fn expect_code(&self, code: i32, what: &str) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit {code}\n{}",
            self.describe()
        );
        self
    }

    /// The parsed `t: release ID is live: ...` line (panics when there is none).
    pub fn summary(&self) -> Summary {
        parse_summary(&self.stdout)
            .unwrap_or_else(|| panic!("no summary line on stdout\n{}", self.describe()))
    }
}

/// `t: release 20261126125545 is live: 3 uploaded, 0 deleted, 0 unchanged, 545 B sent,
/// 0 shared links, 0 warnings, 0.0 s`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub release: String,
    pub uploaded: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub links: u64,
    pub warnings: u64,
}

pub fn parse_summary(stdout: &str) -> Option<Summary> {
    let line = stdout.lines().find(|l| l.contains(" is live: "))?;
    let (head, counts) = line.split_once(" is live: ")?;
    let release = head.rsplit(' ').next()?.to_string();
    let mut s = Summary {
        release,
        uploaded: u64::MAX,
        deleted: u64::MAX,
        unchanged: u64::MAX,
        links: u64::MAX,
        warnings: u64::MAX,
    };
    for part in counts.split(", ") {
        let (n, what) = part.split_once(' ')?;
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "uploaded" => s.uploaded = n,
            "deleted" => s.deleted = n,
            "unchanged" => s.unchanged = n,
            "shared links" => s.links = n,
            "warnings" => s.warnings = n,
            _ => {}
        }
    }
    let all = [s.uploaded, s.deleted, s.unchanged, s.links, s.warnings];
    (!all.contains(&u64::MAX)).then_some(s)
}

// --- trees ------------------------------------------------------------------------------------

/// One entry of a snapshot: everything a deploy must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: PathBuf },
    Other,
}

impl Node {
    fn short(&self) -> String {
        match self {
            Node::Dir { mode } => format!("dir {mode:o}"),
            Node::File { mode, data } => format!(
                "file {mode:o}, {} bytes, {:?}",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(40)])
            ),
            Node::Symlink { target } => format!("symlink -> {target:?}"),
            Node::Other => "special file".into(),
        }
    }
}

/// path (relative to the root) → entry, for everything below `root` (not following symlinks).
/// Empty when `root` does not exist.
pub type Tree = BTreeMap<PathBuf, Node>;

pub fn snapshot(root: &Path) -> Tree {
    let mut out = Tree::new();
    if fs::symlink_metadata(root).is_ok() {
        walk(root, Path::new(""), &mut out);
    }
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Tree) {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_symlink() {
            out.insert(
                rel,
                Node::Symlink {
                    target: fs::read_link(&path).unwrap(),
                },
            );
        } else if ft.is_dir() {
            out.insert(rel.clone(), Node::Dir { mode });
            walk(root, &rel, out);
        } else if ft.is_file() {
            out.insert(
                rel,
                Node::File {
                    mode,
                    data: fs::read(&path).unwrap(),
                },
            );
        } else {
            out.insert(rel, Node::Other);
        }
    }
}

/// What a release of `src` must look like: the source minus `skip` (and everything under it),
/// with files 0755/0644 by their executable bit and directories 0755.
pub fn source_view(src: &Path, skip: &[&str]) -> Tree {
    snapshot(src)
        .into_iter()
        .filter(|(p, _)| !skip.iter().any(|s| p.starts_with(s)))
        .map(|(p, n)| {
            let n = match n {
                Node::File { mode, data } => Node::File {
                    mode: if mode & 0o111 != 0 { 0o755 } else { 0o644 },
                    data,
                },
                Node::Dir { .. } => Node::Dir { mode: 0o755 },
                other => other,
            };
            (p, n)
        })
        .collect()
}

/// A readable list of differences (empty when equal).
pub fn tree_diff(expected: &Tree, actual: &Tree) -> String {
    let mut out = String::new();
    for (p, n) in expected {
        match actual.get(p) {
            None => out.push_str(&format!("  missing: {p:?} ({})\n", n.short())),
            Some(a) if a != n => out.push_str(&format!(
                "  differs: {p:?}: expected {}, found {}\n",
                n.short(),
                a.short()
            )),
            _ => {}
        }
    }
    for (p, n) in actual {
        if !expected.contains_key(p) {
            out.push_str(&format!("  unexpected: {p:?} ({})\n", n.short()));
        }
    }
    out
}

pub fn assert_trees_equal(expected: &Tree, actual: &Tree, what: &str) {
    let diff = tree_diff(expected, actual);
    assert!(diff.is_empty(), "{what}: trees differ:\n{diff}");
}

/// Only the entries under `prefix`, re-rooted at it.
pub fn subtree(tree: &Tree, prefix: &str) -> Tree {
    tree.iter()
        .filter_map(|(p, n)| {
            p.strip_prefix(prefix)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .map(|r| (r.to_path_buf(), n.clone()))
        })
        .collect()
}

// --- small file helpers -----------------------------------------------------------------------

/// `chown OWNER PATH` (root runs the tests), asserting it worked.
pub fn chown(owner: &str, path: &Path) {
    let done = Command::new("chown").arg(owner).arg(path).status().unwrap();
    assert!(done.success(), "chown {owner} {}", path.display());
}

pub fn mkdirs(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", dir.display()));
}

pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        mkdirs(parent);
    }
    let _ = fs::remove_file(path);
    fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(e) => panic!("removing {}: {e}", path.display()),
    }
}

pub fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

pub fn is_release_id(name: &str) -> bool {
    name.len() == 14 && name.bytes().all(|b| b.is_ascii_digit())
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Deterministic pseudo-random bytes (xorshift), e.g. for a binary "image".
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The SHA256 fingerprint (`SHA256:...`) of a public key file, per `ssh-keygen -lf`.
pub fn fingerprint(pub_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-E")
        .arg("sha256")
        .arg("-f")
        .arg(pub_key)
        .output()
        .expect("running ssh-keygen -l");
    assert!(out.status.success(), "ssh-keygen -l failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no SHA256 fingerprint in {text:?}"))
        .to_string()
}

// --- a realistic web app ----------------------------------------------------------------------

/// Writes a small PHP-style web app into the site's source: hidden files, an executable, a
/// binary file, symlinks, an empty directory, a vendor/ tree, and a git checkout's `.git/` and
/// ignored files (which must not be deployed: see [`WEBAPP_NOT_DEPLOYED`]).
pub fn write_webapp(site: &Site, vendor_files: usize) {
    site.write(
        "index.php",
        "<?php\nrequire __DIR__ . '/vendor/autoload.php';\necho 'hello';\n",
    );
    site.write(
        ".htaccess",
        "RewriteEngine On\nRewriteRule ^ index.php [L]\n",
    );
    site.write(".gitignore", "*.log\n/node_modules/\n");
    site.write(
        ".well-known/security.txt",
        "Contact: mailto:sec@example.com\n",
    );
    site.write("assets/css/app.css", "body { margin: 0; }\n");
    site.write("assets/js/app.js", "console.log('app');\n");
    site.write("assets/img/logo.png", noise(7, 4096));
    site.write_exec("bin/console", "#!/bin/sh\necho console \"$@\"\n");
    site.symlink("favicon.ico", "assets/img/logo.png");
    site.symlink("assets/latest.css", "css/app.css");
    site.symlink("dangling", "does/not/exist");
    site.mkdir("storage/logs");
    site.write("vendor/autoload.php", "<?php // autoload\n");
    for i in 0..vendor_files.saturating_sub(1) {
        site.write(
            format!("vendor/pkg{}/src/Class{i}.php", i % 5),
            format!("<?php\nclass Class{i} {{}}\n"),
        );
    }
    // not deployed
    site.write(".git/HEAD", "ref: refs/heads/main\n");
    site.write(".git/config", "[core]\n\tbare = false\n");
    site.write("debug.log", "some log\n");
    site.write("node_modules/left-pad/index.js", "module.exports = 1;\n");
}

/// Paths of [`write_webapp`]'s tree that a deploy must leave out.
pub const WEBAPP_NOT_DEPLOYED: &[&str] = &[".git", "debug.log", "node_modules"];

/// Files and symlinks (what a deploy uploads) in `tree`.
pub fn count_uploadable(tree: &Tree) -> u64 {
    tree.values()
        .filter(|n| !matches!(n, Node::Dir { .. }))
        .count() as u64
}
