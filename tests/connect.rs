//! Connecting like OpenSSH, end to end: every test starts real `sshd`s (tests/common/mod.rs)
//! and deploys with the `cutover` binary, asserting either a deploy that went live or a refusal
//! that wrote nothing (no deploy path, no exec or SFTP session in the target's sshd log).
//!
//! Each run gets its own HOME (so the developer's `~/.ssh` is never read), no ssh-agent unless
//! the test starts one, and `CUTOVER_SSH_CONFIG` pointing at the test's own ssh config file (empty
//! unless the test writes one), so neither `~/.ssh/config` nor `/etc/ssh/ssh_config` apply.
mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixtures::{keygen, pub_of};
use common::site::{fingerprint, noise, toml_str};
use common::{cutover_bin, sshd_or_skip, Sshd};

const PASSPHRASE: &str = "correct horse battery staple";

// --- fixtures ------------------------------------------------------------------------------------

/// A source tree, a deploy path, a HOME, a cutover.toml and an ssh config, in one temp dir.
struct Project {
    tmp: tempfile::TempDir,
    home: PathBuf,
    app: PathBuf,
    config: PathBuf,
    ssh_config: PathBuf,
}

/// One finished cutover run.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::Builder::new()
            .prefix("cutover-connect-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join("src")).unwrap();
        fs::write(root.join("src/index.html"), "<h1>hello</h1>\n").unwrap();
        fs::create_dir_all(root.join("home/.ssh")).unwrap();
        fs::write(root.join("ssh_config"), "").unwrap();
        Project {
            home: root.join("home"),
            app: root.join("app"),
            config: root.join("cutover.toml"),
            ssh_config: root.join("ssh_config"),
            tmp,
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes cutover.toml with one target `t` made of `target_lines` plus the deploy path.
    fn target(&self, target_lines: &str) {
        let text = format!(
            "source = {}\n[targets.t]\npath = {}\n{target_lines}\n",
            toml_str(&self.root().join("src").display().to_string()),
            toml_str(&self.app.display().to_string()),
        );
        fs::write(&self.config, text).unwrap();
    }

    fn write_ssh_config(&self, text: &str) {
        fs::write(&self.ssh_config, text).unwrap();
    }

    /// `cutover deploy` with extra environment variables.
    fn deploy(&self, env: &[(&str, &str)]) -> Out {
        self.run("deploy", env)
    }

    /// `cutover COMMAND` with extra environment variables.
    fn run(&self, command: &str, env: &[(&str, &str)]) -> Out {
        let dir = tempfile::tempdir().unwrap();
        let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
        let mut cmd = Command::new(cutover_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg(command)
            .current_dir(self.root())
            .env("HOME", &self.home)
            .env("CUTOVER_SSH_CONFIG", &self.ssh_config)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CUTOVER_SSH_PASSPHRASE")
            .env_remove("CUTOVER_SSH_KEY")
            .env_remove("CUTOVER_KNOWN_HOSTS")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning cutover");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cutover {command} did not finish within 60 s\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Out {
            code: status.code(),
            stdout: fs::read_to_string(&out_path).unwrap(),
            stderr: fs::read_to_string(&err_path).unwrap(),
        }
    }

    fn current(&self) -> Option<PathBuf> {
        fs::read_link(self.app.join("current")).ok()
    }

    fn assert_deployed(&self, out: &Out, what: &str) {
        assert_eq!(
            out.code,
            Some(0),
            "{what}: expected success\n{}",
            out.describe()
        );
        assert!(
            self.current().is_some(),
            "{what}: current is not a symlink\n{}",
            out.describe()
        );
        assert!(
            out.stdout.contains(" is live: "),
            "{what}\n{}",
            out.describe()
        );
    }

    /// Exit 1, and nothing reached `sshd`: no deploy path, no exec, no SFTP.
    fn assert_refused(&self, out: &Out, sshd: &Sshd, what: &str) {
        assert_eq!(
            out.code,
            Some(1),
            "{what}: expected exit 1\n{}",
            out.describe()
        );
        assert!(
            fs::symlink_metadata(&self.app).is_err(),
            "{what}: the deploy path was created\n{}",
            out.describe()
        );
        assert_eq!(sshd.exec_sessions(), 0, "{what}: {}", sshd.log_text());
        assert_eq!(sshd.sftp_sessions(), 0, "{what}: {}", sshd.log_text());
    }
}

/// `host`, `port`, `user` and `known_hosts` lines for `sshd` (no identity_file).
fn sshd_lines(sshd: &Sshd, known_hosts: &Path) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = {}\nknown_hosts = {}\n",
        sshd.port,
        toml_str(&sshd.user),
        toml_str(&known_hosts.display().to_string())
    )
}

fn identity_line(key: &Path) -> String {
    format!("identity_file = {}\n", toml_str(&key.display().to_string()))
}

/// Adds `key`'s public half to the server's authorized_keys.
fn authorize(sshd: &Sshd, key: &Path) {
    let line = fs::read_to_string(pub_of(key)).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(sshd.dir.path().join("authorized_keys"))
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// `TYPE BASE64` of a public key file.
fn key_text(pub_file: &Path) -> String {
    let text = fs::read_to_string(pub_file).unwrap();
    let mut f = text.split_whitespace();
    format!("{} {}", f.next().unwrap(), f.next().unwrap())
}

/// An `ssh-agent -D` of the test's own, on its own socket; killed on drop.
struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, sock }
    }

    fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-add {}: {out:?}", key.display());
    }

    fn env(&self) -> (&'static str, String) {
        ("SSH_AUTH_SOCK", self.sock.display().to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- authentication ------------------------------------------------------------------------------

/// No identity_file: every agent key is offered (an unauthorized one first), and the
/// authorized one logs in.
#[test]
fn agent_keys_are_offered_without_identity_file() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let agent = Agent::start(p.root());
    agent.add(&keygen(p.root(), "stranger", &["-t", "ed25519"], ""));
    agent.add(&sshd.identity);
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let (k, v) = agent.env();
    p.assert_deployed(&p.deploy(&[(k, &v)]), "deploy with ssh-agent keys");

    // and without the agent the same deploy has no key to offer
    let q = Project::new();
    q.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let out = q.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no usable key") && out.stderr.contains("publickey"),
        "says there was nothing to offer and what the server accepts\n{}",
        out.describe()
    );
}

