//! Snapshots of the rendered deploy script: every change to what runs on a user's server shows up
//! as a readable diff in `tests/snapshots/`. Review with `cargo insta review`.

use std::path::PathBuf;

use cutover::config::{CopyMode, Hooks, Host, HostKeyChecking, Target};
use cutover::layout::ReleaseId;
use cutover::plan::Plan;
use cutover::script::{DeployScript, Lock};
use cutover::source::{Entry, Kind, Manifest};

/// The deploy script as a deploy renders it: the client holds the lock (and talks to the
/// script), or the script takes the lock itself (printed by --emit-script, run by hand).
fn deploy_script(t: &Target, id: &ReleaseId, plan: &Plan, archives: usize, lock: Lock) -> String {
    cutover::script::deploy_script(
        t,
        &DeployScript {
            id,
            digest: "0123456789abcdef0123456789abcdef",
            plan,
            archives,
            lock,
            token: "5f0c2d6e9a8b7c1d3e4f5a6b7c8d9e0f",
            talk: lock == Lock::HeldByClient,
        },
    )
}

fn target(hooks: Hooks) -> Target {
    Target {
        name: "production".into(),
        label: "example.com".into(),
        in_fleet: false,
        shared: Default::default(),
        sftp_only: false,
        barrier_timeout: 300,
        host: Host::Ssh {
            host: "example.com".into(),
            port: 22,
            user: "deploy".into(),
        },
        path: "/var/www/app".into(),
        source: PathBuf::from("/src"),
        config_in_source: None,
        verify_exclude: Vec::new(),
        exclude: vec![],
        include: vec![],
        keep_releases: 3,
        copy: CopyMode::Full,
        hooks,
        identity_file: None,
        known_hosts: None,
        host_key_checking: HostKeyChecking::Strict,
        explicit: Default::default(),
    }
}

fn manifest(items: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::default();
    for (path, spec) in items {
        let kind = match *spec {
            "d" => Kind::Dir,
            s if s.starts_with("->") => Kind::Symlink {
                target: s[2..].into(),
            },
            s => Kind::File {
                size: s.len() as u64,
                hash: xxhash_rust::xxh3::xxh3_128(s.as_bytes()),
            },
        };
        m.entries
            .insert(path.to_string(), Entry { kind, mode: 0o644 });
    }
    m
}

fn id(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

fn v1() -> Manifest {
    manifest(&[
        ("index.php", "<?php echo 1;"),
        ("assets", "d"),
        ("assets/app.css", "body{}"),
        ("assets/old.js", "old"),
        ("vendor", "d"),
        ("vendor/lib.php", "lib"),
        ("latest", "->index.php"),
    ])
}

#[test]
fn first_deploy() {
    let plan = Plan::build(None, &v1(), false);
    insta::assert_snapshot!(deploy_script(
        &target(Hooks::default()),
        &id("20261126120000"),
        &plan,
        1,
        Lock::HeldByClient
    ));
}

#[test]
fn incremental_with_changes_and_deletions() {
    let mut v2 = v1();
    v2.entries.remove("assets/old.js");
    v2.entries.remove("vendor/lib.php");
    v2.entries.remove("vendor");
    v2.entries.insert(
        "index.php".into(),
        Entry {
            kind: Kind::File { size: 2, hash: 2 },
            mode: 0o644,
        },
    );
    v2.entries.insert(
        "src".into(),
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
        },
    );
    v2.entries.insert(
        "src/App.php".into(),
        Entry {
            kind: Kind::File { size: 3, hash: 3 },
            mode: 0o644,
        },
    );
    v2.entries.insert(
        "latest".into(),
        Entry {
            kind: Kind::Symlink {
                target: "src/App.php".into(),
            },
            mode: 0o777,
        },
    );
    let prev = id("20261126120000");
    let plan = Plan::build(Some((&prev, &v1())), &v2, false);
    insta::assert_snapshot!(deploy_script(
        &target(Hooks::default()),
        &id("20261126130000"),
        &plan,
        1,
        Lock::HeldByClient
    ));
}

/// A path that was linked from shared/ is now a directory of the repository, and names that
/// would be shell syntax if they were not quoted.
#[test]
fn shared_path_becomes_repository_dir_with_hostile_names() {
    let prev = id("20261126120000");
    let mut v2 = v1();
    v2.entries.insert(
        "uploads".into(),
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
        },
    );
    v2.entries.insert(
        "uploads/README".into(),
        Entry {
            kind: Kind::File { size: 1, hash: 1 },
            mode: 0o644,
        },
    );
    v2.entries.insert(
        "it's $(touch pwned) `id`;|&<>".into(),
        Entry {
            kind: Kind::File { size: 1, hash: 1 },
            mode: 0o644,
        },
    );
    v2.entries.insert(
        "-rf".into(),
        Entry {
            kind: Kind::File { size: 1, hash: 1 },
            mode: 0o644,
        },
    );
    v2.entries.insert(
        "new\nline".into(),
        Entry {
            kind: Kind::File { size: 1, hash: 1 },
            mode: 0o644,
        },
    );
    let plan = Plan::build(Some((&prev, &v1())), &v2, false);
    insta::assert_snapshot!(deploy_script(
        &target(Hooks::default()),
        &id("20261126130000"),
        &plan,
        1,
        Lock::HeldByClient
    ));
}

