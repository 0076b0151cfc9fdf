//! End-to-end deploys over SSH/SFTP to a real, throwaway OpenSSH sshd on 127.0.0.1 (see
//! tests/common/mod.rs). The deploy bodies are shared with tests/deploy_local.rs; the tests
//! below them need a server: one exec per deploy, host key checking.
mod common;

use std::fs;
use std::process::Command;

use common::scenarios as s;
use common::site::{fingerprint, write_webapp, Site, TargetKind::Ssh};

#[test]
fn first_deploy_gives_the_exact_layout() {
    s::first_deploy_gives_the_exact_layout(Ssh);
}

#[test]
fn second_deploy_uploads_only_changed_files() {
    s::second_deploy_uploads_only_changed_files(Ssh);
}

#[test]
fn full_deploy_uploads_everything_again() {
    s::full_deploy_uploads_everything_again(Ssh);
}

#[test]
fn runtime_files_are_carried_into_the_next_release() {
    s::runtime_files_are_carried_into_the_next_release(Ssh);
}

#[test]
fn shared_entries_are_linked_by_the_rule() {
    s::shared_entries_are_linked_by_the_rule(Ssh);
}

#[test]
fn former_shared_link_now_in_the_repo_never_writes_into_shared() {
    s::former_shared_link_now_in_the_repo_never_writes_into_shared(Ssh);
}

#[test]
fn three_releases_are_kept_by_default() {
    s::only_keep_releases_releases_are_kept(Ssh, None);
}

#[test]
fn keep_releases_from_config_is_honoured() {
    s::only_keep_releases_releases_are_kept(Ssh, Some(2));
}

#[test]
fn emit_script_with_nothing_changed_stages_the_manifest() {
    s::emit_script_with_nothing_changed_stages_the_manifest(Ssh);
}

#[test]
fn emit_script_is_completed_by_running_it() {
    s::emit_script_is_completed_by_running_it(Ssh);
}

#[test]
fn dry_run_writes_nothing() {
    s::dry_run_writes_nothing(Ssh);
}

#[test]
fn failing_before_swap_hook_leaves_current_untouched() {
    s::failing_before_swap_hook_leaves_current_untouched(Ssh);
}

#[test]
fn failing_after_swap_hook_exits_3_and_stays_live() {
    s::failing_after_swap_hook_exits_3_and_stays_live(Ssh);
}

#[test]
fn hooks_see_the_release_environment() {
    s::hooks_see_the_release_environment(Ssh);
}

#[test]
fn held_lock_refuses_and_unlock_clears_it() {
    s::held_lock_refuses_and_unlock_clears_it(Ssh);
}

#[test]
fn hostile_names_deploy_byte_exact() {
    s::hostile_names_deploy_byte_exact(Ssh);
}

#[test]
fn type_changes_are_applied() {
    s::type_changes_are_applied(Ssh);
}

#[test]
fn hardlink_copy_keeps_the_previous_release_intact() {
    s::hardlink_copy_keeps_the_previous_release_intact(Ssh);
}

#[test]
fn ignore_rules_and_include_patterns_apply() {
    s::ignore_rules_and_include_patterns_apply(Ssh);
}

#[test]
fn non_utf8_name_is_refused_before_anything_is_sent() {
    s::non_utf8_name_is_refused_before_anything_is_sent(Ssh);
}

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

/// host_key_checking = "accept-new" records an unknown host's key, then deploys; the recorded
/// line is accepted by OpenSSH's own client.
#[test]
fn accept_new_records_an_unknown_host_key() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let kh = site.root().join("home_known_hosts");
    fs::write(&kh, "").unwrap();
    site.set_known_hosts(&kh);
    site.configure("", "host_key_checking = \"accept-new\"");
    let s = site.deploy();
    assert_eq!(s.uploaded, 1);
    let recorded = fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded:?}");
    // OpenSSH itself trusts the recorded line
    let out = Command::new("ssh")
        .args(["-F", "none", "-i"])
        .arg(&site.sshd().identity)
        .args(common::client_options(&kh))
        .arg("-p")
        .arg(site.sshd().port.to_string())
        .arg("-l")
        .arg(&site.sshd().user)
        .arg("127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh with the recorded known_hosts: {out:?}"
    );
    // and the next deploy uses it without recording again
    site.write("index.php", "<?php echo 2;\n");
    site.deploy();
    assert_eq!(fs::read_to_string(&kh).unwrap(), recorded);
}

