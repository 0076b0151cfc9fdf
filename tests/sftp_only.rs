//! `sftp_only = true`: whole deploys made with SFTP requests alone, against real OpenSSH servers
//! whose account runs nothing but SFTP (`ForceCommand internal-sftp`), one of them chrooted
//! (`ChrootDirectory`), others with extensions switched off (`internal-sftp -P ...`). The trees
//! on disk are compared with the source byte for byte, and sshd's log (LogLevel DEBUG1 names
//! every channel request) shows that no exec request was ever sent.
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::scenarios::{self, Moment};
use common::site::*;
use common::Sshd;

/// The deploy scenarios of tests/deploy.rs that need no hook, run against an SFTP-only
/// account with `sftp_only = true`.
macro_rules! scenario {
    ($($name:ident $(($($arg:expr),*))?;)*) => {$(
        #[test]
        fn $name() {
            scenarios::$name(TargetKind::SftpOnly $($(, $arg)*)?);
        }
    )*};
}

scenario! {
    first_deploy_gives_the_exact_layout;
    second_deploy_uploads_only_changed_files;
    full_deploy_uploads_everything_again;
    runtime_files_are_carried_into_the_next_release;
    shared_entries_are_linked_by_the_rule;
    former_shared_link_now_in_the_repo_never_writes_into_shared;
    dry_run_writes_nothing;
    held_lock_refuses_and_unlock_clears_it;
    hostile_names_deploy_byte_exact;
    type_changes_are_applied;
    hardlink_copy_keeps_the_previous_release_intact;
    ignore_rules_and_include_patterns_apply;
    non_utf8_name_is_refused_before_anything_is_sent;
    tampered_manifest_is_refused;
    current_that_is_a_directory_is_refused;
    missing_manifest_means_a_full_upload_into_an_empty_release;
    absolute_current_link_is_understood_and_made_relative;
    foreign_names_in_releases_are_left_alone;
    repository_symlinks_into_shared_survive_later_deploys;
    hostile_shared_names_are_linked;
    large_and_empty_files_are_byte_exact;
    thousands_of_files_change_and_go;
    stale_pending_lock_dirs_are_removed;
    deploy_after_an_unrun_emitted_script_builds_exactly_the_source;
    emit_script_with_nothing_changed_stages_the_manifest;
}

#[test]
fn only_keep_releases_releases_are_kept() {
    scenarios::only_keep_releases_releases_are_kept(TargetKind::SftpOnly, None);
    scenarios::only_keep_releases_releases_are_kept(TargetKind::SftpOnly, Some(1));
}

#[test]
fn interrupt_right_after_the_lock_is_taken_releases_it() {
    scenarios::interrupt_before_the_script_abandons_cleanly(
        TargetKind::SftpOnly,
        Moment::LockTaken,
    );
}

/// Ctrl-C while the release is being built: nothing switched, the partial release, staging
/// and the lock removed, the deploy path exactly as before.
#[test]
fn interrupt_during_the_build_abandons_cleanly() {
    scenarios::interrupt_before_the_script_abandons_cleanly(TargetKind::SftpOnly, Moment::Upload);
}

/// nginx serving `current` while SFTP-only deploys and rollbacks alternate two versions: not
/// one request fails.
#[test]
fn requests_never_fail_while_sftp_only_deploys_and_rollbacks_alternate() {
    common::traffic::requests_never_fail_while_deploys_and_rollbacks_alternate_two_versions(
        TargetKind::SftpOnly,
    );
}

// --- a whole life, plain and chrooted ----------------------------------------------------------

/// No exec (or shell) request reached sshd, and SFTP did (so the log does name requests).
fn assert_no_exec(site: &Site, what: &str) {
    let sshd = site.sshd();
    assert_eq!(
        sshd.exec_requests(),
        0,
        "{what}: exec requests in sshd's log:\n{}",
        sshd.log_text()
    );
    assert!(sshd.subsystem_requests() > 0, "{what}: no SFTP in the log");
}