/// An RSA key in the agent signs with rsa-sha2-*: the server here accepts nothing else.
#[test]
fn agent_rsa_key_signs_with_sha2() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start_with("PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256");
    let p = Project::new();
    let rsa = keygen(p.root(), "rsa", &["-t", "rsa", "-b", "3072"], "");
    authorize(&sshd, &rsa);
    let agent = Agent::start(p.root());
    agent.add(&rsa);
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let (k, v) = agent.env();
    p.assert_deployed(&p.deploy(&[(k, &v)]), "deploy with an RSA agent key");
    assert_eq!(
        sshd.count_log("Accepted publickey"),
        1,
        "{}",
        sshd.log_text()
    );
    assert!(
        sshd.log_text().contains("ssh2: RSA SHA256:"),
        "{}",
        sshd.log_text()
    );
}

/// An encrypted identity file whose key is in the agent needs no passphrase: the agent signs.
#[test]
fn encrypted_identity_file_held_by_the_agent_needs_no_passphrase() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let key = keygen(p.root(), "locked", &["-t", "ed25519"], PASSPHRASE);
    authorize(&sshd, &key);
    let agent = Agent::start(p.root());
    // ssh-add needs the passphrase: hand it over through an askpass script
    let askpass = p.root().join("askpass");
    fs::write(&askpass, format!("#!/bin/sh\necho '{PASSPHRASE}'\n")).unwrap();
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.sock)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-add: {out:?}");
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&key)));
    let (k, v) = agent.env();
    let out = p.deploy(&[(k, &v)]);
    p.assert_deployed(&out, "encrypted identity file, key in the agent");
}

/// IdentityFile naming the PUBLIC key, whose private half is only in the agent (1Password,
/// Secretive), with IdentitiesOnly: the agent's key it names is offered (and only it), as
/// OpenSSH does.
#[test]
fn identity_file_naming_a_public_key_held_by_the_agent_logs_in() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let key = keygen(p.root(), "agent-only", &["-t", "ed25519"], "");
    authorize(&sshd, &key);
    let agent = Agent::start(p.root());
    agent.add(&keygen(p.root(), "stranger", &["-t", "ed25519"], ""));
    agent.add(&key);
    // only the public half stays on disk
    let public = p.root().join("agent-only-public.pub");
    fs::rename(pub_of(&key), &public).unwrap();
    fs::remove_file(&key).unwrap();
    p.write_ssh_config(&format!(
        "Host 127.0.0.1\n  IdentityFile {}\n  IdentitiesOnly yes\n",
        public.display()
    ));
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let (k, v) = agent.env();
    let out = p.deploy(&[(k, &v)]);
    p.assert_deployed(&out, "IdentityFile = the public key, its key in the agent");
    // cutover.toml's identity_file the same way
    let q = Project::new();
    q.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&public)));
    q.assert_deployed(&q.deploy(&[(k, &v)]), "identity_file = the public key");
}

/// `IdentitiesOnly yes`: agent keys that are not the configured identity files are not offered,
/// even when one of them would work.
#[test]
fn identities_only_keeps_other_agent_keys_back() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let other = keygen(p.root(), "other", &["-t", "ed25519"], "");
    let agent = Agent::start(p.root());
    agent.add(&sshd.identity);
    p.write_ssh_config(&format!(
        "Host 127.0.0.1\n  IdentityFile {}\n  IdentitiesOnly yes\n",
        other.display()
    ));
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let (k, v) = agent.env();
    let out = p.deploy(&[(k, &v)]);
    p.assert_refused(
        &out,
        &sshd,
        "IdentitiesOnly with the authorized key only in the agent",
    );
    assert!(
        out.stderr.contains("IdentitiesOnly") && out.stderr.contains("other"),
        "lists what was tried and what was held back\n{}",
        out.describe()
    );

    // without IdentitiesOnly the agent key is offered after the identity file
    p.write_ssh_config(&format!(
        "Host 127.0.0.1\n  IdentityFile {}\n",
        other.display()
    ));
    p.assert_deployed(&p.deploy(&[(k, &v)]), "the same without IdentitiesOnly");
}

/// An encrypted ed25519 identity file: unlocked by CUTOVER_SSH_PASSPHRASE; without it (and no
/// terminal) a clear error, exit 1, nothing written; the passphrase never appears.
#[test]
fn encrypted_key_needs_cutover_ssh_passphrase() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let key = keygen(p.root(), "locked", &["-t", "ed25519"], PASSPHRASE);
    authorize(&sshd, &key);
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&key)));

    let out = p.deploy(&[]);
    p.assert_refused(&out, &sshd, "encrypted key without a passphrase");
    assert!(
        out.stderr.contains("encrypted") && out.stderr.contains("CUTOVER_SSH_PASSPHRASE"),
        "{}",
        out.describe()
    );

    let out = p.deploy(&[("CUTOVER_SSH_PASSPHRASE", "not the passphrase")]);
    p.assert_refused(&out, &sshd, "encrypted key with a wrong passphrase");
    assert!(
        out.stderr.contains("does not decrypt"),
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("not the passphrase"),
        "{}",
        out.describe()
    );

    let out = p.deploy(&[("CUTOVER_SSH_PASSPHRASE", PASSPHRASE)]);
    p.assert_deployed(&out, "encrypted key with CUTOVER_SSH_PASSPHRASE");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(PASSPHRASE), "{}", out.describe());
        assert!(!text.contains("horse"), "{}", out.describe());
    }
}

