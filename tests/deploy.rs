//! End-to-end deploys: each scenario of tests/common/scenarios.rs against a `host = "local"`
//! target and against a real, throwaway OpenSSH sshd on 127.0.0.1 (tests/common/mod.rs); then
//! what only one kind of target can show: the config and `init` contract (local), one exec per
//! deploy and host key checking (SSH; the other host key cases are in tests/connect.rs).
mod common;

use std::fs;
use std::process::Command;

use common::fixtures::both_targets;
use common::scenarios::*;
use common::site::TargetKind::{Local, Ssh};
use common::site::{
    fingerprint, run_cutover, toml_str, write_webapp, Site, TargetKind, WEBAPP_NOT_DEPLOYED,
};

both_targets!(
    first_deploy_gives_the_exact_layout,
    second_deploy_uploads_only_changed_files,
    full_deploy_uploads_everything_again,
    runtime_files_are_carried_into_the_next_release,
    shared_entries_are_linked_by_the_rule,
    former_shared_link_now_in_the_repo_never_writes_into_shared,
    emit_script_with_nothing_changed_stages_the_manifest,
    emit_script_is_completed_by_running_it,
    dry_run_writes_nothing,
    failing_before_swap_hook_leaves_current_untouched,
    failing_after_swap_hook_exits_3_and_stays_live,
    hooks_see_the_release_environment,
    held_lock_refuses_and_unlock_clears_it,
    hostile_names_deploy_byte_exact,
    type_changes_are_applied,
    hardlink_copy_keeps_the_previous_release_intact,
    ignore_rules_and_include_patterns_apply,
    non_utf8_name_is_refused_before_anything_is_sent,
    concurrent_deploy_is_refused_while_one_runs,
    interrupt_while_the_script_runs_lets_it_finish,
    deploy_after_an_unrun_emitted_script_builds_exactly_the_source,
    tampered_manifest_is_refused,
    emitted_script_stops_when_its_previous_release_is_gone,
    current_that_is_a_directory_is_refused,
    missing_manifest_means_a_full_upload_into_an_empty_release,
    absolute_current_link_is_understood_and_made_relative,
    deploy_path_with_shell_syntax_works,
    foreign_names_in_releases_are_left_alone,
    repository_symlinks_into_shared_survive_later_deploys,
    hostile_shared_names_are_linked,
    large_and_empty_files_are_byte_exact,
    thousands_of_files_change_and_go,
    stale_pending_lock_dirs_are_removed,
);

fn three_releases_are_kept_by_default(kind: TargetKind) {
    only_keep_releases_releases_are_kept(kind, None);
}

fn keep_releases_from_config_is_honoured(kind: TargetKind) {
    only_keep_releases_releases_are_kept(kind, Some(2));
}

fn interrupt_during_the_upload_abandons_cleanly(kind: TargetKind) {
    interrupt_before_the_script_abandons_cleanly(kind, Moment::Upload);
}

fn interrupt_right_after_the_lock_is_taken_releases_it(kind: TargetKind) {
    interrupt_before_the_script_abandons_cleanly(kind, Moment::LockTaken);
}

both_targets!(
    three_releases_are_kept_by_default,
    keep_releases_from_config_is_honoured,
    interrupt_during_the_upload_abandons_cleanly,
    interrupt_right_after_the_lock_is_taken_releases_it,
);

// --- the local target only ----------------------------------------------------------------------

// --- config errors: exit 2, nothing attempted ---------------------------------------------------

struct Project {
    tmp: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::Builder::new()
            .prefix("cutover-cfg-")
            .tempdir()
            .unwrap();
        fs::create_dir(tmp.path().join("home")).unwrap();
        fs::create_dir(tmp.path().join("src")).unwrap();
        fs::write(tmp.path().join("src/index.html"), "<h1>hi</h1>\n").unwrap();
        Project { tmp }
    }
    fn deploy_path(&self) -> String {
        self.tmp.path().join("app").display().to_string()
    }
    /// Writes cutover.toml and runs `cutover --config cutover.toml ARGS` in the project dir.
    fn run_with(&self, config: &str, args: &[&str]) -> common::site::Run {
        fs::write(self.tmp.path().join("cutover.toml"), config).unwrap();
        self.run(args)
    }
    fn run(&self, args: &[&str]) -> common::site::Run {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run_cutover(self.tmp.path(), &self.tmp.path().join("home"), &args)
    }
    fn assert_nothing_deployed(&self) {
        assert!(
            fs::symlink_metadata(self.tmp.path().join("app")).is_err(),
            "a config error must not create the deploy path"
        );
    }
}

