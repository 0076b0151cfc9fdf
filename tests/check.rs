//! `cutover check` against a real, throwaway sshd (tests/common/mod.rs) and the local target.
//!
//! Each test builds one broken (or healthy) server, runs `cutover check` and asserts the exit
//! code and the line that names the cause and the path. The check itself must never change the
//! deploy path: the tests that can compare the tree before and after do.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::fixtures::{is_root, keygen, whoami};
use common::site::{chown, fingerprint, snapshot, toml_str, Run, Site, TargetKind};
use common::Sshd;

// --- helpers -------------------------------------------------------------------------------------

fn check(site: &Site) -> Run {
    site.cutover(&["check"])
}

/// The report line of check `name` (`✓ name: …`, `✗ name: …` or `! name: …`).
fn line<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| {
            ["✓", "✗", "!"]
                .iter()
                .any(|m| l.starts_with(&format!("{m} {name}: ")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line\n{}", run.describe()))
}

/// The `fix:` line printed under check `name`.
fn fix<'a>(run: &'a Run, name: &str) -> &'a str {
    let wanted = line(run, name);
    let mut lines = run.stdout.lines().skip_while(|l| *l != wanted).skip(1);
    lines
        .next()
        .and_then(|l| l.strip_prefix("  fix: "))
        .unwrap_or_else(|| panic!("no fix under `{name}`\n{}", run.describe()))
}

fn has_line(run: &Run, name: &str) -> bool {
    run.stdout.lines().any(|l| {
        ["✓", "✗", "!"]
            .iter()
            .any(|m| l.starts_with(&format!("{m} {name}: ")))
    })
}

fn assert_passed(run: &Run, name: &str) {
    let l = line(run, name);
    assert!(
        l.starts_with('✓'),
        "`{name}` should pass\n{}",
        run.describe()
    );
}

fn assert_failed<'a>(run: &'a Run, name: &str, mentions: &[&str]) -> &'a str {
    let l = line(run, name);
    assert!(
        l.starts_with('✗'),
        "`{name}` should fail\n{}",
        run.describe()
    );
    for m in mentions {
        assert!(
            l.contains(m),
            "`{name}` should mention {m:?}\n{}",
            run.describe()
        );
    }
    l
}

fn assert_noted<'a>(run: &'a Run, name: &str, mentions: &[&str]) -> &'a str {
    let l = line(run, name);
    assert!(
        l.starts_with('!'),
        "`{name}` should be a note\n{}",
        run.describe()
    );
    for m in mentions {
        assert!(
            l.contains(m),
            "`{name}` should mention {m:?}\n{}",
            run.describe()
        );
    }
    l
}

/// Every report line is ✓ (nothing failed, nothing noted).
fn assert_all_passed(run: &Run) {
    run.expect_code(0, "check of a good server");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 10, "{}", run.describe());
    for l in lines {
        assert!(
            l.starts_with("✓ "),
            "not a ✓ line: {l:?}\n{}",
            run.describe()
        );
    }
}

/// An SSH site whose sshd gets `extra` appended to its config.
fn ssh_site_with(extra: &str) -> Option<Site> {
    if !common::sshd_or_skip() {
        return None;
    }
    let mut site = Site::new(TargetKind::Local)?;
    site.sshd = Some(Sshd::start_with(extra));
    site.kind = TargetKind::Ssh;
    site.configure("", "");
    Some(site)
}

fn ssh_site() -> Option<Site> {
    Site::new(TargetKind::Ssh)
}