/// The release `id` holds exactly the source, plus the shared links `links` (path → target).
fn assert_release(site: &Site, id: &str, links: &[(&str, &str)]) {
    let mut actual = snapshot(&site.release_dir(id));
    for (path, target) in links {
        match actual.remove(Path::new(path)) {
            Some(Node::Symlink { target: t }) => assert_eq!(t, PathBuf::from(target), "{path}"),
            other => panic!("release {id}: {path} should be a shared link, is {other:?}"),
        }
    }
    assert_trees_equal(
        &source_view(&site.src, WEBAPP_NOT_DEPLOYED),
        &actual,
        &format!("release {id} vs. the source"),
    );
}

/// First deploy, an incremental one with changed, added and deleted files and directories,
/// the shared walk (a missing path linked whole, a directory descended into, a file of the
/// release winning), keep_releases = 3 over five deploys, a rollback and a rollback --to;
/// every release byte-identical to its source, the previous release untouched by the next
/// deploy, unchanged files hard-linked to it, and no exec request in sshd's log.
fn a_whole_life_over_sftp_alone(site: Site) {
    let shared = site.at("shared");
    write_file(&shared.join("uploads/a.jpg"), &noise(1, 3000), 0o644);
    write_file(&shared.join("conf/x"), b"shared x\n", 0o644);
    write_file(
        &shared.join("index.php"),
        b"<?php // shared, loses\n",
        0o644,
    );
    let shared_before = snapshot(&shared);
    write_webapp(&site, 30);
    site.write("conf/app.ini", "a=1\n");
    let links = [
        ("uploads", "../../shared/uploads"),
        ("conf/x", "../../../shared/conf/x"),
    ];

    let run = site.deploy_with(&[]);
    run.expect_code(0, "first deploy");
    let first = run.summary();
    assert_eq!((first.links, first.warnings), (2, 1), "{first:?}");
    assert!(
        run.stderr.contains("shared/index.php is not linked"),
        "{}",
        run.describe()
    );
    assert_eq!(
        site.current_link(),
        Some(format!("releases/{}", first.release))
    );
    assert_release(&site, &first.release, &links);
    // The links are relative: they resolve the same inside the chroot and out of it.
    assert_eq!(
        fs::read(site.at("current/uploads/a.jpg")).unwrap(),
        noise(1, 3000)
    );
    let release1 = snapshot(&site.release_dir(&first.release));

    site.write("index.php", "<?php echo 'v2';\n");
    site.write("assets/css/app.css", "body { margin: 2px; }\n");
    site.write("new/dir/file.txt", "new\n");
    site.remove("assets/js/app.js");
    site.remove("vendor/pkg3");
    let second = site.deploy();
    assert_eq!((second.uploaded, second.deleted), (3, 2), "{second:?}");
    assert_release(&site, &second.release, &links);
    assert_trees_equal(
        &release1,
        &snapshot(&site.release_dir(&first.release)),
        "the previous release after the next deploy",
    );
    let ino = |id: &str, p: &str| {
        fs::symlink_metadata(site.release_dir(id).join(p))
            .unwrap()
            .ino()
    };
    assert_eq!(
        ino(&first.release, "vendor/autoload.php"),
        ino(&second.release, "vendor/autoload.php"),
        "an unchanged file is a hard link to the previous release's"
    );
    assert_ne!(
        ino(&first.release, "index.php"),
        ino(&second.release, "index.php")
    );

    let mut ids = vec![first.release.clone(), second.release.clone()];
    for i in 3..=5 {
        site.write("rev.txt", format!("{i}\n"));
        ids.push(site.deploy().release);
        assert_eq!(site.releases().len(), 3.min(i), "releases after deploy {i}");
    }
    assert_eq!(site.releases(), ids[2..]);
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("after five deploys");

    let live = snapshot(&site.release_dir(&ids[3]));
    let run = site.cutover(&["rollback"]);
    run.expect_code(0, "rollback");
    assert_eq!(site.current_link(), Some(format!("releases/{}", ids[3])));
    assert_trees_equal(
        &live,
        &snapshot(&site.at("current/")),
        "current after the rollback",
    );
    assert_eq!(site.releases(), ids[2..], "a rollback deletes nothing");
    site.cutover(&["rollback", "--to", &ids[4]])
        .expect_code(0, "rollback --to the newest");
    assert_eq!(site.current_id(), Some(ids[4].clone()));
    site.assert_clean("after the rollbacks");
    assert_trees_equal(&shared_before, &snapshot(&shared), "shared/");
    assert_no_exec(&site, "a whole life");
}