/// `shared_dirs = ["public/uploads"]` where the source's `public` is a link to `web` (a
/// common layout): the release would have a directory `public` holding only the shared link,
/// and the site served from public/ would be gone. Refused with exit 2 before anything is
/// written, naming the path to declare instead; declared that way, it deploys and the link
/// stays a link.
#[test]
fn shared_path_below_a_source_link_is_refused_with_the_path_to_declare() {
    let Some(mut site) = Site::new(Local) else {
        return;
    };
    site.configure("shared_dirs = [\"public/uploads\"]", "");
    site.write("web/index.html", "<h1>hi</h1>\n");
    site.symlink("public", "web");
    let run = site.deploy_with(&[]);
    run.expect_code(2, "a shared path below a link of the source");
    assert!(
        run.stderr.contains("public -> web") && run.stderr.contains("\"web/uploads\""),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None, "{}", run.describe());
    assert!(site.releases().is_empty(), "{}", run.describe());

    site.configure("shared_dirs = [\"web/uploads\"]", "");
    let s = site.deploy();
    let release = site.release_dir(&s.release);
    assert_eq!(
        fs::read_link(release.join("public")).unwrap(),
        std::path::PathBuf::from("web")
    );
    assert_eq!(
        fs::read_to_string(release.join("public/index.html")).unwrap(),
        "<h1>hi</h1>\n"
    );
    assert!(
        release.join("public/uploads").is_dir(),
        "uploads reached through the link"
    );
}

#[test]
fn missing_config_exits_2_and_suggests_init() {
    let p = Project::new();
    let run = p.run(&["--config", "nope.toml", "deploy"]);
    run.expect_code(2, "missing config");
    assert!(run.stderr.contains("nope.toml"), "{}", run.describe());
    assert!(run.stderr.contains("cutover init"), "{}", run.describe());
    // the default ./cutover.toml too
    let run = p.run(&["deploy", "--dry-run"]);
    run.expect_code(2, "missing default config");
    assert!(run.stderr.contains("cutover.toml"), "{}", run.describe());
    assert!(run.stderr.contains("cutover init"), "{}", run.describe());
}

#[test]
fn unknown_config_keys_exit_2_naming_the_key() {
    let p = Project::new();
    let path = toml_str(&p.deploy_path());
    let top = format!(
        "source = \"src\"\nkeep_release = 3\n[targets.t]\nhost = \"local\"\npath = {path}\n"
    );
    let run = p.run_with(&top, &["deploy"]);
    run.expect_code(2, "unknown top-level key");
    assert!(run.stderr.contains("keep_release"), "{}", run.describe());

    let inner =
        format!("source = \"src\"\n[targets.t]\nhost = \"local\"\npath = {path}\nprot = 22\n");
    let run = p.run_with(&inner, &["deploy"]);
    run.expect_code(2, "unknown target key");
    assert!(run.stderr.contains("prot"), "{}", run.describe());
    p.assert_nothing_deployed();
}

#[test]
fn relative_deploy_path_exits_2() {
    let p = Project::new();
    let cfg = "source = \"src\"\n[targets.t]\nhost = \"local\"\npath = \"app\"\n";
    let run = p.run_with(cfg, &["deploy"]);
    run.expect_code(2, "relative path");
    assert!(run.stderr.contains("targets.t.path"), "{}", run.describe());
    assert!(run.stderr.contains("absolute"), "{}", run.describe());
    p.assert_nothing_deployed();
}

#[test]
fn unknown_target_exits_2_listing_known_ones() {
    let p = Project::new();
    let path = toml_str(&p.deploy_path());
    let cfg = format!("source = \"src\"\n[targets.staging]\nhost = \"local\"\npath = {path}\n");
    let run = p.run_with(&cfg, &["deploy", "production"]);
    run.expect_code(2, "unknown target");
    assert!(run.stderr.contains("production"), "{}", run.describe());
    assert!(
        run.stderr.contains("staging"),
        "lists the known target\n{}",
        run.describe()
    );
    p.assert_nothing_deployed();
}