/// An RSA identity file signs with SHA-2 (the server accepts rsa-sha2-* only).
#[test]
fn rsa_identity_file_signs_with_sha2() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start_with("PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256");
    let p = Project::new();
    let rsa = keygen(p.root(), "rsa", &["-t", "rsa", "-b", "3072"], "");
    authorize(&sshd, &rsa);
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&rsa)));
    p.assert_deployed(&p.deploy(&[]), "deploy with an RSA identity file");
    assert!(
        sshd.log_text().contains("ssh2: RSA SHA256:"),
        "{}",
        sshd.log_text()
    );
}

/// Identity files are offered in order, each key asked about before it signs (the published
/// russh always sends the unsigned query first, as OpenSSH's ssh does): the refused key costs one
/// query and no signature, the authorized one is asked about and then signs, exactly once.
#[test]
fn key_files_are_offered_in_order_and_only_the_accepted_one_signs() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let other = keygen(p.root(), "other", &["-t", "ed25519"], "");
    p.write_ssh_config(&format!(
        "Host app\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentityFile {}\n  \
         UserKnownHostsFile {}\n",
        sshd.port,
        sshd.user,
        other.display(),
        sshd.identity.display(),
        sshd.known_hosts.display()
    ));
    p.target("host = \"app\"\n");
    let out = p.deploy(&[]);
    p.assert_deployed(&out, "deploy with a refused key file, then the right one");
    // The destination it names is the login the ssh config made (its port, not 22).
    assert!(
        out.stderr.contains(&format!("{}@app:", sshd.user))
            && out.stderr.contains(&format!("(port {})", sshd.port)),
        "{}",
        out.describe()
    );
    let log = sshd.log_text();
    assert_eq!(sshd.count_log("Failed publickey"), 1, "{log}");
    // sshd's word for a key it would take, asked about without a signature
    assert_eq!(sshd.count_log("Postponed publickey"), 1, "{log}");
    assert_eq!(sshd.count_log("Accepted publickey"), 1, "{log}");
}

/// Keys in the old PEM format (`ssh-keygen -m PEM`): RSA, ECDSA, and an encrypted RSA one.
#[test]
fn pem_format_keys_are_accepted() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let keys = [
        (
            keygen(
                p.root(),
                "rsa_pem",
                &["-t", "rsa", "-b", "2048", "-m", "PEM"],
                "",
            ),
            "",
        ),
        (
            keygen(p.root(), "ecdsa_pem", &["-t", "ecdsa", "-m", "PEM"], ""),
            "",
        ),
        (
            keygen(
                p.root(),
                "rsa_pem_locked",
                &["-t", "rsa", "-b", "2048", "-m", "PEM"],
                PASSPHRASE,
            ),
            PASSPHRASE,
        ),
    ];
    for (key, pass) in &keys {
        let head = fs::read_to_string(key).unwrap();
        assert!(
            head.starts_with("-----BEGIN RSA PRIVATE KEY-----")
                || head.starts_with("-----BEGIN EC PRIVATE KEY-----"),
            "{} is PEM",
            key.display()
        );
        authorize(&sshd, key);
        let _ = fs::remove_dir_all(&p.app);
        p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(key)));
        let env: Vec<(&str, &str)> = if pass.is_empty() {
            vec![]
        } else {
            let out = p.deploy(&[]);
            assert_eq!(out.code, Some(1), "{}", out.describe());
            assert!(
                out.stderr.contains("encrypted") && out.stderr.contains("CUTOVER_SSH_PASSPHRASE"),
                "an encrypted PEM key without a passphrase\n{}",
                out.describe()
            );
            vec![("CUTOVER_SSH_PASSPHRASE", pass)]
        };
        p.assert_deployed(&p.deploy(&env), &format!("PEM key {}", key.display()));
    }
}

/// Whichever of the ciphers OpenSSH offers by default a server keeps, the deploy uses it: the
/// client's order (AES-GCM first where the CPU has AES instructions) only decides between
/// ciphers both ends allow.
#[test]
fn a_server_restricted_to_one_cipher_is_met_on_it() {
    if !sshd_or_skip() {
        return;
    }
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes128-ctr",
    ] {
        let sshd = Sshd::start_with(&format!("Ciphers {cipher}\nLogLevel DEBUG1\n"));
        let p = Project::new();
        p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&sshd.identity)));
        p.assert_deployed(&p.deploy(&[]), cipher);
        let log = sshd.log_text();
        assert!(
            log.contains(&format!("kex: client->server cipher: {cipher} ")),
            "{cipher} not used:\n{log}"
        );
    }
}

/// A server that allows OpenSSH's default AEAD ciphers: AES-128-GCM is chosen where this CPU has
/// AES and carry-less multiply instructions, ChaCha20-Poly1305 elsewhere.
#[test]
fn aes_gcm_is_chosen_where_the_cpu_has_aes_instructions() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start_with("LogLevel DEBUG1\n");
    let p = Project::new();
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&sshd.identity)));
    p.assert_deployed(&p.deploy(&[]), "default ciphers");
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| {
        flags
            .lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .any(|l| l.split_whitespace().any(|w| w == f))
    };
    let expected = if (has("aes") && has("pclmulqdq")) || (has("aes") && has("pmull")) {
        "aes128-gcm@openssh.com"
    } else {
        "chacha20-poly1305@openssh.com"
    };
    let log = sshd.log_text();
    assert!(
        log.contains(&format!("kex: client->server cipher: {expected} ")),
        "expected {expected}:\n{log}"
    );
}

