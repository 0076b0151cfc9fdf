//! End-to-end test harness: a real, throwaway OpenSSH `sshd` per test.
//!
//! Nothing is mocked. Like OpenSSH's own `regress/` suite, every test that
//! talks SSH gets a genuine `/usr/sbin/sshd` started in the foreground (`-D`)
//! with its own config, host key, client key, `authorized_keys`, pid file and
//! log (`-E`), listening on a free port of 127.0.0.1 and logging at
//! `LogLevel VERBOSE`. The log is what lets tests assert on behaviour the
//! client cannot see: sshd writes `Starting session: command ...` for every
//! exec channel and `Starting session: subsystem 'sftp' ...` for every SFTP
//! channel, so "one deploy = one exec" is checked against the real server.
//! Because the server is this machine, a test may also inspect the "remote"
//! side directly on the filesystem, or through [`Sshd::ssh_run`], which uses
//! the system `ssh` client as an independent reference implementation.
//!
//! The login user is the user running the tests (root in CI, hence
//! `PermitRootLogin prohibit-password`). When run as root, sshd needs the
//! privilege separation directory `/run/sshd` (created here if missing) and
//! the `sshd` system user (created by Debian's openssh-server package); with
//! `UsePAM no`, sshd also refuses an account whose /etc/shadow password field
//! starts with `!` (locked) — Debian's root has `*`, which is fine.
//!
//! Install the dependencies with `scripts/test` (it runs the tests too).
//!
//! Usage, from an integration test (`tests/foo.rs`):
//! ```ignore
//! mod common;
//! let sshd = common::Sshd::start();
//! // cutover_bin() ... --port sshd.port, -i sshd.identity, known_hosts sshd.known_hosts
//! assert_eq!(sshd.exec_sessions(), 1);
//! ```
#![allow(dead_code)]

pub mod fixtures;
pub mod fleet;
pub mod proxy;
pub mod scenarios;
pub mod site;
pub mod traffic;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Absolute path of the sshd binary (sshd refuses to re-exec itself otherwise).
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// How long `start` waits for the server to answer with its SSH banner.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times `start` retries with a new port when sshd cannot bind.
const START_ATTEMPTS: usize = 5;