#[test]
fn hooks() {
    let hooks = Hooks {
        before_swap: vec![
            "php artisan migrate --force".into(),
            "echo \"it's $CUTOVER_RELEASE\" > build.txt".into(),
        ],
        after_swap: vec!["curl -fsS https://example.com/healthz".into()],
        verify: vec!["curl -fsS http://127.0.0.1/up".into()],
    };
    let plan = Plan::build(None, &v1(), false);
    insta::assert_snapshot!(deploy_script(
        &target(hooks),
        &id("20261126120000"),
        &plan,
        1,
        Lock::HeldByClient
    ));
}

#[test]
fn emit_script_takes_the_lock_itself() {
    let prev = id("20261126120000");
    let mut v2 = v1();
    v2.entries.insert(
        "index.php".into(),
        Entry {
            kind: Kind::File { size: 2, hash: 2 },
            mode: 0o644,
        },
    );
    let plan = Plan::build(Some((&prev, &v1())), &v2, false);
    let mut t = target(Hooks::default());
    t.copy = CopyMode::Hardlink;
    insta::assert_snapshot!(deploy_script(
        &t,
        &id("20261126130000"),
        &plan,
        2,
        Lock::TakenByScript
    ));
}

/// Declared shared paths: the release links them; the script creates missing shared
/// directories and refuses to go on without a declared shared file.
#[test]
fn declared_shared_paths() {
    let mut t = target(Hooks::default());
    t.shared = cutover::config::SharedPaths {
        dirs: vec!["storage".into(), "public/uploads".into()],
        files: vec![".env".into()],
    };
    let mut m = v1();
    cutover::source::link_shared(&mut m, &t.shared);
    let plan = Plan::build(None, &m, false);
    insta::assert_snapshot!(deploy_script(
        &t,
        &id("20261126120000"),
        &plan,
        1,
        Lock::HeldByClient
    ));
}

/// Sent to a shell on stdin (see `script::for_stdin`), a script cut short anywhere runs nothing,
/// and what the whole script runs cannot read the script's text from stdin: with every POSIX
/// shell a server's `sh` may be.
#[test]
fn a_script_sent_on_stdin_runs_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Hooks {
        before_swap: vec!["echo '}'; exit 1".into()],
        ..Default::default()
    };
    let plan = Plan::build(None, &v1(), false);
    let rendered = deploy_script(
        &target(hooks),
        &id("20261126120000"),
        &plan,
        1,
        Lock::HeldByClient,
    );
    // First thing the script does: leave a mark, and read whatever stdin still holds.
    let script = format!("touch ran; cat > stolen\n{rendered}");
    let input = cutover::script::for_stdin(&script);
    // Every line end (where a shell reading line by line would run what it has) and every
    // 251st byte besides.
    let cuts: Vec<usize> = input
        .char_indices()
        .filter(|&(i, c)| c == '\n' || i % 251 == 0)
        .map(|(i, c)| if c == '\n' { i + 1 } else { i })
        .filter(|&i| i < input.trim_end().len())
        .collect();
    assert!(cuts.len() > 300, "{} cuts", cuts.len());

    let shells: &[&[&str]] = &[
        &["sh"], // dash here
        &["bash", "--posix"],
        &["busybox", "sh"],
        &["mksh"],
        &["yash"],
        &["posh"],
    ];
    let mut tried = 0;
    for shell in shells {
        let run = |input: &str| {
            for f in ["ran", "stolen"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
            let Ok(mut sh) = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            else {
                return None;
            };
            use std::io::Write;
            let _ = sh.stdin.take().unwrap().write_all(input.as_bytes());
            sh.wait().unwrap();
            Some(dir.path().join("ran").exists())
        };
        let Some(ran) = run(&input) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{shell:?} is missing in CI: scripts/test installs it"
            );
            continue;
        };
        assert!(ran, "{shell:?}: the whole script runs");
        let stolen = std::fs::read(dir.path().join("stolen")).unwrap();
        assert!(
            stolen.is_empty(),
            "{shell:?}: read from stdin: {:?}",
            String::from_utf8_lossy(&stolen)
        );
        for &cut in &cuts {
            assert_eq!(
                run(&input[..cut]),
                Some(false),
                "{shell:?}: cut at byte {cut} ran something"
            );
        }
        tried += 1;
    }
    assert!(tried >= 1, "no shell to try");
}

/// Every snapshot is a real script: shellcheck finds nothing at warning level or above.
#[test]
fn rendered_scripts_pass_shellcheck() {
    let have = std::process::Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "shellcheck is missing in CI: scripts/test installs it"
        );
        eprintln!("shellcheck not installed: skipped");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // insta's header is a YAML block between the first two `---` lines.
        let script = text.splitn(3, "---\n").nth(2).unwrap();
        assert!(script.starts_with("#!/bin/sh"), "{}", path.display());
        let mut child = std::process::Command::new("shellcheck")
            .args(["-s", "sh", "-S", "warning", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck on {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} snapshots found");
}

#[test]
fn rollback() {
    insta::assert_snapshot!(cutover::script::rollback_script(
        &target(Hooks::default()),
        &id("20261126130000"),
        &id("20261126120000"),
        "5f0c2d6e9a8b7c1d3e4f5a6b7c8d9e0f",
        true
    ));
}

/// `cutover check`'s script for a deploy that would upload 1.5 MiB.
#[test]
fn check() {
    insta::assert_snapshot!(cutover::script::check_script(
        &target(Hooks::default()),
        1536 * 1024,
        412
    ));
}