#[test]
fn a_whole_life_with_force_command_internal_sftp() {
    let Some(site) = Site::new(TargetKind::SftpOnly) else {
        return;
    };
    a_whole_life_over_sftp_alone(site);
}

/// The same life for an account locked into a chroot: it sees the deploy path as `/app`, and
/// every link cutover makes is relative, so it resolves the same for the web server outside.
#[test]
fn a_whole_life_in_a_chroot() {
    let Some(site) = Site::sftp_chroot() else {
        return;
    };
    a_whole_life_over_sftp_alone(site);
}

/// What the application made at runtime in the live release (a directory, a file in it, a
/// link) is carried into the next release, and shared/ is linked inside that directory too: the
/// same tree in both modes.
#[test]
fn runtime_directories_are_carried_and_the_shared_walk_goes_into_them_in_both_modes() {
    let mut trees = Vec::new();
    for kind in [TargetKind::Ssh, TargetKind::SftpOnly] {
        let Some(site) = Site::new(kind) else {
            return;
        };
        site.write("index.php", "<?php\n");
        let first = site.deploy();
        let rel1 = site.release_dir(&first.release);
        write_file(&rel1.join("cache/deep/page.html"), b"cached\n", 0o600);
        std::os::unix::fs::symlink("deep/page.html", rel1.join("cache/latest")).unwrap();
        write_file(&site.at("shared/cache/x"), b"shared x\n", 0o644);
        site.write("index.php", "<?php echo 2;\n");
        let second = site.deploy();
        assert_eq!(
            (second.links, second.warnings),
            (1, 0),
            "{kind:?}: {second:?}"
        );
        let rel2 = site.release_dir(&second.release);
        assert_eq!(
            fs::read(rel2.join("cache/x")).unwrap(),
            b"shared x\n",
            "{kind:?}"
        );
        trees.push(snapshot(&rel2));
    }
    if let [exec, sftp] = &trees[..] {
        assert_trees_equal(exec, sftp, "the release built over exec vs. over SFTP");
        assert_eq!(
            sftp.get(Path::new("cache/x")),
            Some(&Node::Symlink {
                target: "../../../shared/cache/x".into()
            })
        );
    }
}

// --- what the server offers --------------------------------------------------------------------

/// An sftp-server with hard links and copy-data switched off (`-P hardlink,copy-data`; -P takes
/// request names, so `hardlink@openssh.com` would switch off nothing): unchanged files are
/// uploaded again and the deploy says so; a file the application wrote at runtime is carried
/// over all the same (downloaded and uploaded), with a warning naming it; nothing is a hard
/// link to the previous release, which stays untouched.
#[test]
fn without_hardlink_and_copy_data_files_are_uploaded_again_and_runtime_files_carried() {
    let Some(site) = Site::sftp_only("internal-sftp -P hardlink,copy-data") else {
        return;
    };
    write_webapp(&site, 10);
    let first = site.deploy();
    let rel1 = site.release_dir(&first.release);
    write_file(
        &rel1.join("runtime/cache.txt"),
        b"cached at runtime\n",
        0o640,
    );
    let release1 = snapshot(&rel1);

    site.write("index.php", "<?php echo 'v2';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy without hardlink and copy-data");
    let second = run.summary();
    assert_eq!(second.uploaded, 1, "{second:?}");
    assert!(
        run.stderr.contains("uploaded again from the source")
            && run
                .stderr
                .contains("neither hardlink@openssh.com nor copy-data"),
        "says it falls back to uploading, and why\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("at runtime") && run.stderr.contains("\"runtime/cache.txt\""),
        "names the runtime file it carried over\n{}",
        run.describe()
    );
    let rel2 = site.release_dir(&second.release);
    assert_eq!(
        fs::read(rel2.join("runtime/cache.txt")).unwrap(),
        b"cached at runtime\n"
    );
    let mut actual = snapshot(&rel2);
    assert_eq!(
        actual.remove(Path::new("runtime/cache.txt")),
        Some(Node::File {
            mode: 0o640,
            data: b"cached at runtime\n".to_vec()
        })
    );
    actual.remove(Path::new("runtime"));
    assert_trees_equal(
        &source_view(&site.src, WEBAPP_NOT_DEPLOYED),
        &actual,
        "the release without its runtime file",
    );
    let ino = |dir: &Path| {
        fs::symlink_metadata(dir.join("vendor/autoload.php"))
            .unwrap()
            .ino()
    };
    assert_ne!(
        ino(&rel1),
        ino(&rel2),
        "no hard link without hardlink@openssh.com"
    );
    assert_trees_equal(&release1, &snapshot(&rel1), "the previous release");
    site.assert_clean("after a deploy without hardlink and copy-data");
    assert_no_exec(&site, "without hardlink and copy-data");
}