// --- user certificates ---------------------------------------------------------------------------

/// An sshd that trusts a user CA (and has no authorized_keys line for the keys below), and a
/// fresh key in `p` with no certificate yet: (sshd, the CA's private key, the key).
fn sshd_trusting_a_user_ca(p: &Project) -> (Sshd, PathBuf, PathBuf) {
    let ca = keygen(p.root(), "user_ca", &["-t", "ed25519"], "");
    let sshd = Sshd::start_with(&format!("TrustedUserCAKeys {}\n", pub_of(&ca).display()));
    let key = keygen(p.root(), "certified", &["-t", "ed25519"], "");
    (sshd, ca, key)
}

/// sshd logged a login with an Ed25519 certificate (not with a plain key).
fn assert_certificate_login(sshd: &Sshd) {
    let log = sshd.log_text();
    assert!(
        log.contains("Accepted publickey") && log.contains("ED25519-CERT"),
        "sshd logged no certificate login:\n{log}"
    );
}

/// `ssh-keygen -s CA`: a certificate for `key` valid for `principal`, as `KEY-cert.pub`.
fn certify(ca: &Path, key: &Path, principal: &str) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", "cutover-test", "-n", principal, "-V", "-5m:+1h"])
        .arg(pub_of(key))
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen -s: {out:?}");
    let mut cert = key.as_os_str().to_owned();
    cert.push("-cert.pub");
    let cert = PathBuf::from(cert);
    assert!(cert.exists(), "{} was not written", cert.display());
    cert
}

/// The server trusts a user CA and knows no key: the identity file alone is refused, and with
/// its certificate beside it (`KEY-cert.pub`, where `ssh-keygen -s` and Vault put it) the same
/// deploy logs in with the certificate.
#[test]
fn user_certificate_beside_the_key_file_logs_in() {
    if !sshd_or_skip() {
        return;
    }
    let p = Project::new();
    let (sshd, ca, key) = sshd_trusting_a_user_ca(&p);
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&key)));
    let out = p.deploy(&[]);
    p.assert_refused(
        &out,
        &sshd,
        "a key the server does not know, no certificate",
    );

    // A certificate for another principal is offered and refused; the key alone still is.
    certify(&ca, &key, "someone-else");
    let out = p.deploy(&[]);
    p.assert_refused(&out, &sshd, "a certificate for another principal");
    assert!(
        out.stderr.contains("certified-cert.pub") && out.stderr.contains("rejected"),
        "the refused certificate is named among what was tried:\n{}",
        out.describe()
    );

    certify(&ca, &key, &sshd.user);
    let out = p.deploy(&[]);
    p.assert_deployed(&out, "identity file with its certificate beside it");
    assert_certificate_login(&sshd);
}

/// `CertificateFile` in the ssh config names a certificate kept elsewhere than beside its key.
#[test]
fn certificate_file_from_the_ssh_config_logs_in() {
    if !sshd_or_skip() {
        return;
    }
    let p = Project::new();
    let (sshd, ca, key) = sshd_trusting_a_user_ca(&p);
    let issued = certify(&ca, &key, &sshd.user);
    let elsewhere = p.root().join("signed").join("deploy-cert.pub");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::rename(&issued, &elsewhere).unwrap();
    p.write_ssh_config(&format!(
        "Host app\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
         CertificateFile {}\n  UserKnownHostsFile {}\n",
        sshd.port,
        sshd.user,
        key.display(),
        elsewhere.display(),
        sshd.known_hosts.display()
    ));
    p.target("host = \"app\"\n");
    let out = p.deploy(&[]);
    p.assert_deployed(&out, "CertificateFile from the ssh config");
    assert_certificate_login(&sshd);
}

/// A certificate held by ssh-agent (`ssh-add` loads `KEY-cert.pub` with its key, as
/// `step ssh login` and Teleport do): no identity file is configured, and it logs in.
#[test]
fn agent_certificate_logs_in() {
    if !sshd_or_skip() {
        return;
    }
    let p = Project::new();
    let (sshd, ca, key) = sshd_trusting_a_user_ca(&p);
    certify(&ca, &key, &sshd.user);
    let agent = Agent::start(p.root());
    agent.add(&key);
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let (k, v) = agent.env();
    let out = p.deploy(&[(k, &v)]);
    p.assert_deployed(&out, "certificate in ssh-agent");
    assert_certificate_login(&sshd);
}

// --- host keys -----------------------------------------------------------------------------------

/// Deploys with `known_hosts` holding `text` (`{key}` = the server's `TYPE BASE64`,
/// `{port}` = its port).
fn deploy_with_known_hosts(sshd: &Sshd, text: &str) -> (Project, Out) {
    let p = Project::new();
    let kh = p.root().join("known_hosts");
    let text = text
        .replace("{key}", &key_text(&sshd.host_key.with_extension("pub")))
        .replace("{port}", &sshd.port.to_string());
    fs::write(&kh, text).unwrap();
    p.target(&(sshd_lines(sshd, &kh) + &identity_line(&sshd.identity)));
    let out = p.deploy(&[]);
    (p, out)
}

#[test]
fn hashed_known_hosts_entry_is_accepted() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let kh = p.root().join("known_hosts");
    fs::copy(&sshd.known_hosts, &kh).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let hashed = fs::read_to_string(&kh).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    p.target(&(sshd_lines(&sshd, &kh) + &identity_line(&sshd.identity)));
    p.assert_deployed(&p.deploy(&[]), "hashed known_hosts entry");
}

#[test]
fn wildcard_known_hosts_entry_is_accepted() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let (p, out) = deploy_with_known_hosts(&sshd, "# comment\n[127.0.0.*]:{port}\t{key}\n");
    p.assert_deployed(&out, "wildcard known_hosts entry");
}