#[test]
fn concurrent_deploy_is_refused_while_one_runs() {
    s::concurrent_deploy_is_refused_while_one_runs(Ssh);
}

#[test]
fn interrupt_while_the_script_runs_lets_it_finish() {
    s::interrupt_while_the_script_runs_lets_it_finish(Ssh);
}

#[test]
fn deploy_after_an_unrun_emitted_script_builds_exactly_the_source() {
    s::deploy_after_an_unrun_emitted_script_builds_exactly_the_source(Ssh);
}

#[test]
fn tampered_manifest_is_refused() {
    s::tampered_manifest_is_refused(Ssh);
}

#[test]
fn emitted_script_stops_when_its_previous_release_is_gone() {
    s::emitted_script_stops_when_its_previous_release_is_gone(Ssh);
}

#[test]
fn current_that_is_a_directory_is_refused() {
    s::current_that_is_a_directory_is_refused(Ssh);
}

#[test]
fn missing_manifest_means_a_full_upload_into_an_empty_release() {
    s::missing_manifest_means_a_full_upload_into_an_empty_release(Ssh);
}

#[test]
fn absolute_current_link_is_understood_and_made_relative() {
    s::absolute_current_link_is_understood_and_made_relative(Ssh);
}

#[test]
fn deploy_path_with_shell_syntax_works() {
    s::deploy_path_with_shell_syntax_works(Ssh);
}

#[test]
fn foreign_names_in_releases_are_left_alone() {
    s::foreign_names_in_releases_are_left_alone(Ssh);
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

#[test]
fn repository_symlinks_into_shared_survive_later_deploys() {
    s::repository_symlinks_into_shared_survive_later_deploys(Ssh);
}

#[test]
fn hostile_shared_names_are_linked() {
    s::hostile_shared_names_are_linked(Ssh);
}

#[test]
fn large_and_empty_files_are_byte_exact() {
    s::large_and_empty_files_are_byte_exact(Ssh);
}

#[test]
fn thousands_of_files_change_and_go() {
    s::thousands_of_files_change_and_go(Ssh);
}

#[test]
fn interrupt_during_the_upload_abandons_cleanly() {
    s::interrupt_before_the_script_abandons_cleanly(Ssh, s::Moment::Upload);
}

#[test]
fn interrupt_right_after_the_lock_is_taken_releases_it() {
    s::interrupt_before_the_script_abandons_cleanly(Ssh, s::Moment::LockTaken);
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

/// A host key marked @revoked is refused even when another line trusts it.
#[test]
fn revoked_host_key_is_refused() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let line = site.sshd().host_public_key_line();
    let kh = site.root().join("revoked_known_hosts");
    fs::write(&kh, format!("{line}\n@revoked {line}\n")).unwrap();
    site.set_known_hosts(&kh);
    let fp = fingerprint(&site.sshd().host_key.with_extension("pub"));
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy to a host whose key is @revoked");
    assert!(run.stderr.contains("revoked"), "{}", run.describe());
    assert!(run.stderr.contains(&fp), "{}", run.describe());
    assert_nothing_sent(&site);
}

/// known_hosts hashed by `ssh-keygen -H` (Debian's HashKnownHosts default) is understood.
#[test]
fn hashed_known_hosts_is_understood() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let kh = site.root().join("hashed_known_hosts");
    fs::copy(&site.sshd().known_hosts, &kh).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|"), "ssh-keygen -H hashed it: {text}");
    site.set_known_hosts(&kh);
    let s = site.deploy();
    assert_eq!(s.uploaded, 1);
}

#[test]
fn stale_pending_lock_dirs_are_removed() {
    s::stale_pending_lock_dirs_are_removed(Ssh);
}