/// Hard links switched off, copy-data on: unchanged files are copied on the server (nothing is
/// uploaded again) and runtime files likewise, without a warning.
#[test]
fn without_hardlink_files_are_copied_on_the_server() {
    let Some(site) = Site::sftp_only("internal-sftp -P hardlink") else {
        return;
    };
    write_webapp(&site, 10);
    let first = site.deploy();
    let rel1 = site.release_dir(&first.release);
    write_file(&rel1.join("runtime/cache.txt"), b"cached\n", 0o644);
    site.write("index.php", "<?php echo 'v2';\n");
    let run = site.deploy_with(&["-v"]);
    run.expect_code(0, "deploy with copy-data only");
    let second = run.summary();
    assert_eq!(second.warnings, 0, "{}", run.describe());
    assert!(
        run.stderr.contains("0 hard-linked") && run.stderr.contains("copied on the server"),
        "{}",
        run.describe()
    );
    let rel2 = site.release_dir(&second.release);
    assert_eq!(
        fs::read(rel2.join("runtime/cache.txt")).unwrap(),
        b"cached\n"
    );
    let ino = |dir: &Path| {
        fs::symlink_metadata(dir.join("vendor/autoload.php"))
            .unwrap()
            .ino()
    };
    assert_ne!(ino(&rel1), ino(&rel2));
    let mut actual = snapshot(&rel2);
    actual.remove(Path::new("runtime/cache.txt"));
    actual.remove(Path::new("runtime"));
    assert_trees_equal(
        &source_view(&site.src, WEBAPP_NOT_DEPLOYED),
        &actual,
        "release 2",
    );
}

/// A site with a live release whose account is then served by `force` (its ForceCommand),
/// with a change in the source: the site, its live release and a snapshot of the deploy path.
fn live_then_served_by(force: &str) -> Option<(Site, Summary, Tree)> {
    let mut site = Site::new(TargetKind::SftpOnly)?;
    write_webapp(&site, 5);
    let first = site.deploy();
    site.sshd = Some(Sshd::start_with(&sftp_only_config(force, None)));
    site.configure("", "");
    site.write("index.php", "<?php echo 'v2';\n");
    let before = snapshot(&site.path);
    Some((site, first, before))
}

/// Without posix-rename@openssh.com there is no atomic swap over SFTP: the deploy is refused
/// before anything is locked or built, saying why, and nothing on the server changes — on a new
/// server as on one with a live release.
#[test]
fn without_posix_rename_the_deploy_is_refused_and_nothing_changes() {
    let Some((mut site, first, before)) = live_then_served_by("internal-sftp -P posix-rename")
    else {
        return;
    };
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy without posix-rename");
    assert!(
        run.stderr.contains("posix-rename@openssh.com")
            && run.stderr.contains("nothing was changed")
            && run.stderr.contains("stage survey"),
        "{}",
        run.describe()
    );
    assert_trees_equal(&before, &snapshot(&site.path), "the deploy path");
    assert_eq!(site.current_id(), Some(first.release));
    // and a rollback, which swaps the same way
    let run = site.cutover(&["rollback"]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after rollback",
    );

    let fresh = site.root().join("fresh");
    site.set_path(fresh.clone());
    site.deploy_with(&[])
        .expect_code(1, "first deploy without posix-rename");
    assert!(fs::symlink_metadata(&fresh).is_err(), "nothing was made");
    assert_no_exec(&site, "without posix-rename");
}