/// Writes the config with the given `[targets.t]` table (for keys `configure` cannot override).
fn write_target_table(site: &Site, table: &str) {
    let text = format!(
        "source = {}\n{table}",
        toml_str(&site.src.display().to_string())
    );
    fs::write(&site.config, text).unwrap();
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// --- a good server -------------------------------------------------------------------------------

/// A new server (the deploy path does not exist yet), then the same server after a deploy: every
/// check passes, the check is one exec call, and it writes nothing under the deploy path.
#[test]
fn good_server_passes_every_check_in_one_exec_and_writes_nothing() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "<h1>hi</h1>\n");
    site.write("assets/app.css", "body{}\n");

    let run = check(&site);
    assert_all_passed(&run);
    for name in [
        "connect",
        "host key",
        "authentication",
        "sftp",
        "upload",
        "exec",
        "tools",
        "copy",
        "swap",
        "deploy path",
        "writable",
        "free space",
    ] {
        assert_passed(&run, name);
    }
    let path = site.path.display().to_string();
    assert!(
        line(&run, "deploy path").contains(&path),
        "{}",
        run.describe()
    );
    assert!(line(&run, "deploy path").contains("does not exist yet"));
    assert!(line(&run, "swap").contains("mv -T"), "{}", run.describe());
    assert!(
        line(&run, "authentication").contains(&site.sshd().identity.display().to_string()),
        "names the key that worked\n{}",
        run.describe()
    );
    assert!(
        line(&run, "upload").contains("2 files"),
        "{}",
        run.describe()
    );
    assert_eq!(site.sshd().exec_sessions(), 1, "{}", site.sshd().log_text());
    assert!(
        fs::symlink_metadata(&site.path).is_err(),
        "check created the deploy path"
    );

    let summary = site.deploy();
    site.write("index.html", "<h1>hi again</h1>\n");
    let before = snapshot(&site.path);
    let execs = site.sshd().exec_sessions();
    let run = check(&site);
    assert_all_passed(&run);
    assert!(
        line(&run, "current").contains(&format!("releases/{}", summary.release)),
        "{}",
        run.describe()
    );
    assert!(
        line(&run, "upload").contains("uploads 1 file,"),
        "{}",
        run.describe()
    );
    let space = line(&run, "free space");
    assert!(
        space.contains(&format!("copy of release {}", summary.release))
            && space.contains("staged and unpacked: "),
        "shows both numbers\n{}",
        run.describe()
    );
    assert_eq!(site.sshd().exec_sessions() - execs, 1);
    assert_eq!(
        snapshot(&site.path),
        before,
        "check changed the deploy path"
    );
}

/// `--json` prints the same results as JSON on stdout, and nothing else there.
#[test]
fn json_report_has_every_check() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let text = check(&site).stdout;
    let run = site.cutover(&["check", "--json"]);
    run.expect_code(0, "check --json");
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", run.describe()));
    assert_eq!(v["target"], "t");
    assert_eq!(v["ready"], true);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), text.lines().count());
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(text.contains(&format!("✓ {}: ", c["name"].as_str().unwrap())));
    }

    // and a failing one says which check failed, with its fix
    fs::create_dir_all(site.at(".cutover/lock")).unwrap();
    let run = site.cutover(&["check", "--json"]);
    run.expect_code(1, "check --json with a lock");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["ready"], false);
    let lock = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lock")
        .unwrap();
    assert_eq!(lock["status"], "fail");
    assert!(lock["fix"].as_str().unwrap().contains("cutover unlock t"));
}

// --- the deploy path -----------------------------------------------------------------------------