#[test]
fn invalid_values_exit_2() {
    let p = Project::new();
    let path = toml_str(&p.deploy_path());
    for (cfg, key) in [
        (format!("source = \"src\"\nkeep_releases = 0\n[targets.t]\nhost = \"local\"\npath = {path}\n"), "keep_releases"),
        (format!("source = \"src\"\ncopy = \"rsync\"\n[targets.t]\nhost = \"local\"\npath = {path}\n"), "copy"),
        (format!("source = \"nope\"\n[targets.t]\nhost = \"local\"\npath = {path}\n"), "nope"),
        ("source = \"src\"\n[targets.t]\nhost = \"local\"\npath = \"/\"\n".to_string(), "/"),
        (format!("source = \"src\"\n[targets.t]\nhost = \"example.com\"\nport = 70000\npath = {path}\n"), "port"),
        ("source = \"src\"\n[targets.t\n".to_string(), "cutover.toml"),
    ] {
        let run = p.run_with(&cfg, &["deploy"]);
        run.expect_code(2, &format!("config {cfg:?}"));
        assert!(run.stderr.contains(key), "the message names {key:?}\n{}", run.describe());
    }
    p.assert_nothing_deployed();
    let run = p.run(&["deploy", "--no-such-flag"]);
    run.expect_code(2, "unknown flag");
}

#[test]
fn init_writes_a_usable_config_and_never_overwrites() {
    let p = Project::new();
    let dir = p.tmp.path().join("site");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("index.html"), "<h1>init</h1>\n").unwrap();
    let home = p.tmp.path().join("home");
    let run = run_cutover(&dir, &home, &["init".to_string()]);
    run.expect_code(0, "cutover init");
    let file = dir.join("cutover.toml");
    let text = fs::read_to_string(&file).expect("init wrote ./cutover.toml");
    assert!(text.contains("[targets.production]"), "{text}");

    // edit in a local target path, as a user would
    assert!(
        text.contains("host = \"example.com\"") && text.contains("path = \"/var/www/app\""),
        "{text}"
    );
    let edited = text
        .replace("host = \"example.com\"", "host = \"local\"")
        .replace(
            "path = \"/var/www/app\"",
            &format!("path = {}", toml_str(&p.deploy_path())),
        );
    fs::write(&file, &edited).unwrap();
    let run = run_cutover(
        &dir,
        &home,
        &["deploy".to_string(), "--dry-run".to_string()],
    );
    run.expect_code(0, "dry run with the starter config");
    assert!(run.stdout.contains("dry run"), "{}", run.describe());
    p.assert_nothing_deployed();

    // a second init refuses and leaves the file alone
    let run = run_cutover(&dir, &home, &["init".to_string()]);
    run.expect_code(2, "init over an existing config");
    assert!(run.stderr.contains("already exists"), "{}", run.describe());
    assert_eq!(fs::read_to_string(&file).unwrap(), edited);

    // and the starter config deploys for real
    let run = run_cutover(&dir, &home, &["deploy".to_string()]);
    run.expect_code(0, "deploy with the starter config");
    let live = p.tmp.path().join("app/current/index.html");
    assert_eq!(fs::read_to_string(live).unwrap(), "<h1>init</h1>\n");
}

#[test]
fn quiet_prints_nothing_on_success_but_still_reports_errors() {
    let Some(mut site) = common::site::Site::new(Local) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let run = site.deploy_with(&["-q"]);
    run.expect_code(0, "deploy -q");
    assert_eq!(run.stdout, "", "{}", run.describe());
    assert_eq!(run.stderr, "", "{}", run.describe());
    site.configure(
        "[hooks]\nbefore_swap = [\"echo hook-output-7 >&2; exit 7\"]",
        "",
    );
    let run = site.deploy_with(&["-q", "--force"]);
    run.expect_code(1, "failing deploy -q");
    assert!(run.stderr.contains("before_swap"), "{}", run.describe());
    assert!(
        run.stderr.contains("hook-output-7"),
        "quiet never hides why a deploy failed\n{}",
        run.describe()
    );
}