/// An account whose SFTP server is read-only (`internal-sftp -R`, as some hosts give a
/// download-only login): its VERSION reply leaves out every extension that writes. `check` and
/// the deploy name the read-only mode and the fix, not a missing posix-rename, and nothing on the
/// server changes.
#[test]
fn a_read_only_sftp_server_is_named_as_read_only() {
    let Some((site, first, before)) = live_then_served_by("internal-sftp -R") else {
        return;
    };

    let check = site.cutover(&["check"]);
    check.expect_code(1, "check against a read-only SFTP server");
    let swap = line(&check, "posix-rename");
    assert!(
        swap.starts_with("✗") && swap.contains("read-only") && swap.contains("-R"),
        "{}",
        check.describe()
    );
    assert!(
        format!("{}{}", check.stdout, check.stderr)
            .contains("remove -R from this account's ForceCommand or Subsystem line"),
        "the fix\n{}",
        check.describe()
    );

    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy to a read-only SFTP server");
    assert!(
        run.stderr.contains("SFTP subsystem is read-only")
            && run.stderr.contains("nothing was changed")
            && run.stderr.contains("hint: remove -R"),
        "{}",
        run.describe()
    );
    assert_trees_equal(&before, &snapshot(&site.path), "the deploy path");
    assert_eq!(site.current_id(), Some(first.release));
    assert_no_exec(&site, "against a read-only SFTP server");
}

// --- a connection killed during the build --------------------------------------------------------

/// The sshd session processes (with internal-sftp, the SFTP servers themselves) are killed
/// while a large file is uploaded into the partial release: exit 1 naming the lost
/// connection, `current` and the live release untouched; cutover reconnects to remove what it
/// built and give the lock back, and the next deploy just works (no `cutover unlock`).
#[test]
fn killed_connection_during_the_build_leaves_current_untouched_and_the_next_deploy_works() {
    let Some(site) = Site::new(TargetKind::SftpOnly) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let live = snapshot(&site.release_dir(&first.release));
    let big = fs::File::create(site.src.join("big.bin")).unwrap();
    big.set_len(300 * 1024 * 1024).unwrap();
    drop(big);
    site.write("index.php", "<?php echo 2;\n");

    let running = site.spawn(&["deploy"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let growing = list_names(&site.at("releases"))
            .iter()
            .filter(|n| n.ends_with(".partial"))
            .any(|n| {
                fs::metadata(site.at("releases").join(n).join("big.bin"))
                    .is_ok_and(|m| m.len() > 1024 * 1024)
            });
        if growing {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never began");
        std::thread::sleep(Duration::from_millis(5));
    }
    site.sshd().kill_sessions();
    let run = running.wait();
    run.expect_code(1, "deploy whose connection was killed during the build");
    assert!(
        run.stderr.contains("was lost") && run.stderr.contains("stage build"),
        "says the connection was lost, and when\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("released the lock"),
        "{}",
        run.describe()
    );
    assert_eq!(
        site.current_id(),
        Some(first.release.clone()),
        "current untouched"
    );
    assert_trees_equal(
        &live,
        &snapshot(&site.release_dir(&first.release)),
        "the live release",
    );
    assert!(!site.lock_exists(), "the lock was given back");

    fs::remove_file(site.src.join("big.bin")).unwrap();
    let next = site.deploy();
    site.assert_release_is_source(&next.release, &[]);
    site.assert_clean("after the deploy that followed a killed connection");
    assert_no_exec(&site, "a killed connection");
}

// --- check ---------------------------------------------------------------------------------------

fn check_lines(run: &Run) -> Vec<&str> {
    run.stdout.lines().collect()
}

fn line<'a>(run: &'a Run, name: &str) -> &'a str {
    check_lines(run)
        .into_iter()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line\n{}", run.describe()))
}