#[test]
fn negated_known_hosts_entry_is_refused() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let (p, out) = deploy_with_known_hosts(&sshd, "[127.0.0.*]:{port},![127.0.0.1]:{port} {key}\n");
    p.assert_refused(&out, &sshd, "a negated pattern vetoes the line");
    assert!(out.stderr.contains("not known"), "{}", out.describe());
}

#[test]
fn revoked_host_key_is_refused_even_when_also_listed() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let fp = fingerprint(&sshd.host_key.with_extension("pub"));
    let (p, out) = deploy_with_known_hosts(&sshd, "[127.0.0.1]:{port} {key}\n@revoked * {key}\n");
    p.assert_refused(&out, &sshd, "@revoked host key");
    assert!(
        out.stderr.contains("@revoked") && out.stderr.contains(&fp),
        "{}",
        out.describe()
    );
}

/// An sshd presenting an ECDSA host certificate for `principal`, signed by a fresh CA. Returns
/// the server and the CA's `TYPE BASE64`.
fn sshd_with_host_certificate(principal: &str) -> (Sshd, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ca = keygen(dir.path(), "host_ca", &["-t", "ed25519"], "");
    let host = keygen(dir.path(), "host_ecdsa", &["-t", "ecdsa"], "");
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(&ca)
        .args(["-I", "test-host", "-h", "-n", principal, "-V", "-5m:+1h"])
        .arg(pub_of(&host))
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen -s: {out:?}");
    let cert = dir.path().join("host_ecdsa-cert.pub");
    assert!(cert.exists());
    let sshd = Sshd::start_with(&format!(
        "HostKey {}\nHostCertificate {}\n",
        host.display(),
        cert.display()
    ));
    (sshd, key_text(&pub_of(&ca)), dir)
}

/// known_hosts has only `@cert-authority` for the host: a certificate from that CA naming
/// 127.0.0.1 is accepted; one naming another host is refused.
#[test]
fn host_certificate_from_a_trusted_ca_is_accepted() {
    if !sshd_or_skip() {
        return;
    }
    let (sshd, ca, _keep) = sshd_with_host_certificate("127.0.0.1");
    let (p, out) = deploy_with_known_hosts(&sshd, &format!("@cert-authority [127.0.0.1]:* {ca}\n"));
    p.assert_deployed(&out, "host certificate signed by a trusted CA");

    let (sshd, ca, _keep) = sshd_with_host_certificate("other.example.com");
    let (p, out) = deploy_with_known_hosts(&sshd, &format!("@cert-authority [127.0.0.1]:* {ca}\n"));
    p.assert_refused(&out, &sshd, "host certificate for another principal");
}

/// accept-new (here from the ssh config's StrictHostKeyChecking) records the unknown key in a
/// line `ssh-keygen -F` finds, then deploys.
#[test]
fn accept_new_records_a_line_ssh_keygen_finds() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let kh = p.root().join("recorded_known_hosts");
    p.write_ssh_config(&format!(
        "Host 127.0.0.1\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {}\n",
        kh.display()
    ));
    p.target(&format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = {}\n{}",
        sshd.port,
        toml_str(&sshd.user),
        identity_line(&sshd.identity)
    ));
    let out = p.deploy(&[]);
    p.assert_deployed(&out, "accept-new");
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", sshd.port))
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "ssh-keygen -F finds nothing: {found:?}"
    );
    assert!(
        String::from_utf8_lossy(&found.stdout)
            .contains(&key_text(&sshd.host_key.with_extension("pub"))),
        "{found:?}"
    );
}

/// `StrictHostKeyChecking no` in the ssh config does not turn checking off: an unknown host is
/// refused and the warning says so.
#[test]
fn strict_host_key_checking_no_is_treated_as_strict() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let kh = p.root().join("empty_known_hosts");
    fs::write(&kh, "").unwrap();
    p.write_ssh_config("Host *\n  StrictHostKeyChecking no\n");
    p.target(&(sshd_lines(&sshd, &kh) + &identity_line(&sshd.identity)));
    let out = p.deploy(&[]);
    p.assert_refused(&out, &sshd, "StrictHostKeyChecking no, unknown host");
    assert!(
        out.stderr.contains("StrictHostKeyChecking no") && out.stderr.contains("not known"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read_to_string(&kh).unwrap(), "", "nothing recorded");
}

// --- ~/.ssh/config -------------------------------------------------------------------------------

/// `host` is an alias; HostName, Port, User, IdentityFile and UserKnownHostsFile come from the
/// ssh config; cutover.toml's own `port` wins when given.
#[test]
fn host_alias_from_the_ssh_config() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    p.write_ssh_config(&format!(
        "# test config\nHost other\n  Port 1\n\nHost app-*  !app-staging\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  \
         IdentityFile {}\n  UserKnownHostsFile {}\n",
        sshd.port,
        sshd.user,
        sshd.identity.display(),
        sshd.known_hosts.display()
    ));
    p.target("host = \"app-production\"\n");
    p.assert_deployed(&p.deploy(&[]), "deploy to a Host alias");
    // check's JSON names the login as the deploy does: the ssh config's user and port
    let json = Command::new(cutover_bin())
        .arg("--config")
        .arg(&p.config)
        .args(["check", "--json"])
        .current_dir(p.root())
        .env("HOME", &p.home)
        .env("CUTOVER_SSH_CONFIG", &p.ssh_config)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(
        text.contains(&format!("{}@app-production", sshd.user))
            && text.contains(&format!("(port {})", sshd.port))
            && text.contains("\"host\": \"app-production\""),
        "{text}"
    );

    // cutover.toml wins: a port where nothing listens
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = fs::remove_dir_all(&p.app);
    p.target(&format!("host = \"app-production\"\nport = {closed}\n"));
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains("refused"), "{}", out.describe());

    // the negated pattern keeps app-staging out of the block: no such host
    p.target("host = \"app-staging\"\n");
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(fs::symlink_metadata(&p.app).is_err());
}