/// The README's first command: the bundled demo config (with its deploy path moved into a
/// temporary directory) deploys fixtures/demo-site and runs its hooks; a second run with
/// nothing changed builds nothing, and after an edit one more release goes live.
#[test]
fn bundled_demo_config_deploys_the_demo_site() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = fs::read_to_string(root.join("examples/demo/cutover.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    // A copy: the test edits the site between deploys.
    let site = dir.path().join("demo-site");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(root.join("fixtures/demo-site"))
        .arg(&site)
        .status()
        .unwrap();
    assert!(copied.success());
    let config = demo
        .replace(
            "\"../../fixtures/demo-site\"",
            &toml_str(&site.display().to_string()),
        )
        .replace(
            "\"/tmp/cutover-demo\"",
            &toml_str(&app.display().to_string()),
        );
    assert_ne!(
        config, demo,
        "the demo config names its source and path as the README says"
    );
    let file = dir.path().join("cutover.toml");
    fs::write(&file, config).unwrap();
    let args = [
        "deploy".to_string(),
        "--config".to_string(),
        file.display().to_string(),
    ];
    for round in 0..2 {
        let run = run_cutover(dir.path(), dir.path(), &args);
        assert_eq!(run.code, Some(0), "round {round}\n{}", run.describe());
        if round == 1 {
            // Nothing changed: no new release, no hook, and it says so.
            assert!(run.stdout.contains("nothing changed"), "{}", run.describe());
            fs::write(site.join("index.html"), "<h1>edited</h1>\n").unwrap();
            let run = run_cutover(dir.path(), dir.path(), &args);
            assert_eq!(run.code, Some(0), "round {round}\n{}", run.describe());
        }
        assert!(
            round == 1 || run.stderr.contains("live: "),
            "the after_swap hook ran\n{}",
            run.describe()
        );
        let index = fs::read_to_string(app.join("current/index.html")).unwrap();
        assert_eq!(index, fs::read_to_string(site.join("index.html")).unwrap());
        assert!(
            app.join("current/.htaccess").exists(),
            "hidden files are deployed"
        );
    }
    assert_eq!(fs::read_dir(app.join("releases")).unwrap().count(), 2);
}

// --- SSH only -------------------------------------------------------------------------------------

// --- SSH only ------------------------------------------------------------------------------------

/// Every deploy, whatever it does, is exactly ONE exec channel on the server; a failed one too.
#[test]
fn exactly_one_exec_session_per_deploy() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    write_webapp(&site, 10);
    let deploy = |site: &Site, flags: &[&str], code: i32, what: &str| {
        let sshd = site.sshd();
        let (execs, sftps) = (sshd.exec_sessions(), sshd.sftp_sessions());
        site.deploy_with(flags).expect_code(code, what);
        assert_eq!(
            sshd.exec_sessions() - execs,
            1,
            "{what}: one exec per deploy\n{}",
            sshd.log_text()
        );
        assert!(
            sshd.sftp_sessions() > sftps,
            "{what}: files travel over SFTP"
        );
    };
    deploy(&site, &[], 0, "first deploy");
    site.write("index.php", "<?php echo 2;\n");
    site.remove("assets/js/app.js");
    deploy(&site, &[], 0, "incremental deploy");
    deploy(&site, &[], 0, "no-change deploy");
    deploy(&site, &["--full"], 0, "full deploy");
    site.configure("[hooks]\nbefore_swap = [\"exit 7\"]", "");
    site.write("index.php", "<?php echo 3;\n");
    deploy(&site, &[], 1, "deploy with a failing hook");
    site.configure("[hooks]\nafter_swap = [\"exit 7\"]", "");
    deploy(&site, &[], 3, "deploy with a failing after_swap hook");
}

/// Nothing at all reached the server: no exec, no SFTP, no deploy path.
fn assert_nothing_sent(site: &Site) {
    let sshd = site.sshd();
    assert_eq!(sshd.exec_sessions(), 0, "{}", sshd.log_text());
    assert_eq!(sshd.sftp_sessions(), 0, "{}", sshd.log_text());
    assert!(
        fs::symlink_metadata(&site.path).is_err(),
        "the deploy path was created"
    );
}