/// `cutover check` on an SFTP-only target reports the mode, each extension a deploy uses, the
/// symbolic link order it probed (in a scratch directory it removes) and the free space; with
/// posix-rename switched off it fails, with hard links switched off it only notes it.
#[test]
fn check_reports_the_mode_the_extensions_the_link_order_and_free_space() {
    let Some(mut site) = Site::new(TargetKind::SftpOnly) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let run = site.cutover(&["check"]);
    run.expect_code(0, "check of a new SFTP-only target");
    assert!(
        line(&run, "mode").contains("SFTP requests alone"),
        "{}",
        run.describe()
    );
    for ext in ["posix-rename", "hardlink", "copy-data"] {
        assert!(line(&run, ext).starts_with("✓"), "{}", run.describe());
    }
    assert!(
        line(&run, "symlink").contains("probed") && line(&run, "symlink").contains("target first"),
        "{}",
        run.describe()
    );
    assert!(
        line(&run, "free space").starts_with("✓ free space: "),
        "{}",
        run.describe()
    );
    assert!(
        line(&run, "deploy path").contains("does not exist yet"),
        "{}",
        run.describe()
    );
    assert!(
        fs::symlink_metadata(&site.path).is_err(),
        "check created nothing"
    );

    site.deploy();
    let before = snapshot(&site.path);
    let run = site.cutover(&["check"]);
    run.expect_code(0, "check after a deploy");
    assert!(line(&run, "current").starts_with("✓ current: current -> releases/"));
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after check",
    );

    site.sshd = Some(Sshd::start_with(&sftp_only_config(
        "internal-sftp -P posix-rename,hardlink",
        None,
    )));
    site.configure("", "");
    let run = site.cutover(&["check"]);
    run.expect_code(1, "check without posix-rename");
    assert!(
        line(&run, "posix-rename").starts_with("✗"),
        "{}",
        run.describe()
    );
    assert!(
        line(&run, "hardlink").starts_with("!"),
        "{}",
        run.describe()
    );
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after check",
    );
    assert_no_exec(&site, "check");
}

/// In exec mode, an account that turns out to be SFTP-only: `check` and `deploy` both say to
/// set `sftp_only = true`; with it set, the same deploy works.
#[test]
fn an_sftp_only_account_in_exec_mode_is_told_to_set_sftp_only() {
    let Some(mut site) = Site::new(TargetKind::SftpOnly) else {
        return;
    };
    site.kind = TargetKind::Ssh;
    site.configure("", "");
    site.write("index.php", "<?php\n");
    let run = site.cutover(&["check"]);
    run.expect_code(1, "check in exec mode of an SFTP-only account");
    assert!(
        run.stdout.contains("sftp_only = true"),
        "{}",
        run.describe()
    );
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy in exec mode to an SFTP-only account");
    assert!(
        run.stderr.contains("sftp_only = true"),
        "{}",
        run.describe()
    );
    assert!(site.current_id().is_none());
    // what the other tests count: here exec was asked for (and refused)
    assert!(
        site.sshd().exec_requests() > 0,
        "{}",
        site.sshd().log_text()
    );

    site.kind = TargetKind::SftpOnly;
    site.configure("", "");
    let s = site.deploy();
    site.assert_release_is_source(&s.release, &[]);
}

// --- modes and fleets ----------------------------------------------------------------------------