/// ProxyJump through a second sshd: the jump host's key is checked, the deploy goes through
/// a direct-tcpip channel, and the jump host runs nothing itself.
#[test]
fn proxy_jump_through_a_second_sshd() {
    if !sshd_or_skip() {
        return;
    }
    let target = Sshd::start();
    let jump = Sshd::start_with("AllowTcpForwarding yes");
    let p = Project::new();
    let kh = p.root().join("known_hosts");
    fs::write(
        &kh,
        format!(
            "{}\n{}\n",
            target.host_public_key_line(),
            jump.host_public_key_line()
        ),
    )
    .unwrap();
    p.write_ssh_config(&format!(
        "Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n\
         Host app\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  ProxyJump bastion\n",
        jump.port,
        jump.user,
        jump.identity.display(),
        target.port,
        target.user,
        target.identity.display()
    ));
    p.target(&format!(
        "host = \"app\"\nknown_hosts = {}\n",
        toml_str(&kh.display().to_string())
    ));
    p.assert_deployed(&p.deploy(&[]), "deploy through a jump host");
    assert_eq!(
        jump.count_log("Accepted publickey"),
        1,
        "{}",
        jump.log_text()
    );
    assert_eq!(
        jump.exec_sessions() + jump.sftp_sessions(),
        0,
        "{}",
        jump.log_text()
    );
    assert_eq!(target.exec_sessions(), 1, "{}", target.log_text());

    // the jump host's key unknown: refused before the target is even contacted
    let q = Project::new();
    let only_target = q.root().join("known_hosts");
    fs::write(&only_target, format!("{}\n", target.host_public_key_line())).unwrap();
    fs::copy(&p.ssh_config, &q.ssh_config).unwrap();
    q.target(&format!(
        "host = \"app\"\nknown_hosts = {}\n",
        toml_str(&only_target.display().to_string())
    ));
    let connections = target.count_log("Connection from");
    let out = q.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("jump host") && out.stderr.contains("not known"),
        "{}",
        out.describe()
    );
    assert_eq!(
        target.count_log("Connection from"),
        connections,
        "{}",
        target.log_text()
    );
    assert!(fs::symlink_metadata(&q.app).is_err());
}

/// Two hops given as `user@host:port`, comma-separated, with the key in ~/.ssh/id_ed25519.
#[test]
fn proxy_jump_with_two_hops_in_user_at_host_port_form() {
    if !sshd_or_skip() {
        return;
    }
    let target = Sshd::start();
    let first = Sshd::start_with("AllowTcpForwarding yes");
    let second = Sshd::start_with("AllowTcpForwarding yes");
    let p = Project::new();
    // one key for all three, found as the default ~/.ssh/id_ed25519
    let key = p.home.join(".ssh/id_ed25519");
    fs::copy(&target.identity, &key).unwrap();
    fs::copy(pub_of(&target.identity), pub_of(&key)).unwrap();
    authorize(&first, &key);
    authorize(&second, &key);
    let kh = p.root().join("known_hosts");
    fs::write(
        &kh,
        format!(
            "{}\n{}\n{}\n",
            target.host_public_key_line(),
            first.host_public_key_line(),
            second.host_public_key_line()
        ),
    )
    .unwrap();
    // (the hops are 127.0.0.1 too: a `Host 127.0.0.1` block would make them jump to themselves)
    p.write_ssh_config(&format!(
        "Host app\n  HostName 127.0.0.1\n  ProxyJump {u}@127.0.0.1:{},ssh://{u}@127.0.0.1:{}\n",
        first.port,
        second.port,
        u = target.user
    ));
    p.target(&sshd_lines(&target, &kh).replace("\"127.0.0.1\"", "\"app\""));
    p.assert_deployed(&p.deploy(&[]), "deploy through two jump hosts");
    assert_eq!(
        first.count_log("Accepted publickey"),
        1,
        "{}",
        first.log_text()
    );
    assert_eq!(
        second.count_log("Accepted publickey"),
        1,
        "{}",
        second.log_text()
    );
}

// --- connection failures -------------------------------------------------------------------------

/// DNS failure, refused port and a server that never answers each get their own message.
#[test]
fn connection_failures_are_told_apart() {
    let p = Project::new();
    p.target("host = \"no-such-host.invalid\"\n");
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot resolve") && out.stderr.contains("stage connect"),
        "{}",
        out.describe()
    );

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    p.target(&format!("host = \"127.0.0.1\"\nport = {closed}\n"));
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains("refused"), "{}", out.describe());

    // accepts TCP, never speaks SSH: ConnectTimeout from the ssh config applies
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    p.write_ssh_config("Host 127.0.0.1\n  ConnectTimeout 1\n");
    p.target(&format!("host = \"127.0.0.1\"\nport = {port}\n"));
    let started = Instant::now();
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("timed out after 1 s"),
        "{}",
        out.describe()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}

/// A TCP relay to `to` that cuts both directions once `limit` bytes went from client to server.
fn cutting_proxy(to: u16, limit: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let pump = |mut from: TcpStream, mut into: TcpStream, count: Option<Arc<AtomicU64>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(c) = &count {
                        if c.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                            break;
                        }
                    }
                    if into.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = from.shutdown(Shutdown::Both);
                let _ = into.shutdown(Shutdown::Both);
            })
        };
        let up = pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            Some(sent),
        );
        let down = pump(server, client, None);
        let _ = up.join();
        let _ = down.join();
    });
    port
}