/// An unknown host key (empty known_hosts) is refused: exit 1, the message says "not known"
/// and shows the SHA256 fingerprint, nothing is sent, and known_hosts is not changed.
#[test]
fn unknown_host_key_is_refused_and_nothing_is_sent() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let empty = site.root().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    site.set_known_hosts(&empty);
    let fp = fingerprint(&site.sshd().host_key.with_extension("pub"));

    for flags in [&[][..], &["--dry-run"][..], &["--emit-script"][..]] {
        let run = site.deploy_with(flags);
        run.expect_code(1, &format!("deploy {flags:?} to an unknown host"));
        assert!(run.stderr.contains("not known"), "{}", run.describe());
        assert!(
            run.stderr.contains(&fp),
            "shows the fingerprint {fp}\n{}",
            run.describe()
        );
        assert!(run.stdout.is_empty(), "{}", run.describe());
        assert_nothing_sent(&site);
        assert_eq!(
            fs::read_to_string(&empty).unwrap(),
            "",
            "strict mode records nothing"
        );
    }
    // a known_hosts file that does not exist at all: the same
    site.set_known_hosts(&site.root().join("missing_known_hosts"));
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy without a known_hosts file");
    assert!(run.stderr.contains("not known"), "{}", run.describe());
    assert_nothing_sent(&site);
}

/// A known_hosts line with another key for this host: refused (also under accept-new), both
/// fingerprints shown, nothing sent, known_hosts untouched.
#[test]
fn changed_host_key_is_refused_showing_both_fingerprints() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let other = site.root().join("other_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "impostor", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    let b64 = other_pub.split_whitespace().nth(1).unwrap();
    let kh = site.root().join("changed_known_hosts");
    let line = format!("[127.0.0.1]:{} ssh-ed25519 {b64}\n", site.sshd().port);
    fs::write(&kh, &line).unwrap();
    site.set_known_hosts(&kh);
    let server_fp = fingerprint(&site.sshd().host_key.with_extension("pub"));
    let known_fp = fingerprint(&other.with_extension("pub"));
    assert_ne!(server_fp, known_fp);

    for extra in ["", "host_key_checking = \"accept-new\""] {
        site.configure("", extra);
        let run = site.deploy_with(&[]);
        run.expect_code(
            1,
            &format!("deploy to a host with a changed key ({extra:?})"),
        );
        assert!(
            run.stderr.contains(&server_fp),
            "offered key {server_fp}\n{}",
            run.describe()
        );
        assert!(
            run.stderr.contains(&known_fp),
            "known key {known_fp}\n{}",
            run.describe()
        );
        assert!(
            !run.stderr.contains("not known"),
            "a changed key is not an unknown one\n{}",
            run.describe()
        );
        assert_nothing_sent(&site);
        assert_eq!(
            fs::read_to_string(&kh).unwrap(),
            line,
            "known_hosts untouched"
        );
    }
}

/// No server listening: exit 1, the message names the target, the stage and the address.
#[test]
fn unreachable_server_fails_with_exit_1_naming_target_and_stage() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    site.configure("", "");
    let cfg = fs::read_to_string(&site.config).unwrap();
    let cfg = cfg.replace(
        &format!("port = {}", site.sshd().port),
        &format!("port = {port}"),
    );
    fs::write(&site.config, cfg).unwrap();
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy to a closed port");
    assert!(run.stderr.contains("target t"), "{}", run.describe());
    assert!(
        run.stderr.contains("connect"),
        "names the stage\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&port.to_string()),
        "names the address\n{}",
        run.describe()
    );
    assert!(fs::symlink_metadata(&site.path).is_err());
}

/// A key the server does not accept: exit 1, nothing written, no exec.
#[test]
fn rejected_key_fails_with_exit_1_and_sends_nothing() {
    let Some(site) = Site::new(Ssh) else { return };
    site.write("index.php", "<?php\n");
    let other = site.root().join("not_authorized");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg = fs::read_to_string(&site.config).unwrap().replace(
        &site.sshd().identity.display().to_string(),
        &other.display().to_string(),
    );
    fs::write(&site.config, cfg).unwrap();
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy with a key the server refuses");
    assert!(run.stderr.contains("authentication"), "{}", run.describe());
    assert!(
        run.stderr.contains(&site.sshd().user),
        "names the user\n{}",
        run.describe()
    );
    assert_eq!(site.sshd().exec_sessions(), 0);
    assert!(fs::symlink_metadata(&site.path).is_err());
}