/// Same layout, manifests and names in both modes: a target switches between exec and SFTP-only
/// deploys (and rollbacks) freely, each building on the other's release.
#[test]
fn a_target_switches_modes_between_deploys() {
    let Some(mut site) = Site::new(TargetKind::Ssh) else {
        return;
    };
    write_webapp(&site, 10);
    let a = site.deploy();
    site.kind = TargetKind::SftpOnly;
    site.configure("", "");
    site.write("index.php", "<?php echo 'sftp';\n");
    let b = site.deploy();
    assert_eq!(
        b.uploaded, 1,
        "planned against the exec deploy's manifest: {b:?}"
    );
    site.assert_release_is_source(&b.release, WEBAPP_NOT_DEPLOYED);
    site.kind = TargetKind::Ssh;
    site.configure("", "");
    site.write("index.php", "<?php echo 'exec';\n");
    let c = site.deploy();
    assert_eq!(
        c.uploaded, 1,
        "planned against the SFTP-only deploy's manifest: {c:?}"
    );
    site.assert_release_is_source(&c.release, WEBAPP_NOT_DEPLOYED);
    site.kind = TargetKind::SftpOnly;
    site.configure("", "");
    site.cutover(&["rollback"])
        .expect_code(0, "SFTP-only rollback");
    assert_eq!(site.current_id(), Some(b.release.clone()));
    site.kind = TargetKind::Ssh;
    site.configure("", "");
    site.cutover(&["rollback"]).expect_code(0, "exec rollback");
    assert_eq!(site.current_id(), Some(a.release));
    site.assert_clean("after switching modes");
    let verify = site.cutover(&["verify", "--hash"]);
    verify.expect_code(0, "verify after switching modes");
}

/// A fleet of two SFTP-only hosts: one release name, both live. When one host fails while
/// building (a declared shared file missing there), the other is called off before the swap:
/// `current` untouched everywhere, nothing left behind.
#[test]
fn a_fleet_of_sftp_only_hosts_goes_live_together_or_not_at_all() {
    let Some(site) = Site::new(TargetKind::SftpOnly) else {
        return;
    };
    let other = Sshd::start_with(&sftp_only_config("internal-sftp", None));
    let a = site.sshd();
    let (path_a, path_b) = (site.root().join("a"), site.root().join("b"));
    let known = site.root().join("known_hosts");
    fs::write(
        &known,
        format!(
            "{}\n{}\n",
            a.host_public_key_line(),
            other.host_public_key_line()
        ),
    )
    .unwrap();
    let host = |s: &Sshd, path: &Path| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, path = {}, identity_file = {} }}",
            s.port,
            toml_str(&path.display().to_string()),
            toml_str(&s.identity.display().to_string())
        )
    };
    let config = |shared_files: &str| {
        format!(
            "source = {}\nshared_files = [{shared_files}]\n[targets.t]\nuser = {}\nknown_hosts = {}\nsftp_only = true\nhosts = [{}, {}]\n",
            toml_str(&site.src.display().to_string()),
            toml_str(&a.user),
            toml_str(&known.display().to_string()),
            host(a, &path_a),
            host(&other, &path_b),
        )
    };
    site.write("index.php", "<?php\n");
    fs::write(&site.config, config("")).unwrap();
    let run = site.cutover(&["deploy"]);
    run.expect_code(0, "fleet deploy");
    let id = |p: &Path| fs::read_link(p.join("current")).ok();
    assert_eq!(id(&path_a), id(&path_b), "one release for the fleet");
    let live = id(&path_a).unwrap();

    write_file(&path_a.join("shared/.env"), b"A=1\n", 0o600);
    site.write("index.php", "<?php echo 2;\n");
    fs::write(&site.config, config("\".env\"")).unwrap();
    let before = (snapshot(&path_a), snapshot(&path_b));
    let run = site.cutover(&["deploy"]);
    run.expect_code(1, "fleet deploy with a host that fails");
    assert!(run.stderr.contains("shared/.env"), "{}", run.describe());
    assert_eq!(id(&path_a), Some(live.clone()), "current untouched on a");
    assert_eq!(id(&path_b), Some(live), "current untouched on b");
    assert_trees_equal(&before.0, &snapshot(&path_a), "host a");
    assert_trees_equal(&before.1, &snapshot(&path_b), "host b");
    assert_no_exec(&site, "fleet, host a");
    assert_eq!(other.exec_requests(), 0, "fleet, host b");
}