/// The connection drops in the middle of the upload: exit 1, the error names the stage and
/// says the connection was lost, and current still points at the previous release.
#[test]
fn connection_dropped_during_upload_leaves_current_untouched() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&sshd.identity)));
    p.assert_deployed(&p.deploy(&[]), "first deploy");
    let before = p.current().unwrap();

    fs::write(p.root().join("src/big.bin"), noise(42, 4 << 20)).unwrap();
    let proxy = cutting_proxy(sshd.port, 1 << 20);
    let kh = p.root().join("proxy_known_hosts");
    fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{proxy} {}\n",
            key_text(&sshd.host_key.with_extension("pub"))
        ),
    )
    .unwrap();
    p.target(&format!(
        "host = \"127.0.0.1\"\nport = {proxy}\nuser = {}\nknown_hosts = {}\n{}",
        toml_str(&sshd.user),
        toml_str(&kh.display().to_string()),
        identity_line(&sshd.identity)
    ));
    let out = p.deploy(&[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("stage upload")
            && out.stderr.contains("connection")
            && out.stderr.contains("lost"),
        "names the stage and the lost connection\n{}",
        out.describe()
    );
    assert_eq!(p.current().unwrap(), before, "current untouched");
}

/// With stdin a terminal and no CUTOVER_SSH_PASSPHRASE, the passphrase is asked for on the
/// terminal, with echo off: it never shows on screen. Runs cutover inside tmux.
#[test]
fn encrypted_key_passphrase_is_asked_on_the_terminal_without_echo() {
    if !sshd_or_skip() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipping: tmux is not installed");
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let key = keygen(p.root(), "locked", &["-t", "ed25519"], PASSPHRASE);
    authorize(&sshd, &key);
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&key)));
    let q = |s: &Path| format!("'{}'", s.display());
    let script = format!(
        "env -u SSH_AUTH_SOCK -u CUTOVER_SSH_PASSPHRASE HOME={} CUTOVER_SSH_CONFIG={} {} --config {} deploy; \
         echo EXIT=$?; sleep 60",
        q(&p.home),
        q(&p.ssh_config),
        q(&cutover_bin()),
        q(&p.config)
    );
    let socket = format!("cutover-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "200",
        "-y",
        "50",
        &script,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen =
        || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = screen();
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                tmux(&["kill-server"]);
                panic!("{needle:?} never appeared on the terminal:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("Enter passphrase for key");
    tmux(&["send-keys", "-t", "t", "-l", PASSPHRASE]);
    tmux(&["send-keys", "-t", "t", "Enter"]);
    let text = wait_for("EXIT=");
    tmux(&["kill-server"]);
    assert!(text.contains("EXIT=0"), "{text}");
    assert!(
        !text.contains(PASSPHRASE) && !text.contains("horse"),
        "{text}"
    );
    assert!(p.current().is_some(), "{text}");
}

/// A relay to `to` that, once `silence` is set, keeps both connections open but passes nothing
/// more: a peer that vanished without a word (a dead link, a dropped NAT entry).
fn silencing_proxy(to: u16, silence: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
        for (mut from, mut into) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            let silence = silence.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !silence.load(Ordering::SeqCst) && into.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = into.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// ServerAliveInterval from the ssh config: a server that goes silent while the script runs is
/// noticed after a few unanswered keepalives (not after the default 15 s × 3), and the error
/// says the connection ended before the script reported back.
#[test]
fn server_alive_interval_notices_a_silent_server() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let silence = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = silencing_proxy(sshd.port, silence.clone());
    let kh = p.root().join("proxy_known_hosts");
    fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{proxy} {}\n",
            key_text(&sshd.host_key.with_extension("pub"))
        ),
    )
    .unwrap();
    let marker = p.root().join("hook-started");
    p.write_ssh_config("Host 127.0.0.1\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n");
    p.target(&format!(
        "host = \"127.0.0.1\"\nport = {proxy}\nuser = {}\nknown_hosts = {}\n{}\
         [targets.t.hooks]\nbefore_swap = [\"touch '{}' && sleep 20\"]\n",
        toml_str(&sshd.user),
        toml_str(&kh.display().to_string()),
        identity_line(&sshd.identity),
        marker.display()
    ));
    let watcher = {
        let (marker, silence) = (marker.clone(), silence.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !marker.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            silence.store(true, Ordering::SeqCst);
            Instant::now()
        })
    };
    let out = p.deploy(&[]);
    let silenced_at = watcher.join().unwrap();
    assert!(marker.exists(), "the hook never ran\n{}", out.describe());
    let noticed_after = silenced_at.elapsed();
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("stage run") && out.stderr.contains("connection ended"),
        "{}",
        out.describe()
    );
    // ~3 s with ServerAliveInterval 1 × 2; the default (15 s × 3) would need a minute.
    assert!(
        noticed_after < Duration::from_secs(30),
        "noticed only after {noticed_after:?}: ServerAliveInterval was not applied"
    );
    assert!(
        out.stderr.contains("was lost (Keepalive timeout)"),
        "noticed after {noticed_after:?} by keepalives\n{}",
        out.describe()
    );
}

// --- CI credentials from the environment ----------------------------------------------------

/// Every file under `dir` (following no symlinks) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// A line from the middle of a private key file: secret material that appears nowhere else.
fn secret_line(key: &Path) -> String {
    let text = fs::read_to_string(key).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len() / 2].to_string()
}

/// Asserts that the key's secret material is in neither output nor any file under `dirs`.
fn assert_key_left_no_trace(key: &Path, out: &Out, dirs: &[&Path]) {
    let secret = secret_line(key);
    assert!(secret.len() > 20, "{secret:?}");
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(&secret),
            "the key is in the output\n{}",
            out.describe()
        );
        assert!(!text.contains("PRIVATE KEY"), "{}", out.describe());
    }
    for dir in dirs {
        let found: Vec<PathBuf> = files_containing(dir, secret.as_bytes())
            .into_iter()
            .filter(|f| f != key)
            .collect();
        assert!(found.is_empty(), "the key was written to {found:?}");
    }
}