/// An encrypted identity is unlocked with CUTOVER_SSH_PASSPHRASE, and the passphrase never
/// appears in output (also with -v, also on failure), in the emitted script or on the server.
#[test]
fn passphrase_never_appears_in_output_scripts_or_files() {
    let Some(site) = Site::new(Ssh) else { return };
    site.write("index.php", "<?php\n");
    const PASS: &str = "s3cret-Passphrase-42";
    const WRONG: &str = "wrong-Passphrase-99";
    let key = site.root().join("encrypted_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", PASS, "-C", "encrypted", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let authorized = site.sshd().dir.path().join("authorized_keys");
    let mut keys = fs::read_to_string(&authorized).unwrap();
    keys.push_str(&fs::read_to_string(key.with_extension("pub")).unwrap());
    fs::write(&authorized, keys).unwrap();
    let cfg = fs::read_to_string(&site.config).unwrap().replace(
        &site.sshd().identity.display().to_string(),
        &key.display().to_string(),
    );
    fs::write(&site.config, cfg).unwrap();

    let leaks = |run: &common::site::Run, secret: &str| {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "the passphrase leaked\n{}",
            run.describe()
        );
    };
    // no passphrase: a clear error naming the variable
    let run = site.deploy_with(&["-v"]);
    run.expect_code(1, "deploy with an encrypted key and no passphrase");
    assert!(
        run.stderr.contains("CUTOVER_SSH_PASSPHRASE"),
        "{}",
        run.describe()
    );
    // a wrong one: refused, not shown
    let run = site.cutover_env(&["-v", "deploy"], &[("CUTOVER_SSH_PASSPHRASE", WRONG)]);
    run.expect_code(1, "deploy with a wrong passphrase");
    leaks(&run, WRONG);
    assert!(
        run.stderr.contains(&key.display().to_string()),
        "names the key\n{}",
        run.describe()
    );
    // the right one: deploys, and nothing shows it
    let env = [("CUTOVER_SSH_PASSPHRASE", PASS)];
    let run = site.cutover_env(&["-v", "deploy"], &env);
    run.expect_code(0, "deploy with the passphrase");
    leaks(&run, PASS);
    site.write("index.php", "<?php echo 2;\n");
    let run = site.cutover_env(&["-v", "deploy", "--emit-script"], &env);
    run.expect_code(0, "deploy --emit-script with the passphrase");
    leaks(&run, PASS);
    assert!(run.stdout.starts_with("#!/bin/sh"));
    for (p, node) in common::site::snapshot(&site.path) {
        if let common::site::Node::File { data, .. } = node {
            assert!(
                !String::from_utf8_lossy(&data).contains(PASS),
                "the passphrase is in {}",
                p.display()
            );
        }
    }
    assert!(!site.sshd().log_text().contains(PASS));
}

// --- what a deploy costs ---------------------------------------------------------------------------

/// Nothing changed: no release, no hook, exit 0; `--force` builds one and runs the hooks.
fn nothing_changed_builds_no_release_and_runs_no_hook(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let first = site.deploy().release;
    site.configure(
        "[hooks]\nbefore_swap = [\"touch \\\"$CUTOVER_DEPLOY_PATH/before-$CUTOVER_RELEASE\\\"\"]\n\
         after_swap = [\"touch \\\"$CUTOVER_DEPLOY_PATH/after-$CUTOVER_RELEASE\\\"\"]",
        "",
    );
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy with nothing changed");
    assert!(
        run.stdout
            .contains(&format!("nothing changed: release {first} stays live")),
        "{}",
        run.describe()
    );
    assert_eq!(site.releases(), std::slice::from_ref(&first));
    let hooks_ran: Vec<String> = common::site::list_names(&site.path)
        .into_iter()
        .filter(|n| n.starts_with("before-") || n.starts_with("after-"))
        .collect();
    assert!(hooks_ran.is_empty(), "no hook ran: {hooks_ran:?}");

    let forced = site.deploy_with(&["--force"]);
    forced.expect_code(0, "deploy --force with nothing changed");
    let id = forced.summary().release;
    assert_ne!(id, first);
    assert!(site.at(format!("before-{id}")).exists() && site.at(format!("after-{id}")).exists());
    site.assert_release_is_source(&id, &[]);
}