/// A server whose SFTP subsystem does not run (here the account's ForceCommand exits at once)
/// is named as such, though the first requests went out behind INIT without waiting for its
/// answer; nothing is written.
#[test]
fn a_server_without_sftp_is_named_as_such() {
    let Some(site) = Site::sftp_only("/bin/false") else {
        return;
    };
    site.write("index.html", "<p>1</p>\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy to a server whose SFTP does not run");
    assert!(
        run.stderr.contains("SFTP is not available"),
        "{}",
        run.describe()
    );
    assert!(
        std::fs::symlink_metadata(&site.path).is_err(),
        "nothing may be written"
    );
}

/// A missing shared file on an SFTP-only account: the hint is an sftp batch (the account runs
/// no `mkdir`: the ssh-and-scp hint failed at its ssh), and that batch, run with this test's
/// key and known_hosts, puts the file where the next deploy finds it.
#[test]
fn a_missing_shared_file_hint_works_on_an_sftp_only_account() {
    let Some(mut site) = Site::sftp_only("internal-sftp") else {
        return;
    };
    site.configure("shared_files = [\"config/.env\"]", "");
    site.write("index.html", "hi\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a missing shared file");
    let hint = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("hint: "))
        .unwrap_or_else(|| panic!("no hint\n{}", run.describe()))
        .to_string();
    assert!(
        hint.contains("sftp -b -") && !hint.contains("ssh "),
        "{hint}"
    );
    // The printf part of it, piped into this test's sftp (its key, its known_hosts).
    let batch = hint
        .split_once("e.g. ")
        .and_then(|(_, rest)| rest.split_once(" | sftp"))
        .map(|(printf, _)| printf.to_string())
        .unwrap_or_else(|| panic!("no printf in {hint}"));
    let local = site.root().join("local-env");
    fs::create_dir_all(local.join("config")).unwrap();
    fs::write(local.join("config/.env"), "APP_KEY=x\n").unwrap();
    let sshd = site.sshd();
    let mut sftp = vec![
        "sftp".to_string(),
        "-F".into(),
        "none".into(),
        "-i".into(),
        sshd.identity.display().to_string(),
    ];
    sftp.extend(common::client_options(&sshd.known_hosts));
    sftp.extend([
        "-P".into(),
        sshd.port.to_string(),
        "-b".into(),
        "-".into(),
        format!("{}@127.0.0.1", sshd.user),
    ]);
    let words: Vec<String> = sftp
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{batch} | {}", words.join(" ")))
        .current_dir(&local)
        .output()
        .unwrap();
    assert!(out.status.success(), "the hint's batch: {out:?}");
    assert_eq!(
        fs::read_to_string(site.at("shared/config/.env")).unwrap(),
        "APP_KEY=x\n"
    );
    site.deploy_with(&[])
        .expect_code(0, "the deploy once the file is there");
    assert_eq!(
        fs::read_to_string(site.at("current/config/.env")).unwrap(),
        "APP_KEY=x\n"
    );
}

/// An SFTP-only deploy onto a full file system: the error says so (SFTP's bare "Failure" was
/// all it said), and check counts inodes too (it passed with none left).
#[test]
fn an_sftp_only_deploy_names_a_full_file_system() {
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(site) = Site::sftp_only("internal-sftp") else {
        return;
    };
    let fs_ = common::Tmpfs::mount(&site.path, "4m");
    site.write("index.html", "hi\n");
    site.write("big.bin", noise(5, 6 * 1024 * 1024));
    let run = site.deploy_with(&[]);
    run.expect_code(1, "an SFTP-only deploy onto a full disk");
    assert!(
        run.stderr.contains("no space left on the file system"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None);
    drop(fs_);

    // Bytes enough, entries not.
    site.remove("big.bin");
    for i in 0..40 {
        site.write(format!("many/f{i}.txt"), "x\n");
    }
    common::site::mkdirs(&site.path);
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m,nr_inodes=24,mode=0755",
            "tmpfs",
        ])
        .arg(&site.path)
        .status()
        .unwrap();
    assert!(mounted.success());
    let run = site.cutover(&["check"]);
    let unmounted = std::process::Command::new("umount")
        .arg(&site.path)
        .status();
    run.expect_code(1, "check with too few inodes");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("✗ free space") && l.contains("inodes")),
        "{}",
        run.describe()
    );
    assert!(unmounted.unwrap().success());
}