/// CUTOVER_SSH_KEY: a deploy from a HOME with no keys, no agent and no identity_file works with
/// the key's text in the variable (also pasted as one line with literal \n, as some CI secret
/// stores keep it), fails without it, and the key is never printed or written anywhere (the
/// project, its HOME, the deploy path, the TMPDIR given to cutover).
#[test]
fn ssh_key_from_the_environment_logs_in_and_is_never_written() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    p.target(&sshd_lines(&sshd, &sshd.known_hosts));
    let tmp = p.root().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let tmpdir = tmp.display().to_string();

    let out = p.deploy(&[("TMPDIR", &tmpdir)]);
    p.assert_refused(&out, &sshd, "no key anywhere");
    assert!(out.stderr.contains("no usable key"), "{}", out.describe());
    assert!(
        out.stderr.contains("CUTOVER_SSH_KEY"),
        "the hint names it\n{}",
        out.describe()
    );

    let text = fs::read_to_string(&sshd.identity).unwrap();
    let out = p.deploy(&[("CUTOVER_SSH_KEY", &text), ("TMPDIR", &tmpdir)]);
    p.assert_deployed(&out, "deploy with CUTOVER_SSH_KEY");
    assert_key_left_no_trace(&sshd.identity, &out, &[p.root(), &tmp]);

    let one_line = text.trim_end().replace('\n', "\\n");
    assert!(!one_line.contains('\n'));
    fs::write(p.root().join("src/index.html"), "<h1>again</h1>\n").unwrap();
    let out = p.deploy(&[("CUTOVER_SSH_KEY", &one_line), ("TMPDIR", &tmpdir)]);
    p.assert_deployed(&out, "deploy with CUTOVER_SSH_KEY on one line");
    assert_key_left_no_trace(&sshd.identity, &out, &[p.root(), &tmp]);
    assert_eq!(
        sshd.count_log("Accepted publickey"),
        2,
        "{}",
        sshd.log_text()
    );
}

/// CUTOVER_SSH_KEY holding an encrypted key: refused without CUTOVER_SSH_PASSPHRASE (saying so),
/// unlocked with it; neither the key nor the passphrase is printed. The variable's key is
/// offered before identity_file: the refused identity file is never tried.
#[test]
fn encrypted_ssh_key_from_the_environment_is_unlocked_by_the_passphrase() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let key = keygen(p.root(), "locked", &["-t", "ed25519"], PASSPHRASE);
    authorize(&sshd, &key);
    let stranger = keygen(p.root(), "stranger", &["-t", "ed25519"], "");
    p.target(&(sshd_lines(&sshd, &sshd.known_hosts) + &identity_line(&stranger)));
    let text = fs::read_to_string(&key).unwrap();

    let out = p.deploy(&[("CUTOVER_SSH_KEY", &text)]);
    p.assert_refused(
        &out,
        &sshd,
        "encrypted CUTOVER_SSH_KEY without a passphrase",
    );
    assert!(
        out.stderr.contains("$CUTOVER_SSH_KEY: encrypted")
            && out.stderr.contains("CUTOVER_SSH_PASSPHRASE"),
        "{}",
        out.describe()
    );

    let before = sshd.count_log("Failed publickey");
    let out = p.deploy(&[
        ("CUTOVER_SSH_KEY", &text),
        ("CUTOVER_SSH_PASSPHRASE", PASSPHRASE),
    ]);
    p.assert_deployed(&out, "encrypted CUTOVER_SSH_KEY with its passphrase");
    assert_eq!(
        sshd.count_log("Failed publickey"),
        before,
        "the identity file was offered before the variable's key\n{}",
        sshd.log_text()
    );
    assert_key_left_no_trace(&key, &out, &[p.root()]);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(PASSPHRASE), "{}", out.describe());
    }
}

/// CUTOVER_KNOWN_HOSTS: with an empty known_hosts file the server is unknown; the variable's line
/// makes it known (the file stays empty: nothing is recorded), for `cutover check` and a deploy
/// alike. Its lines are matched like the files' lines: an @revoked line there refuses a key the
/// file trusts.
#[test]
fn known_hosts_from_the_environment_are_trusted_and_their_revocations_honoured() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let p = Project::new();
    let empty = p.root().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    p.target(&(sshd_lines(&sshd, &empty) + &identity_line(&sshd.identity)));

    let out = p.deploy(&[]);
    p.assert_refused(&out, &sshd, "unknown host");
    assert!(out.stderr.contains("not known"), "{}", out.describe());

    let line = sshd.host_public_key_line();
    let lines = format!("# from a CI secret\n{line}\n");
    let out = p.run("check", &[("CUTOVER_KNOWN_HOSTS", &lines)]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("✓ host key: the key"),
        "{}",
        out.describe()
    );
    let out = p.deploy(&[("CUTOVER_KNOWN_HOSTS", &lines)]);
    p.assert_deployed(&out, "deploy with CUTOVER_KNOWN_HOSTS");
    assert_eq!(fs::read_to_string(&empty).unwrap(), "", "nothing recorded");

    // the file trusts the key, the variable revokes it
    fs::write(&empty, format!("{line}\n")).unwrap();
    let key = key_text(&sshd.host_key.with_extension("pub"));
    let fp = fingerprint(&sshd.host_key.with_extension("pub"));
    let out = p.deploy(&[("CUTOVER_KNOWN_HOSTS", &format!("@revoked * {key}\n"))]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("@revoked in $CUTOVER_KNOWN_HOSTS:1") && out.stderr.contains(&fp),
        "{}",
        out.describe()
    );
}