both_targets!(nothing_changed_builds_no_release_and_runs_no_hook);

/// A deploy of the tree that is live already knows it from `.cutover/current-digest` in the
/// survey's first flight: it never takes the lock and leaves nothing behind. The link speaks
/// for one release only: held by another deploy, on another release after a rollback, or with
/// the release it names gone, the deploy goes the whole way, as without it.
fn the_live_releases_digest_tells_that_nothing_changed(kind: TargetKind) {
    let Some(site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php echo 1;\n");
    let a = site.deploy().release;
    let digest = fs::read_link(site.at(".cutover/current-digest")).expect("the digest link");
    let digest = digest.to_string_lossy().into_owned();
    assert!(
        digest.starts_with(&format!("{a}-")) && digest.len() == a.len() + 33,
        "{digest}"
    );
    let state_before = common::site::list_names(&site.at(".cutover"));
    // Over SSH this machine remembers what it saw live, and expects nothing to change.
    let seen = site.home.join(".cache/cutover/live");
    if kind == Ssh {
        assert_eq!(fs::read_dir(&seen).map(|d| d.count()).unwrap_or(0), 1);
    }

    // Expected unchanged (the lock never half-taken), then from a machine that never deployed
    // here (the lock half-taken on speculation, and given back).
    for (how, forget) in [("expected", false), ("unexpected", true)] {
        if forget {
            fs::remove_dir_all(site.home.join(".cache")).ok();
        }
        let run = site.deploy_with(&["-v"]);
        run.expect_code(0, &format!("deploy of the live tree ({how})"));
        assert!(
            run.stderr
                .contains(&format!("surveyed: release {a} holds this tree already")),
            "{}",
            run.describe()
        );
        assert!(run
            .stdout
            .contains(&format!("nothing changed: release {a} stays live")));
        assert_eq!(
            common::site::list_names(&site.at(".cutover")),
            state_before,
            "no lock, pending lock or anything else left in .cutover ({how})"
        );
        site.assert_clean("no-op deploy");
    }

    // Someone holds the lock: refused as before, not "nothing changed".
    fs::create_dir(site.at(".cutover/lock")).unwrap();
    fs::write(
        site.at(".cutover/lock/info"),
        "holder=someone@elsewhere\npid=1\ncommand=cutover deploy\n",
    )
    .unwrap();
    let refused = site.deploy_with(&[]);
    refused.expect_code(1, "deploy of the live tree while the lock is held");
    assert!(
        !refused.stdout.contains("nothing changed"),
        "{}",
        refused.describe()
    );
    site.cutover(&["unlock"]).expect_code(0, "unlock");

    // On another release after a rollback, the link (naming b) says nothing about `current`.
    site.write("index.php", "<?php echo 2;\n");
    let b = site.deploy().release;
    site.cutover(&["rollback"]).expect_code(0, "rollback to a");
    site.wait_for_prune();
    assert_eq!(site.current_id(), Some(a.clone()));
    let run = site.deploy_with(&["-v"]);
    run.expect_code(0, "deploy of b's tree while a is live");
    assert!(
        !run.stderr.contains("holds this tree already"),
        "{}",
        run.describe()
    );
    let c = run.summary().release;
    assert_ne!(c, a);
    assert_ne!(c, b);
    site.wait_for_prune();
    site.assert_release_is_source(&c, &[]);

    // The release the link names is gone (removed by hand): a release is built again.
    fs::remove_dir_all(site.release_dir(&c)).unwrap();
    let run = site.deploy_with(&["-v"]);
    run.expect_code(0, "deploy after the live release was removed");
    assert!(
        !run.stderr.contains("holds this tree already"),
        "{}",
        run.describe()
    );
    // (it may take the same name again: that name is free now)
    assert!(run.stdout.contains("is live"), "{}", run.describe());
    let d = run.summary().release;
    site.wait_for_prune();
    site.assert_release_is_source(&d, &[]);
}

both_targets!(the_live_releases_digest_tells_that_nothing_changed);

/// The copy of the previous release starts with the upload, not after it: with a slow upload
/// (a 150 MB file), the partial release exists while the archive still grows, and the tree
/// that goes live is still exactly the source.
#[test]
fn the_copy_of_the_previous_release_overlaps_a_slow_upload() {
    let Some(site) = Site::new(Ssh) else { return };
    write_webapp(&site, 20);
    let first = site.deploy().release;
    let big = fs::File::create(site.src.join("big.bin")).unwrap();
    big.set_len(150 * 1024 * 1024).unwrap();
    drop(big);
    site.write("index.php", "<?php echo 'with a big file';\n");
    let running = site.spawn(&["deploy"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut overlapped = None;
    while overlapped.is_none() && std::time::Instant::now() < deadline {
        let partial = common::site::list_names(&site.at("releases"))
            .into_iter()
            .any(|n| n.ends_with(".partial"));
        let staged: u64 = common::site::list_names(&site.at(".cutover/staging"))
            .iter()
            .flat_map(|id| {
                let dir = site.at(format!(".cutover/staging/{id}"));
                common::site::list_names(&dir)
                    .into_iter()
                    .filter(|n| n.ends_with(".tar"))
                    .filter_map(move |n| fs::metadata(dir.join(n)).ok())
            })
            .map(|m| m.len())
            .sum();
        if partial && staged > 0 && staged < 150 * 1024 * 1024 {
            overlapped = Some(staged);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let run = running.wait();
    run.expect_code(0, "deploy with a slow upload");
    let staged = overlapped.expect("the partial release never existed while the upload ran");
    eprintln!("the copy of the previous release ran with {staged} of 157286400 bytes uploaded");
    let s = run.summary();
    assert_ne!(s.release, first);
    site.assert_release_is_source(&s.release, WEBAPP_NOT_DEPLOYED);
}

/// Declared shared paths in a dry run and a deploy: shown as links to shared/ (`link ".env" ->
/// "../../shared/.env"`) and counted apart, never as uploads (`upload ".env"` read as if the
/// local secret file were sent).
#[test]
fn shared_links_are_shown_as_links_not_uploads() {
    let Some(mut site) = Site::new(Local) else {
        return;
    };
    site.configure("shared_files = [\".env\"]\nshared_dirs = [\"storage\"]", "");
    write_file_at(&site.at("shared/.env"), "APP_KEY=x\n");
    site.write("index.php", "<?php\n");
    site.write(".env", "APP_KEY=local-secret\n");
    let first = site.deploy();
    assert_eq!(first.uploaded, 1, "{first:?}");
    let run = site.deploy_with(&["--dry-run", "-v"]);
    run.expect_code(0, "dry run");
    assert!(
        !run.stderr.contains("upload  \".env\""),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr
            .contains("link    \".env\" -> \"../../shared/.env\""),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("0 to upload") && run.stdout.contains("2 links to shared/"),
        "{}",
        run.describe()
    );
}

fn write_file_at(path: &std::path::Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A source path that fits on this machine but not under the server's
/// `DEPLOY_PATH/releases/ID.partial/` (PATH_MAX, 4,095 bytes): refused before anything is
/// written, exit 2, naming it (an SFTP server answered "Bad message", and verify then reported
/// drift that was not there).
#[test]
fn a_path_too_long_for_the_server_is_refused_before_anything_is_written() {
    let Some(site) = Site::new(Local) else {
        return;
    };
    site.write("index.php", "<?php\n");
    // As long as this machine allows under the source (4,090 bytes in all), which is longer
    // than the deploy path (as long as the source's) with releases/ID.partial/ allows.
    let rel_len = 4090 - site.src.display().to_string().len() - 1;
    let component = "x".repeat(100);
    let mut rel = String::new();
    while rel.len() + 101 < rel_len - 8 {
        rel.push_str(&component);
        rel.push('/');
    }
    rel.push_str(&"y".repeat(rel_len - rel.len() - 4));
    rel.push_str(".txt");
    site.write(&rel, "deep\n");
    let run = site.deploy_with(&[]);
    run.expect_code(2, "a path too long for the server");
    assert!(
        run.stderr.contains("PATH_MAX") && run.stderr.contains("xxxxxxxx"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None);
    assert!(site.releases().is_empty());
}