/// A running throwaway sshd. Killed (and its files removed) on drop.
#[derive(Debug)]
pub struct Sshd {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Holds everything below; removed on drop.
    pub dir: tempfile::TempDir,
    /// A known_hosts file with exactly one line: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub known_hosts: PathBuf,
    /// Unencrypted ed25519 private key (0600) whose public half is authorized.
    pub identity: PathBuf,
    /// The sshd log (`-E`), LogLevel VERBOSE.
    pub log: PathBuf,
    /// The user to log in as: the user running the tests.
    pub user: String,
    /// The sshd_config in use.
    pub config: PathBuf,
    /// The server's host private key (its `.pub` is next to it).
    pub host_key: PathBuf,
    /// sshd's pid file.
    pub pid_file: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts an sshd with the default configuration.
    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// Starts an sshd with `extra_config` appended to the default sshd_config.
    ///
    /// sshd keeps the FIRST value it reads for most keywords, so a global
    /// keyword that the default config already sets (see `default_config`)
    /// is ignored when repeated here. Use `Match` blocks (`Match User ...`,
    /// `Match Address 127.0.0.1`, `Match all`) to change behaviour, e.g.
    /// `"Match all\n    ForceCommand internal-sftp\n"` for an SFTP-only server.
    /// Note that under `ForceCommand` sshd logs every channel, exec or SFTP, as
    /// `Starting session: forced-command (config) '...'`: `exec_sessions` and
    /// `sftp_sessions` stay 0 there; use `count_log("Starting session: forced-command")`.
    pub fn start_with(extra_config: &str) -> Sshd {
        assert!(
            sshd_available(),
            "{SSHD_PATH} or ssh-keygen is missing: run scripts/test (it installs openssh-server)"
        );
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match try_start(extra_config) {
                Ok(sshd) => return sshd,
                Err(StartError::Retry(msg)) => {
                    failures.push(format!("attempt {attempt}: {msg}"));
                }
                Err(StartError::Fatal(msg)) => panic!("could not start sshd: {msg}"),
            }
        }
        panic!(
            "could not start sshd after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Number of exec channels sshd started (`Starting session: command`).
    pub fn exec_sessions(&self) -> usize {
        self.count_log("Starting session: command")
    }

    /// Number of exec (and shell) requests sshd was sent, whether it ran them or (under a
    /// ForceCommand) ran the forced command instead. Needs `LogLevel DEBUG1` (see
    /// `site::sftp_only_config`): panics when the log has no request lines at all.
    pub fn exec_requests(&self) -> usize {
        let log = self.log_text();
        assert!(
            !log.contains("Accepted publickey") || log.contains("session_input_channel_req"),
            "the sshd log has no request lines: start this sshd with LogLevel DEBUG1"
        );
        self.count_log(" req exec") + self.count_log(" req shell")
    }

    /// Number of SFTP subsystem requests (`req subsystem`, LogLevel DEBUG1).
    pub fn subsystem_requests(&self) -> usize {
        self.count_log(" req subsystem")
    }

    /// Number of SFTP channels sshd started (`Starting session: subsystem 'sftp'`).
    pub fn sftp_sessions(&self) -> usize {
        self.count_log("Starting session: subsystem 'sftp'")
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The whole sshd log so far.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...` (no trailing newline, no comment).
    pub fn host_public_key_line(&self) -> String {
        known_hosts_line(&self.host_key.with_extension("pub"), self.port)
            .expect("reading the host public key")
    }

    /// The system `ssh` client, set up to log in to this server with
    /// `identity` and to trust only `known_hosts` (no user config, no agent,
    /// BatchMode). Append the remote command with `.arg(..)`.
    pub fn ssh_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "none", "-i"])
            .arg(&self.identity)
            .args(client_options(&self.known_hosts))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-l")
            .arg(&self.user)
            .arg("127.0.0.1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` on the server (through the login shell) with the system
    /// `ssh` client and returns its output. Counts as one exec session.
    pub fn ssh_run(&self, cmd: &str) -> Output {
        self.ssh_command()
            .arg("--")
            .arg(cmd)
            .output()
            .expect("running the system ssh client")
    }

    /// The pid of the listening sshd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the sshd processes below the listener: every connection to this server dies,
    /// as when a network drops it. What sshd started (sftp-server, a shell waiting for its
    /// script) is left to see its input end, as it would then; killing those too would kill a
    /// login shell halfway through its start-up files (root's here run `pyenv init`, whose lock
    /// file then stays behind and stalls every later login for a minute).
    pub fn kill_sessions(&self) {
        let listener = self.pid();
        let sessions: Vec<u32> = descendants(listener)
            .into_iter()
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("sshd"))
            })
            .collect();
        assert!(
            !sessions.is_empty(),
            "no sshd session process under {listener}"
        );
        for pid in sessions {
            // SAFETY: plain kill(2) of a process this test's sshd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

impl Sshd {
    /// The processes its sessions started that still run (pid and command line): every one
    /// carries `SSH_CONNECTION=… 127.0.0.1 PORT` in its environment, also once it has left the
    /// process tree (a background job whose shell ended is adopted by init), and started after
    /// this sshd (an earlier server on the same port left its own).
    pub fn session_processes(&self) -> Vec<(u32, String)> {
        let needle = format!(" 127.0.0.1 {}", self.port);
        let born = start_time(self.pid()).expect("the sshd runs");
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if start_time(pid).is_none_or(|t| t < born) {
                continue;
            }
            // A zombie's environment reads empty: it runs nothing any more.
            let Ok(environ) = fs::read(entry.path().join("environ")) else {
                continue;
            };
            let ours = environ.split(|b| *b == 0).any(|var| {
                var.strip_prefix(b"SSH_CONNECTION=")
                    .is_some_and(|v| String::from_utf8_lossy(v).ends_with(&needle))
            });
            if ours {
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push((pid, cmdline.trim().to_string()));
            }
        }
        found
    }
}

/// When a process started, in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every process below `pid` (children, grandchildren, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // /proc/PID/stat: `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The listener only: per-connection children (setsid'ed by sshd) end
        // when their client disconnects.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `cutover` binary built by Cargo for the integration tests.
pub fn cutover_bin() -> PathBuf {
    // The benchmark compares two builds with CUTOVER_BENCH_BIN=/path/to/other/cutover.
    if let Some(path) = std::env::var_os("CUTOVER_BENCH_BIN") {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_cutover") {
        Some(path) => PathBuf::from(path),
        None => {
            panic!("CARGO_BIN_EXE_cutover is only set in the cutover crate's integration tests")
        }
    }
}

/// True when `/usr/sbin/sshd` and `ssh-keygen` are installed.
pub fn sshd_available() -> bool {
    is_executable(Path::new(SSHD_PATH)) && find_in_path("ssh-keygen").is_some()
}

/// For tests that need sshd: returns true when it is available. When it is
/// not, prints a note and returns false (skip) on a developer machine, but
/// panics under CI (`CI` set) so that a missing install never passes as green.
pub fn sshd_or_skip() -> bool {
    if sshd_available() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{SSHD_PATH} is missing under CI: scripts/test should have installed openssh-server"
        );
    }
    eprintln!("skipping: {SSHD_PATH} not installed (run scripts/test)");
    false
}

// ---------------------------------------------------------------------------

enum StartError {
    /// sshd could not bind its port (raced with another process): try again.
    Retry(String),
    /// Anything else: retrying will not help.
    Fatal(String),
}