#[test]
fn deploy_path_under_a_regular_file_fails() {
    let Some(mut site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let file = site.root().join("file");
    fs::write(&file, "not a directory\n").unwrap();
    site.path = file.join("app");
    site.configure("", "");
    let run = check(&site);
    run.expect_code(1, "check of a path under a regular file");
    assert_failed(
        &run,
        "deploy path",
        &[
            &site.path.display().to_string(),
            &file.display().to_string(),
            "regular file",
        ],
    );
    assert!(fix(&run, "deploy path").contains("targets.t.path"));
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory\n");
}

/// The deploy path exists but belongs to root; the deploy user cannot write into it.
#[test]
fn deploy_path_not_writable_by_the_user_fails() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests run as root in CI: this test creates a user"
        );
        eprintln!("skipping: creating a test user needs root");
        return;
    }
    if !common::sshd_or_skip() {
        return;
    }
    let keys_dir = tempfile::tempdir().unwrap();
    fs::set_permissions(keys_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = keys_dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let user = common::TestUser::create("cochk", &home);
    let keys = keys_dir.path().join("authorized_keys");
    let extra = format!(
        "Match User {}\n    AuthorizedKeysFile {}\n",
        user.name,
        keys.display()
    );
    let Some(site) = ssh_site_with(&extra) else {
        return;
    };
    let sshd = site.sshd();
    write_mode(
        &keys,
        &fs::read_to_string(sshd.identity.with_extension("pub")).unwrap(),
        0o644,
    );
    fs::set_permissions(site.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&site.src, fs::Permissions::from_mode(0o755)).unwrap();
    site.write("index.html", "hi\n");
    fs::create_dir(&site.path).unwrap();
    fs::set_permissions(&site.path, fs::Permissions::from_mode(0o755)).unwrap();
    let table = site.target_table().replace(
        &format!("user = {}", toml_str(&sshd.user)),
        &format!("user = {}", toml_str(&user.name)),
    );
    assert!(table.contains(&user.name), "{table}");
    write_target_table(&site, &table);

    let run = check(&site);
    run.expect_code(1, "check as a user who cannot write the deploy path");
    assert_passed(&run, "authentication");
    assert!(
        line(&run, "writable").contains(&user.name),
        "{}",
        run.describe()
    );
    assert_failed(
        &run,
        "writable",
        &[
            &site.path.display().to_string(),
            &user.name,
            "not writable",
            "root:root",
        ],
    );
    assert!(fix(&run, "writable").contains(&format!("chown -R '{}'", user.name)));

    // the deploy path is the user's, but its .cutover/ was made read-only (chmod 555): the
    // fix is the mode, not the owner; shared/ owned by root is fine (a deploy only reads it),
    // and no fix re-owns it
    chown(&user.name, &site.path);
    fs::create_dir(site.at(".cutover")).unwrap();
    chown(&user.name, &site.at(".cutover"));
    fs::set_permissions(site.at(".cutover"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::create_dir(site.at("shared")).unwrap();
    let run = check(&site);
    run.expect_code(1, "check with a read-only .cutover/");
    let layout = assert_failed(&run, "layout", &[".cutover is not writable"]);
    assert!(
        !layout.contains("shared is not writable"),
        "{}",
        run.describe()
    );
    let fixed = fix(&run, "layout");
    assert!(
        fixed.contains("chmod u+wx") && !fixed.contains("chown"),
        "{}",
        run.describe()
    );
    fs::remove_dir(site.at("shared")).unwrap();
    fs::set_permissions(site.at(".cutover"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir(site.at(".cutover")).unwrap();
    chown("root", &site.path);

    // a deploy path that does not exist, in a directory the user cannot write
    fs::remove_dir(&site.path).unwrap();
    let run = check(&site);
    run.expect_code(1, "check as a user who cannot create the deploy path");
    assert_failed(
        &run,
        "writable",
        &[
            &site.path.display().to_string(),
            &site.root().display().to_string(),
            "cannot create",
        ],
    );
    assert!(fs::symlink_metadata(&site.path).is_err());
    drop(site);
}

#[test]
fn current_as_a_real_directory_fails_with_the_migration_steps() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    fs::create_dir_all(site.at("current")).unwrap();
    fs::write(site.at("current/index.html"), "old site\n").unwrap();
    let before = snapshot(&site.path);
    let run = check(&site);
    run.expect_code(1, "check with a real directory as current");
    let current = site.at("current").display().to_string();
    assert_failed(
        &run,
        "current",
        &[&current, "real directory", "not a symlink"],
    );
    let steps = fix(&run, "current");
    assert!(
        steps.contains(&format!("cd '{}'", site.path.display()))
            && steps.contains("mv current releases/")
            && steps.contains("ln -s releases/"),
        "{}",
        run.describe()
    );
    // the plan still works (a full upload), and nothing else fails because of it
    assert_passed(&run, "upload");
    assert!(line(&run, "upload").contains("uploads everything"));
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with('✗')).count(),
        1,
        "{}",
        run.describe()
    );
    assert_eq!(snapshot(&site.path), before);
}

/// A file system with bytes left but few inodes (tmpfs nr_inodes, an ext4 full of small
/// files): check fails "free space" on the inodes, and the deploy it predicts does fail.
#[test]
fn too_few_inodes_fail_the_free_space_check_as_the_deploy_fails() {
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(site) = ssh_site() else { return };
    let _fs = common::Tmpfs::mount(&site.path, "16m,nr_inodes=72");
    for i in 0..30 {
        site.write(format!("d{}/page{i}.html", i % 3), format!("<p>{i}</p>\n"));
    }
    site.deploy();
    site.write("d0/page0.html", "<p>changed</p>\n");
    let run = check(&site);
    run.expect_code(
        1,
        "check with too few inodes for a copy of the live release",
    );
    assert_failed(&run, "free space", &["inodes", "free on"]);
    let deploy = site.deploy_with(&[]);
    deploy.expect_code(1, "the deploy check predicted would fail");
    assert!(
        deploy.stderr.to_lowercase().contains("no space"),
        "{}",
        deploy.describe()
    );
}

/// A deploy path that holds a site already (an rsync-era docroot): check notes it (the first
/// deploy would add its layout beside those files) without failing, and writes nothing.
#[test]
fn a_deploy_path_holding_a_site_already_is_noted() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "new\n");
    fs::create_dir_all(site.at("css")).unwrap();
    fs::write(site.at("index.html"), "old site\n").unwrap();
    let before = snapshot(&site.path);
    let run = check(&site);
    run.expect_code(0, "check of a deploy path holding a site");
    assert_noted(
        &run,
        "layout",
        &["2 other entries", "index.html among them"],
    );
    assert_eq!(snapshot(&site.path), before);
}

