//! Checks the test harness (tests/common) itself: a real sshd, driven by the
//! system OpenSSH client, with the log counts the other tests rely on.
mod common;

use common::Sshd;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn ssh_true(sshd: &Sshd, known_hosts: &std::path::Path) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg("none")
        .arg("-i")
        .arg(&sshd.identity)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg("-l")
        .arg(&sshd.user)
        .arg("127.0.0.1")
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn ssh_exec_is_counted() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    assert_eq!(sshd.exec_sessions(), 0);
    let out = ssh_true(&sshd, &sshd.known_hosts);
    assert!(
        out.status.success(),
        "ssh failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(sshd.exec_sessions(), 1, "{}", sshd.log_text());

    let out = sshd.ssh_run("echo hello; id -un; echo $0 >&2");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hello\n{}\n", sshd.user)
    );
    assert_eq!(sshd.exec_sessions(), 2);
    assert_eq!(sshd.sftp_sessions(), 0);

    // Exit status is passed through; a command starting with '-' is not taken
    // as an ssh option (it reaches the remote shell, which rejects it).
    let out = sshd.ssh_run("exit 3");
    assert_eq!(out.status.code(), Some(3));
    let out = sshd.ssh_run("-V");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid option"),
        "{out:?}"
    );
    assert_eq!(sshd.exec_sessions(), 4);
}

#[test]
fn sftp_is_counted() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let target = sshd.dir.path().join("uploaded.txt");
    let batch = format!(
        "put {} {}\nls -l {}\n",
        sshd.config.display(),
        target.display(),
        target.display()
    );
    let out = sftp_batch(&sshd, &batch);
    assert!(
        out.status.success(),
        "sftp failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&sshd.config).unwrap()
    );
    assert_eq!(sshd.sftp_sessions(), 1, "{}", sshd.log_text());
    assert_eq!(sshd.exec_sessions(), 0);
}

#[test]
fn wrong_known_hosts_is_refused() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let other = Sshd::start();
    assert_ne!(sshd.port, other.port);

    // The other server's key under this server's name: a changed host key.
    let bad = sshd.dir.path().join("bad_known_hosts");
    let line = other
        .host_public_key_line()
        .replace(&format!(":{} ", other.port), &format!(":{} ", sshd.port));
    std::fs::write(&bad, format!("{line}\n")).unwrap();
    let out = ssh_true(&sshd, &bad);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{out:?}"
    );

    // Unknown host (empty known_hosts) is refused too with StrictHostKeyChecking=yes.
    let empty = sshd.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = ssh_true(&sshd, &empty);
    assert_eq!(out.status.code(), Some(255), "{out:?}");

    // The other server's own known_hosts does not name this port either.
    let out = ssh_true(&sshd, &other.known_hosts);
    assert_eq!(out.status.code(), Some(255), "{out:?}");

    assert_eq!(sshd.exec_sessions(), 0, "{}", sshd.log_text());
    // The good file still works.
    assert!(ssh_true(&sshd, &sshd.known_hosts).status.success());
    assert_eq!(sshd.exec_sessions(), 1);
}

#[test]
fn known_hosts_line_format() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let line = sshd.host_public_key_line();
    assert!(
        line.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port)),
        "{line}"
    );
    assert_eq!(line.split(' ').count(), 3);
    assert_eq!(
        std::fs::read_to_string(&sshd.known_hosts).unwrap(),
        format!("{line}\n")
    );
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&sshd.identity), 0o600);
    assert_eq!(mode(sshd.dir.path()), 0o755);
}

#[test]
fn extra_config_match_block_applies() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start_with("Match all\n    ForceCommand echo forced\n");
    let out = sshd.ssh_run("echo not-forced");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "forced\n");
    assert_eq!(
        sshd.count_log("Starting session: forced-command"),
        1,
        "{}",
        sshd.log_text()
    );
}

#[test]
fn sftp_only_account_refuses_exec() {
    if !common::sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start_with("Match all\n    ForceCommand internal-sftp\n");
    let out = sshd.ssh_run("echo should-not-run");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("should-not-run"),
        "{out:?}"
    );
    assert_eq!(sshd.exec_sessions(), 0, "{}", sshd.log_text());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sftp connections only"),
        "{out:?}"
    );

    // SFTP works, but sshd logs it as a forced command, not as a subsystem, and
    // exactly like the refused exec: sftp_sessions() stays 0 on such a server.
    assert!(sftp_batch(&sshd, "pwd\n").status.success());
    assert_eq!(sshd.sftp_sessions(), 0, "{}", sshd.log_text());
    assert_eq!(
        sshd.count_log("Starting session: forced-command (config) 'internal-sftp"),
        2
    );
}

fn sftp_batch(sshd: &Sshd, batch: &str) -> std::process::Output {
    let mut child = Command::new("sftp")
        .args(["-b", "-", "-F", "none", "-i"])
        .arg(&sshd.identity)
        .args(common::client_options(&sshd.known_hosts))
        .arg("-P")
        .arg(sshd.port.to_string())
        .arg(format!("{}@127.0.0.1", sshd.user))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn many_servers_in_parallel_then_drop_frees_port() {
    if !common::sshd_or_skip() {
        return;
    }
    let handles: Vec<_> = (0..6).map(|_| std::thread::spawn(Sshd::start)).collect();
    let servers: Vec<Sshd> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for s in &servers {
        assert!(s.ssh_run("true").status.success());
        assert_eq!(s.exec_sessions(), 1);
    }
    let port = servers[0].port;
    let dir = servers[0].dir.path().to_path_buf();
    drop(servers);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "sshd still listening after drop"
    );
    assert!(!dir.exists());
}

#[test]
#[should_panic(expected = "could not start sshd")]
fn bad_config_panics_with_log() {
    if !common::sshd_or_skip() {
        panic!("could not start sshd (skipped)");
    }
    let _ = Sshd::start_with("NoSuchKeyword yes\n");
}