/// Options shared by the `ssh` and `sftp` clients (after `-F none -i KEY`).
pub fn client_options(known_hosts: &Path) -> Vec<String> {
    [
        "IdentitiesOnly=yes".to_string(),
        "IdentityAgent=none".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        "UpdateHostKeys=no".to_string(),
        "BatchMode=yes".to_string(),
        "ConnectTimeout=10".to_string(),
        "LogLevel=ERROR".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

fn default_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "\
# Generated by tests/common/mod.rs: a throwaway sshd for one test.
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
Subsystem sftp internal-sftp
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
MaxSessions 20
MaxStartups 100
PermitUserRC no
PermitUserEnvironment no
PrintMotd no
PrintLastLog no
X11Forwarding no
UseDNS no
"
    )
}

fn try_start(extra_config: &str) -> Result<Sshd, StartError> {
    let fatal = |what: &str, e: &dyn std::fmt::Display| StartError::Fatal(format!("{what}: {e}"));

    let dir = tempfile::Builder::new()
        .prefix("cutover-sshd-")
        .tempdir()
        .map_err(|e| fatal("creating the temp dir", &e))?;
    let root = dir.path().to_path_buf();
    // sshd (possibly a privilege-separated child) must be able to read it.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
        .map_err(|e| fatal("chmod 0755 on the temp dir", &e))?;

    let host_key = root.join("ssh_host_ed25519_key");
    let identity = root.join("id_ed25519");
    keygen(&host_key, "cutover-test-host").map_err(|e| fatal("ssh-keygen (host key)", &e))?;
    keygen(&identity, "cutover-test-client").map_err(|e| fatal("ssh-keygen (client key)", &e))?;
    let authorized_keys = root.join("authorized_keys");
    fs::copy(identity.with_extension("pub"), &authorized_keys)
        .map_err(|e| fatal("writing authorized_keys", &e))?;
    fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))
        .map_err(|e| fatal("chmod authorized_keys", &e))?;

    ensure_privsep_dir();

    let port = free_port().map_err(|e| fatal("picking a free port", &e))?;
    let known_hosts = root.join("known_hosts");
    let line = known_hosts_line(&host_key.with_extension("pub"), port)
        .map_err(|e| fatal("reading the host public key", &e))?;
    fs::write(&known_hosts, format!("{line}\n")).map_err(|e| fatal("writing known_hosts", &e))?;

    let config = root.join("sshd_config");
    // The test's top-level keywords go first (sshd keeps the first value it reads of a keyword,
    // so they override the defaults), its Match blocks last (a Match block runs to the end).
    let match_at = extra_config
        .match_indices("Match ")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || extra_config[..i].ends_with('\n'))
        .unwrap_or(extra_config.len());
    let (top, blocks) = extra_config.split_at(match_at);
    let mut text = String::new();
    if !top.trim().is_empty() {
        text.push_str("# top-level config from the test\n");
        text.push_str(top);
        text.push('\n');
    }
    let mut defaults = default_config(&root, port);
    if top.contains("Subsystem sftp ") {
        // sshd refuses a second definition of a subsystem: the test's replaces ours
        defaults = defaults.replace("Subsystem sftp internal-sftp\n", "");
    }
    text.push_str(&defaults);
    if !blocks.is_empty() {
        text.push_str("\n# Match blocks from the test\n");
        text.push_str(blocks);
        text.push('\n');
    }
    fs::write(&config, text).map_err(|e| fatal("writing sshd_config", &e))?;

    let log = root.join("sshd.log");
    let stderr_path = root.join("sshd.stderr");
    let pid_file = root.join("sshd.pid");
    let stderr = fs::File::create(&stderr_path).map_err(|e| fatal("creating sshd.stderr", &e))?;

    let child = Command::new(SSHD_PATH)
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .arg("-E")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| fatal(&format!("spawning {SSHD_PATH}"), &e))?;

    let user = current_user();
    let mut sshd = Sshd {
        port,
        dir,
        known_hosts,
        identity,
        log,
        user,
        config,
        host_key,
        pid_file,
        child,
    };

    let describe = |sshd: &Sshd, what: &str| {
        format!(
            "{what}\n--- sshd_config ({}) ---\n{}--- sshd log ({}) ---\n{}--- sshd stderr ---\n{}",
            sshd.config.display(),
            read_lossy(&sshd.config),
            sshd.log.display(),
            sshd.log_text(),
            read_lossy(&stderr_path),
        )
    };

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = sshd.child.try_wait() {
            let msg = describe(
                &sshd,
                &format!("sshd on port {port} exited early ({status})"),
            );
            let log = sshd.log_text() + &read_lossy(&stderr_path);
            return Err(if is_bind_failure(&log) {
                StartError::Retry(msg)
            } else {
                StartError::Fatal(msg)
            });
        }
        // The pid file is written after the listen socket is bound, so a pid
        // file with OUR child's pid proves the port is ours (and not another
        // test's sshd that grabbed the same port).
        let ours = fs::read_to_string(&sshd.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(sshd.child.id());
        if ours && banner_arrives(port) {
            return Ok(sshd);
        }
        if Instant::now() >= deadline {
            let _ = sshd.child.kill();
            let _ = sshd.child.wait();
            return Err(StartError::Fatal(describe(
                &sshd,
                &format!(
                    "sshd on 127.0.0.1:{port} did not send its SSH-2.0 banner within {:?}",
                    START_TIMEOUT
                ),
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_bind_failure(log: &str) -> bool {
    log.contains("Bind to port")
        || log.contains("Cannot bind any address")
        || log.contains("Address already in use")
}

/// Connects and reads until the server's `SSH-2.0-...` identification arrives.
fn banner_arrives(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let until = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < until && got.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains("SSH-2.0") {
                    return true;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

fn keygen(path: &Path, comment: &str) -> Result<(), String> {
    let _ = comment; // the key's comment is its file name
    let dir = path.parent().expect("a key path has a directory");
    let name = path.file_name().expect("a key path has a name");
    fixtures::try_keygen(dir, &name.to_string_lossy(), &["-t", "ed25519"], "").map(|_| ())
}

fn known_hosts_line(pub_key: &Path, port: u16) -> Result<String, String> {
    let text = fs::read_to_string(pub_key).map_err(|e| format!("{}: {e}", pub_key.display()))?;
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(b64)) => Ok(format!("[127.0.0.1]:{port} {kind} {b64}")),
        _ => Err(format!("{}: not a public key: {text:?}", pub_key.display())),
    }
}

/// Binds port 0 on 127.0.0.1 and releases it: the port is very likely free
/// for sshd a moment later (a lost race is retried by `start_with`).
fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// sshd started as root needs its privilege separation directory.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() || !running_as_root() {
        return;
    }
    // Best effort: if this fails, sshd's own message ends up in the panic.
    if fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// The user the tests log in as.
pub fn site_user() -> String {
    current_user()
}

pub fn running_as_root() -> bool {
    // /proc/self is owned by the process's effective uid.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn current_user() -> String {
    if let Ok(out) = Command::new("id").arg("-un").stdin(Stdio::null()).output() {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !name.is_empty() {
            return name;
        }
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .expect("cannot tell the current user (id -un failed, USER and LOGNAME unset)")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A tmpfs mounted on a directory for one test; unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        site::mkdirs(dir);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {out:?}",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Remount read-only (`ro: true`) or read-write.
    pub fn read_only(&self, ro: bool) {
        let out = Command::new("mount")
            .arg("-o")
            .arg(if ro { "remount,ro" } else { "remount,rw" })
            .arg(&self.dir)
            .output()
            .expect("running mount -o remount");
        assert!(out.status.success(), "remounting the tmpfs: {out:?}");
    }

    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.dir)
            .output()
            .expect("running mount -o remount");
        assert!(
            out.status.success(),
            "resizing the tmpfs to {size}: {out:?}"
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// `chattr +i` on a path for one test (an immutable directory cannot lose its entries, nor be
/// removed, even by root); `chattr -i` on drop, so the temp dir can be removed.
pub struct Immutable {
    pub path: PathBuf,
}

impl Immutable {
    /// None when the file system does not support the flag (checked with lsattr).
    pub fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let guard = Immutable {
            path: path.to_path_buf(),
        };
        let flags = Command::new("lsattr").arg("-d").arg(path).output().ok()?;
        let flags = String::from_utf8_lossy(&flags.stdout);
        let set = flags
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('i'));
        (ok && set).then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
    }
}

/// A throwaway login user (`useradd`), for tests that need a deploy user who is not root;
/// removed on drop. Its name is `PREFIX<pid>`.
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    pub fn create(prefix: &str, home: &Path) -> TestUser {
        TestUser::with_shell(prefix, home, Path::new("/bin/sh"))
    }

    /// A user whose login shell is `shell`.
    pub fn with_shell(prefix: &str, home: &Path, shell: &Path) -> TestUser {
        let name = format!("{prefix}{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        // `-p '*'`: no password, but not locked (`!`): sshd without PAM refuses locked accounts
        let out = Command::new("useradd")
            .args(["-M", "-p", "*", "-s"])
            .arg(shell)
            .arg("-d")
            .arg(home)
            .arg(&name)
            .output()
            .expect("running useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        TestUser { name }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // its sshd session may take a moment to end
        for _ in 0..50 {
            let out = Command::new("userdel").arg(&self.name).output();
            if out.map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("userdel").arg("-f").arg(&self.name).output();
    }
}