/// `shared/` as a link (to a network file system, say): `check` fails on it, as the deploy
/// does, naming the link and how to keep shared files elsewhere; neither builds anything. Over
/// SSH with the check script, and on an SFTP-only target with the survey.
#[test]
fn shared_as_a_link_fails_in_check_as_in_the_deploy() {
    let sftp_only = sftp_only_site().map(|mut site| {
        site.configure("", "sftp_only = true");
        site
    });
    for site in [ssh_site(), sftp_only] {
        let Some(site) = site else { return };
        site.write("index.html", "hi\n");
        let elsewhere = site.root().join("nfs-shared");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::create_dir_all(&site.path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, site.at("shared")).unwrap();
        let before = snapshot(&site.path);
        let run = check(&site);
        run.expect_code(1, "check with shared/ as a link");
        assert_eq!(snapshot(&site.path), before, "check wrote something");
        let shared = site.at("shared").display().to_string();
        assert_failed(&run, "layout", &[&shared, "symbolic link"]);
        assert!(
            line(&run, "layout").contains("inside shared/")
                || fix(&run, "layout").contains("inside shared/"),
            "{}",
            run.describe()
        );
        let deploy = site.deploy_with(&[]);
        deploy.expect_code(1, "deploy with shared/ as a link");
        assert!(
            deploy.stderr.contains(&shared) && deploy.stderr.contains("symbolic link"),
            "{}",
            deploy.describe()
        );
        // (the refused deploy gave its lock back; nothing was built, nothing went through the link)
        assert!(!site.at("releases").exists() && !site.at("current").exists());
        assert!(!site.lock_exists());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}

// --- the swap ------------------------------------------------------------------------------------

/// `host = "local"` with a PATH whose first entries are `shim`.
fn local_check_with_path(site: &Site, shim: &Path) -> Run {
    let out = Command::new(common::cutover_bin())
        .arg("--config")
        .arg(&site.config)
        .arg("check")
        .env("HOME", &site.home)
        .env(
            "PATH",
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    Run {
        args: vec!["check".into()],
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn shim(dir: &Path, name: &str, body: &str) {
    write_mode(&dir.join(name), &format!("#!/bin/sh\n{body}\n"), 0o755);
}

/// Without `mv -T` (BSD, macOS), check reports the portable rename the deploy will use; with no
/// atomic way at all it fails rather than let a deploy lose atomicity.
#[test]
fn without_mv_dash_t_the_swap_is_a_portable_rename_or_a_failure() {
    let Some(site) = Site::new(TargetKind::Local) else {
        return;
    };
    site.write("index.html", "hi\n");
    let shims = site.root().join("shim");
    shim(
        &shims,
        "mv",
        "for a do case $a in -T|-h) echo \"mv: illegal option -- ${a#-}\" >&2; exit 64;; esac; done\nexec /bin/mv \"$@\"",
    );
    let run = local_check_with_path(&site, &shims);
    run.expect_code(0, "check without mv -T");
    let swap = line(&run, "swap");
    assert!(
        swap.starts_with("✓ ") && (swap.contains("perl") || swap.contains("python3")),
        "{}",
        run.describe()
    );

    shim(&shims, "perl", "exit 127");
    shim(&shims, "python3", "exit 127");
    let run = local_check_with_path(&site, &shims);
    run.expect_code(1, "check without any atomic rename");
    assert_failed(&run, "swap", &["no atomic way", "mv -T", "perl", "python3"]);
    assert!(fix(&run, "swap").contains("ln -sfn"));
    assert!(fs::symlink_metadata(&site.path).is_err());
}

// --- state left by other deploys -----------------------------------------------------------------

#[test]
fn stale_lock_fails_naming_the_holder_and_cutover_unlock() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    site.deploy();
    write_mode(
        &site.at(".cutover/lock/info"),
        "holder=alice@laptop\npid=4242\nstarted=2026-01-02T03:04:05Z\nrelease=20260102030405\ncommand=cutover deploy\n",
        0o644,
    );
    let run = check(&site);
    run.expect_code(1, "check with a held lock");
    let lock = site.at(".cutover/lock").display().to_string();
    let l = assert_failed(
        &run,
        "lock",
        &[
            &lock,
            "alice@laptop",
            "4242",
            "2026-01-02T03:04:05Z",
            " ago",
        ],
    );
    assert!(!l.contains("holder unknown"));
    assert_eq!(
        fix(&run, "lock"),
        "if no deploy is running (one was killed): cutover unlock t"
    );
    assert!(site.lock_exists(), "check must not touch the lock");
}

/// Staging and a partial release from a killed deploy: a note (the next deploy removes them),
/// not a failure.
#[test]
fn leftover_staging_and_partial_release_are_noted() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    site.deploy();
    write_mode(
        &site.at(".cutover/staging/20260101000000/tree/index.html"),
        "x",
        0o644,
    );
    fs::create_dir_all(site.at("releases/20260101000000.partial")).unwrap();
    let run = check(&site);
    run.expect_code(0, "leftovers do not stop a deploy");
    let staging = site
        .at(".cutover/staging/20260101000000")
        .display()
        .to_string();
    let partial = site
        .at("releases/20260101000000.partial")
        .display()
        .to_string();
    assert_noted(&run, "leftovers", &[&staging, &partial]);
    assert!(fix(&run, "leftovers").contains("the next deploy removes them"));
    assert_eq!(site.staging_leftovers(), vec!["20260101000000"]);
}

#[test]
fn foreign_names_in_releases_are_noted_and_left_alone() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    site.deploy();
    fs::create_dir_all(site.at("releases/old-site")).unwrap();
    let run = check(&site);
    run.expect_code(0, "a foreign name is a note");
    assert_noted(&run, "releases", &["old-site", "left alone"]);
    assert!(site.at("releases/old-site").is_dir());
}

// --- connection stages -------------------------------------------------------------------------

/// A site whose account runs no commands (`ForceCommand internal-sftp`), with one file.
fn sftp_only_site() -> Option<Site> {
    let extra = format!("Match User {}\n    ForceCommand internal-sftp\n", whoami());
    let site = ssh_site_with(&extra)?;
    site.write("index.html", "hi\n");
    Some(site)
}

/// `ForceCommand internal-sftp`: SFTP works, exec does not; check says so and suggests
/// `--emit-script`.
#[test]
fn sftp_only_account_is_reported_with_emit_script() {
    let Some(site) = sftp_only_site() else { return };
    let run = check(&site);
    run.expect_code(1, "check of an SFTP-only account");
    assert_passed(&run, "sftp");
    assert_passed(&run, "upload");
    let server = format!("[127.0.0.1]:{}", site.sshd().port);
    assert_failed(
        &run,
        "exec",
        &["SFTP-only", &server, "sftp connections only"],
    );
    assert!(
        fix(&run, "exec").contains("--emit-script"),
        "{}",
        run.describe()
    );
    assert!(!has_line(&run, "tools"), "no server checks without exec");
    assert!(fs::symlink_metadata(&site.path).is_err());
}

/// A deploy to an SFTP-only account: exit 1, nothing made live, lock and staging gone, and the
/// message points to `cutover check`.
#[test]
fn deploy_to_an_sftp_only_account_fails_cleanly() {
    let Some(site) = sftp_only_site() else { return };
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy to an SFTP-only account");
    assert!(
        run.stderr.contains("SFTP-only") && run.stderr.contains("cutover check"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("released the lock"),
        "{}",
        run.describe()
    );
    assert!(site.current_id().is_none());
    assert!(!site.at(".cutover/lock").exists(), "lock released");
    let staging = site.at(".cutover/staging");
    assert!(
        fs::read_dir(&staging).map_or(true, |mut d| d.next().is_none()),
        "staging removed"
    );
}

#[test]
fn unknown_host_key_fails_with_the_keyscan_line_and_sends_nothing() {
    let Some(mut site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let kh = site.root().join("empty_known_hosts");
    fs::write(&kh, "").unwrap();
    site.set_known_hosts(&kh);
    let fp = fingerprint(&site.sshd().host_key.with_extension("pub"));
    let run = check(&site);
    run.expect_code(1, "check of an unknown host");
    assert_passed(&run, "connect");
    let name = format!("[127.0.0.1]:{}", site.sshd().port);
    assert_failed(&run, "host key", &["not known", &fp, &name]);
    let f = fix(&run, "host key");
    assert!(
        f.contains(&format!(
            "ssh-keyscan -p {} '127.0.0.1' >> '{}'",
            site.sshd().port,
            kh.display()
        )) && f.contains("accept-new"),
        "{}",
        run.describe()
    );
    assert!(
        !has_line(&run, "authentication"),
        "nothing runs after a refused key"
    );
    assert_eq!(site.sshd().exec_sessions(), 0);
    assert_eq!(site.sshd().sftp_sessions(), 0);
    assert_eq!(fs::read_to_string(&kh).unwrap(), "");

    // accept-new records it, as a deploy would, and says so
    site.configure("", "host_key_checking = \"accept-new\"");
    let run = check(&site);
    run.expect_code(0, "check with accept-new");
    assert!(
        line(&run, "host key").contains("recorded"),
        "{}",
        run.describe()
    );
    assert_eq!(fs::read_to_string(&kh).unwrap().lines().count(), 1);
}

#[test]
fn changed_host_key_fails_with_both_fingerprints_and_sends_nothing() {
    let Some(mut site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let other = site.root().join("other_key");
    keygen(
        other.parent().unwrap(),
        &other.file_name().unwrap().to_string_lossy(),
        &["-t", "ed25519"],
        "",
    );
    let b64 = fs::read_to_string(other.with_extension("pub"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let kh = site.root().join("changed_known_hosts");
    let kh_line = format!("[127.0.0.1]:{} ssh-ed25519 {b64}\n", site.sshd().port);
    fs::write(&kh, &kh_line).unwrap();
    site.set_known_hosts(&kh);
    let server_fp = fingerprint(&site.sshd().host_key.with_extension("pub"));
    let known_fp = fingerprint(&other.with_extension("pub"));
    let run = check(&site);
    run.expect_code(1, "check of a host whose key changed");
    assert_failed(
        &run,
        "host key",
        &["CHANGED", &server_fp, &known_fp, &kh.display().to_string()],
    );
    assert!(
        !has_line(&run, "authentication"),
        "nothing runs after a refused key"
    );
    assert_eq!(site.sshd().exec_sessions(), 0);
    assert_eq!(site.sshd().sftp_sessions(), 0);
    assert_eq!(fs::read_to_string(&kh).unwrap(), kh_line);
}

#[test]
fn wrong_key_fails_authentication_naming_the_keys_tried() {
    let Some(site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let other = site.root().join("other_key");
    keygen(
        other.parent().unwrap(),
        &other.file_name().unwrap().to_string_lossy(),
        &["-t", "ed25519"],
        "",
    );
    // the server now authorizes another key than the one cutover offers
    fs::write(
        site.sshd().dir.path().join("authorized_keys"),
        fs::read_to_string(other.with_extension("pub")).unwrap(),
    )
    .unwrap();
    let run = check(&site);
    run.expect_code(1, "check with a key the server does not accept");
    assert_passed(&run, "host key");
    let identity = site.sshd().identity.display().to_string();
    assert_failed(
        &run,
        "authentication",
        &[&identity, &site.sshd().user, "accepted none"],
    );
    assert!(
        fix(&run, "authentication").contains("authorize"),
        "{}",
        run.describe()
    );
    assert!(!has_line(&run, "sftp"));
    assert_eq!(site.sshd().exec_sessions(), 0);
}

/// Nothing listens on the port: "refused", with the port to check.
#[test]
fn refused_connection_is_named_as_such() {
    let Some(site) = ssh_site() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let table = site.target_table().replace(
        &format!("port = {}", site.sshd().port),
        &format!("port = {port}"),
    );
    write_target_table(&site, &table);
    let run = check(&site);
    run.expect_code(1, "check of a closed port");
    assert_failed(
        &run,
        "connect",
        &["refused", &format!("[127.0.0.1]:{port}")],
    );
    assert!(fix(&run, "connect").contains("targets.t.port"));
    assert_eq!(
        run.stdout.lines().filter(|l| !l.starts_with("  ")).count(),
        1
    );
}

#[test]
fn unknown_target_is_a_usage_error() {
    let Some(site) = Site::new(TargetKind::Local) else {
        return;
    };
    site.cutover(&["check", "nope"])
        .expect_code(2, "check of an unknown target");
}

/// Declared shared paths as a deploy would find them: a missing shared file fails check (which
/// passed, and the deploy then failed), with commands that work on a new deploy path (mkdir -p
/// of shared/ first; ssh and scp naming the real login and port); once put there as they say,
/// check and the deploy pass. A shared directory that is a file and a shared file that is a
/// directory fail check and stop the deploy at its survey, before anything is uploaded.
#[test]
fn declared_shared_paths_are_checked_as_a_deploy_needs_them() {
    let Some(mut site) = ssh_site() else { return };
    site.configure("shared_files = [\".env\"]\nshared_dirs = [\"storage\"]", "");
    site.write("index.php", "<?php\n");
    let run = check(&site);
    run.expect_code(1, "a missing shared file");
    assert_failed(&run, "shared", &[".env", "missing"]);
    let fix = fix(&run, "shared");
    let port = site.sshd().port.to_string();
    for needed in ["mkdir -p", "scp -P", port.as_str(), "ssh -p"] {
        assert!(fix.contains(needed), "fix lacks {needed:?}: {fix}");
    }
    assert!(!fix.contains("HOST"), "{fix}");
    // What the fix does, done on this machine (the sshd is here): the deploy path gets shared/.
    fs::create_dir_all(site.at("shared")).unwrap();
    fs::write(site.at("shared/.env"), "APP_KEY=x\n").unwrap();
    let run = check(&site);
    run.expect_code(0, "the shared file in place");
    assert_passed(&run, "shared");
    let first = site.deploy();

    // shared/storage a file, shared/.env a directory: each fails check and the deploy.
    fs::remove_dir_all(site.at("shared/storage")).unwrap();
    fs::write(site.at("shared/storage"), "not a directory\n").unwrap();
    let run = check(&site);
    run.expect_code(1, "a shared directory that is a file");
    assert_failed(&run, "shared", &["storage", "not a directory"]);
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a deploy with a shared directory that is a file");
    assert!(
        run.stderr.contains("stage survey") && run.stderr.contains("shared/storage"),
        "{}",
        run.describe()
    );
    fs::remove_file(site.at("shared/storage")).unwrap();
    fs::remove_file(site.at("shared/.env")).unwrap();
    fs::create_dir(site.at("shared/.env")).unwrap();
    let run = check(&site);
    assert_failed(&run, "shared", &[".env", "is a directory"]);
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a deploy with a shared file that is a directory");
    assert!(run.stderr.contains("is a directory"), "{}", run.describe());
    assert_eq!(site.current_id(), Some(first.release.clone()));
    assert_eq!(site.releases(), vec![first.release]);
    site.assert_clean("after the refused deploys");
}

/// A deploy path on a file system mounted read-only: check says so and suggests a remount,
/// not the chown or chmod it suggested (which cannot help: the owner may write already). Both
/// for a deployed path and for a new one below the mount.
#[test]
fn a_read_only_file_system_is_named_as_such() {
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(mut site) = ssh_site() else { return };
    site.write("index.html", "hi\n");
    let mount = site.root().join("ro");
    let tmpfs = common::Tmpfs::mount(&mount, "8m");
    site.set_path(mount.join("app"));
    site.deploy();
    tmpfs.read_only(true);
    let run = check(&site);
    run.expect_code(1, "a read-only deploy path");
    assert_failed(&run, "writable", &["mounted read-only"]);
    let fix = fix(&run, "writable");
    assert!(
        fix.contains("remount,rw") && !fix.contains("chown"),
        "{fix}"
    );

    site.set_path(mount.join("new").join("app"));
    let run = check(&site);
    assert_failed(&run, "writable", &["mounted read-only"]);
    tmpfs.read_only(false);
    drop(tmpfs);
}
