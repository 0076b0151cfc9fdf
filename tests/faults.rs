//! Real faults during real deploys, and the commands that recover from them: a connection killed
//! mid-upload, SIGTERM, a full disk, two deploys started at once, an old release that cannot be
//! removed, rollback and `cutover releases`.
//!
//! Each guarantee is one function run against a real sshd (and, where it applies, the `local`
//! target too). Faults that have a tested twin in tests/common/scenarios.rs (a failing before_swap
//! hook, a held lock, Ctrl-C during the upload, the hooks' environment) are not repeated here.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fixtures::{both_targets, read, whoami};
use common::site::TargetKind::{Local, Ssh};
use common::site::*;

/// Writes a sparse file of `len` bytes into the source: a big upload that costs no disk.
fn write_sparse(site: &Site, rel: &str, len: u64) {
    let f = fs::File::create(site.src.join(rel)).unwrap();
    f.set_len(len).unwrap();
}

/// After a killed deploy: its big file leaves the source, and the next deploy, with no
/// `cutover unlock` before it, builds exactly the source and leaves nothing behind.
fn next_deploy_builds_the_source(site: &Site, after: &str) {
    fs::remove_file(site.src.join("big.bin")).unwrap();
    let run = site.deploy_with(&[]);
    run.expect_code(0, &format!("the deploy {after}, without unlock"));
    site.assert_release_is_source(&run.summary().release, &[]);
    site.assert_clean(&format!("after the deploy {after}"));
}

/// Where a pruned release waits in the trash: `.cutover/trash/ID.PID` (PID of the script that
/// deletes it).
fn trashed(site: &Site, id: &str) -> PathBuf {
    let trash = site.at(".cutover/trash");
    let names: Vec<String> = list_names(&trash)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{id}.")))
        .collect();
    assert_eq!(names.len(), 1, "release {id} in the trash: {names:?}");
    trash.join(&names[0])
}

// --- a connection killed during the upload ------------------------------------------------------

/// The sshd session processes serving a deploy are killed (SIGKILL) while the archive is being
/// uploaded: the client exits 1 saying the connection was lost; `current` and the live release are
/// untouched. The deploy script, which started with the upload (its copy of the live release
/// overlaps it), sees its input end at its wait for the upload: it removes what it built and its
/// staging and releases the lock, and the client says so. The next deploy just works.
#[test]
fn killed_connection_during_upload_leaves_current_untouched() {
    let Some(site) = Site::new(Ssh) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let live_before = snapshot(&site.release_dir(&first.release));
    write_sparse(&site, "big.bin", 300 * 1024 * 1024);
    site.write("index.php", "<?php echo 2;\n");

    let running = site.spawn(&["deploy"]);
    let staging = site.app().wait_for_upload(1024 * 1024);
    site.app().wait_for_script();
    site.sshd().kill_sessions();
    let run = running.wait();
    run.expect_code(1, "deploy whose connection was killed during the upload");
    assert!(
        run.stderr.contains("connection") && run.stderr.contains("was lost"),
        "says the connection was lost\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("stage upload"),
        "names the stage\n{}",
        run.describe()
    );
    assert!(!run.stderr.contains("current -> "), "{}", run.describe());
    assert!(
        run.stderr.contains("removes what it built") || run.stderr.contains("already released"),
        "says who cleans up\n{}",
        run.describe()
    );
    site.app().wait_until_clean();
    assert!(!staging.exists(), "staging removed");
    assert_eq!(
        site.current_id(),
        Some(first.release.clone()),
        "current untouched"
    );
    assert_eq!(
        site.releases(),
        std::slice::from_ref(&first.release),
        "no new release"
    );
    assert_trees_equal(
        &live_before,
        &snapshot(&site.release_dir(&first.release)),
        "the live release",
    );
    assert!(site.leftovers().is_empty(), "{:?}", site.leftovers());

    next_deploy_builds_the_source(&site, "after a killed connection");
}

/// What the issue asks for: after a killed connection, the NEXT deploy (no `cutover unlock` in
/// between) succeeds.
#[test]
fn next_deploy_after_a_killed_connection_succeeds_without_unlock() {
    let Some(site) = Site::new(Ssh) else { return };
    site.write("index.php", "<?php\n");
    site.deploy();
    write_sparse(&site, "big.bin", 300 * 1024 * 1024);
    let running = site.spawn(&["deploy"]);
    site.app().wait_for_upload(1024 * 1024);
    site.app().wait_for_script();
    site.sshd().kill_sessions();
    running
        .wait()
        .expect_code(1, "deploy whose connection was killed");
    fs::remove_file(site.src.join("big.bin")).unwrap();
    site.write("index.php", "<?php echo 'next';\n");
    // The script on the server needs a moment to see its input end and clean up (it may be
    // copying the live release): no `cutover unlock`, only that moment.
    site.app().wait_until_clean();
    let next = site.deploy();
    site.assert_release_is_source(&next.release, &[]);
    site.assert_clean("after the deploy that followed a killed connection");
}

// --- a client killed with SIGKILL -------------------------------------------------------------------

/// `kill -9` of the client during the upload: the deploy script, already running on the server
/// (it copies the live release while the files travel), sees its input end at its wait for the
/// upload, removes what it built and its staging, and releases the lock. `current` is untouched
/// and the next deploy works without `cutover unlock`.
fn killed_client_during_the_upload_leaves_the_server_clean(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    write_sparse(&site, "big.bin", 400 * 1024 * 1024);
    site.write("index.php", "<?php echo 2;\n");
    let mut running = site.spawn(&["deploy"]);
    site.app().wait_for_upload(1);
    site.app().wait_for_script();
    running.signal("KILL");
    let _ = running.child.wait();
    site.app().wait_until_clean();
    assert_eq!(site.current_id(), Some(first.release.clone()));
    assert_eq!(site.releases(), std::slice::from_ref(&first.release));

    next_deploy_builds_the_source(&site, "after a killed client");
}

both_targets!(killed_client_during_the_upload_leaves_the_server_clean);

/// A client killed while it holds the lock and no script runs on the server (here: the upload
/// of `--emit-script`, whose script is run by hand later) leaves the lock: nothing can release
/// it. The next deploy is refused naming the holder, the lock's age and `cutover unlock`;
/// `cutover unlock` shows the holder and age and removes it; the deploy after that removes the
/// leftover staging and succeeds. `current` is untouched throughout.
fn killed_client_leaves_a_lock_naming_holder_age_and_unlock(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    write_sparse(&site, "big.bin", 400 * 1024 * 1024);
    site.write("index.php", "<?php echo 2;\n");
    let mut running = site.spawn(&["deploy", "--emit-script"]);
    let staging = site.app().wait_for_upload(1);
    // (the lock's info is written before the upload)
    let info = site.at(".cutover/lock/info");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&info).is_ok_and(|t| t.contains("\ntoken=")) {
        assert!(
            Instant::now() < deadline,
            "the lock's info was never written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    running.signal("KILL");
    let _ = running.child.wait();
    assert_eq!(site.current_id(), Some(first.release.clone()));
    assert!(
        site.lock_exists(),
        "a killed client cannot release its lock"
    );

    fs::remove_file(site.src.join("big.bin")).unwrap();
    let refused = site.deploy_with(&[]);
    refused.expect_code(1, "deploy while a killed deploy's lock remains");
    let holder = format!(
        "held by {}@",
        site.sshd.as_ref().map_or_else(whoami, |s| s.user.clone())
    );
    for needle in [holder.as_str(), " ago", "cutover unlock t"] {
        assert!(
            refused.stderr.contains(needle),
            "names {needle:?}\n{}",
            refused.describe()
        );
    }
    assert_eq!(site.current_id(), Some(first.release.clone()));

    let unlock = site.cutover(&["unlock"]);
    unlock.expect_code(0, "cutover unlock");
    for needle in [holder.as_str(), " ago"] {
        assert!(
            unlock.stdout.contains(needle),
            "unlock shows {needle:?}\n{}",
            unlock.describe()
        );
    }
    assert!(!site.lock_exists());

    // A deploy in the killed one's second (its name can be a second ahead of the clock, when
    // the previous release took the current second) would get its release name and reuse its
    // staging; later it is a leftover of another deploy, which the script removes.
    let staging_name = staging.file_name().unwrap().to_string_lossy().into_owned();
    while utc_now_id() <= staging_name {
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = site.deploy_with(&[]);
    run.expect_code(0, "the deploy after unlock");
    assert!(
        run.stderr.contains("removed leftover") && run.stderr.contains(&staging_name),
        "the leftover staging is removed, and said so\n{}",
        run.describe()
    );
    site.assert_release_is_source(&run.summary().release, &[]);
    site.assert_clean("after unlock and deploy");
}

/// The current UTC time as a release name (YYYYMMDDhhmmss).
fn utc_now_id() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y%m%d%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

both_targets!(killed_client_leaves_a_lock_naming_holder_age_and_unlock);

// --- signals --------------------------------------------------------------------------------------

/// SIGTERM during the upload (Ctrl-C has its twin in tests/common/scenarios.rs) abandons the
/// deploy: staging removed, lock released, and the message says what was done; nothing ran on
/// the server, `current` and the live release are untouched.
fn sigterm_during_the_upload_abandons_cleanly(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let before = snapshot(&site.path);
    let execs = site.exec_sessions();
    write_sparse(&site, "big.bin", 400 * 1024 * 1024);
    site.write("index.php", "<?php echo 2;\n");

    let running = site.spawn(&["deploy"]);
    let staging = site.app().wait_for_upload(1);
    running.signal("TERM");
    let run = running.wait();
    run.expect_code(1, "deploy terminated during the upload");
    assert!(
        run.stderr.contains("SIGTERM"),
        "names the signal\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("released the lock") && run.stderr.contains("removed"),
        "says what was cleaned up\n{}",
        run.describe()
    );
    assert!(!staging.exists(), "staging removed");
    let _ = execs;
    assert!(!run.stderr.contains("current -> "), "{}", run.describe());
    assert_eq!(site.current_id(), Some(first.release.clone()));
    site.assert_clean("after SIGTERM during the upload");
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after SIGTERM",
    );
}

/// A before_swap hook that says it started, then waits (at most 30 s) for the test's `go` file.
/// SIGTERM while the script runs on the server does not abandon it (the scenario SIGINT runs
/// in tests/deploy.rs, with TERM).
fn sigterm_while_the_script_runs_lets_it_finish(kind: TargetKind) {
    common::scenarios::signal_while_the_script_runs_lets_it_finish(kind, "TERM");
}

both_targets!(
    sigterm_during_the_upload_abandons_cleanly,
    sigterm_while_the_script_runs_lets_it_finish
);

// --- a full disk -----------------------------------------------------------------------------------

/// The deploy path is a file system too small for the copy of the previous release: exit 1 with
/// a "no space" message naming the file system, `current` untouched, the partial release, staging
/// and the lock removed. Once there is room again, the next deploy works.
fn disk_full_fails_naming_the_file_system(kind: TargetKind) {
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(site) = Site::new(kind) else { return };
    // Room for the first deploy (its archive and the unpacked tree: 2 x 5 MB), then not for
    // a second copy of the release.
    let fs_ = common::Tmpfs::mount(&site.path, "16m");
    site.write("index.php", "<?php\n");
    site.write("assets/video.bin", noise(11, 5 * 1024 * 1024));
    let first = site.deploy();
    let live_before = snapshot(&site.release_dir(&first.release));
    fs_.resize("8m");

    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy onto a full file system");
    let mount_point = site.path.display().to_string();
    assert!(
        run.stderr.to_lowercase().contains("no space"),
        "says there is no space\n{}",
        run.describe()
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.to_lowercase().contains("no space") && l.contains(&mount_point)),
        "names the file system ({mount_point}) in the no-space message\n{}",
        run.describe()
    );
    assert!(parse_summary(&run.stdout).is_none(), "{}", run.describe());
    assert_eq!(
        site.current_id(),
        Some(first.release.clone()),
        "current untouched"
    );
    assert_eq!(
        site.releases(),
        std::slice::from_ref(&first.release),
        "partial removed"
    );
    assert_eq!(site.manifests(), std::slice::from_ref(&first.release));
    assert_trees_equal(
        &live_before,
        &snapshot(&site.release_dir(&first.release)),
        "the live release",
    );
    site.assert_clean("after a deploy onto a full disk");

    fs_.resize("32m");
    let next = site.deploy();
    site.assert_release_is_source(&next.release, &[]);
    site.assert_clean("after the deploy that followed a full disk");
    // Unmount first: the site's temporary directory holds the mount point.
    drop(fs_);
    drop(site);
}

both_targets!(disk_full_fails_naming_the_file_system);

/// A first deploy whose upload fits and whose unpacking does not (the archive and the tree it
/// becomes both need room): exit 1 naming the full file system, as when the copy fills it (it
/// said only "cannot unpack the upload"), and nothing left behind.
fn disk_full_while_unpacking_names_the_file_system(kind: TargetKind) {
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(site) = Site::new(kind) else { return };
    let fs_ = common::Tmpfs::mount(&site.path, "8m");
    site.write("index.php", "<?php\n");
    site.write("assets/video.bin", noise(12, 5 * 1024 * 1024));
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a first deploy that cannot be unpacked");
    let mount_point = site.path.display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("no space left on the file system") && l.contains(&mount_point)),
        "names the full file system ({mount_point})\n{}",
        run.describe()
    );
    assert!(
        run.stderr
            .lines()
            .filter(|l| l.contains("Cannot write"))
            .count()
            <= 10,
        "tar's messages are cut at ten lines\n{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None);
    assert!(site.releases().is_empty(), "{:?}", site.releases());
    site.assert_clean("after a first deploy onto a full disk");
    drop(fs_);
    drop(site);
}

both_targets!(disk_full_while_unpacking_names_the_file_system);

// --- two deploys at once ---------------------------------------------------------------------------

/// Starts two deploys of the same source at the same moment; returns (the one that went live,
/// the one that was refused), failing unless exactly one exited 0 and the other 1.
fn deploy_twice_at_once(site: &Site, round: usize) -> (Run, Run) {
    for f in 0..20 {
        site.write(
            format!("pages/{f}.html"),
            format!("round {round} page {f}\n"),
        );
    }
    let a = site.spawn(&["deploy"]);
    let b = site.spawn(&["deploy"]);
    let (a, b) = (a.wait(), b.wait());
    match (a.code, b.code) {
        (Some(0), Some(1)) => (a, b),
        (Some(1), Some(0)) => (b, a),
        _ => panic!(
            "round {round}: exactly one of two simultaneous deploys must succeed\n{}\n{}",
            a.describe(),
            b.describe()
        ),
    }
}

/// Two deploys started at the same moment, five times over: exactly one proceeds; the other is
/// refused by the lock (exit 1, `cutover unlock` named) and changes nothing; `current` is always
/// a whole release of the source, and nothing is left behind.
fn simultaneous_deploys_exactly_one_proceeds(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    for round in 0..5 {
        let (won, lost) = deploy_twice_at_once(&site, round);
        let release = won.summary().release;
        assert!(
            lost.stderr.contains("is locked by another deploy"),
            "{}",
            lost.describe()
        );
        assert!(
            lost.stderr.contains("cutover unlock"),
            "{}",
            lost.describe()
        );
        assert!(parse_summary(&lost.stdout).is_none(), "{}", lost.describe());
        assert_eq!(site.current_id(), Some(release.clone()));
        assert_eq!(
            site.releases().last(),
            Some(&release),
            "no release from the refused deploy"
        );
        site.assert_release_is_source(&release, &[]);
        site.assert_clean(&format!("round {round}"));
    }
}

/// The refused one of two simultaneous deploys names the holder. The lock's `info` file is
/// written with the upload, just after the lock directory exists; a refused deploy looks for it
/// for a moment before calling the holder unknown.
fn simultaneous_deploys_refusal_names_the_holder(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    for round in 0..5 {
        let (won, lost) = deploy_twice_at_once(&site, round);
        let release = won.summary().release;
        assert!(
            lost.stderr.contains("held by ") && lost.stderr.contains("(cutover deploy), started "),
            "round {round}: the refused deploy names the holder (the deploy of {release})\n{}",
            lost.describe()
        );
    }
}

both_targets!(simultaneous_deploys_exactly_one_proceeds);

mod simultaneous_deploys_refusal_names_the_holder {
    #[test]
    fn local() {
        super::simultaneous_deploys_refusal_names_the_holder(super::Local);
    }
    #[test]
    fn ssh() {
        super::simultaneous_deploys_refusal_names_the_holder(super::Ssh);
    }
}

// --- cleanup that cannot remove an old release ------------------------------------------------------

/// Cleanup cannot remove the oldest release (a directory in it is immutable): the new release is
/// live anyway, the deploy exits 3 with a warning naming the path; the remains wait in
/// .cutover/trash (out of releases/, so never a rollback target), and later deploys still work
/// and delete them once they can.
fn undeletable_old_release_warns_and_stays_live(kind: TargetKind) {
    if !common::fixtures::root_or_skip("chattr +i") {
        return;
    }
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("keep_releases = 2", "");
    write_webapp(&site, 5);
    let oldest = site.deploy().release;
    site.write("index.php", "<?php echo 2;\n");
    let second = site.deploy().release;
    let stuck = site.release_dir(&oldest).join("assets");
    let Some(mut guard) = common::Immutable::set(&stuck) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chattr +i is not supported on {}: the CI runner's temp dir must support it",
            stuck.display()
        );
        eprintln!(
            "skipping: chattr +i is not supported on {}",
            stuck.display()
        );
        return;
    };

    // The deploy reports its release live before it deletes what it pruned (the prompt never
    // waits for that): it exits 0, and the release it could not delete waits in the trash.
    site.write("index.php", "<?php echo 3;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy whose cleanup cannot remove the oldest release");
    let third = run.summary().release;
    assert_eq!(
        site.current_id(),
        Some(third.clone()),
        "the new release is live"
    );
    site.assert_release_is_source(&third, WEBAPP_NOT_DEPLOYED);
    // The stuck release left releases/ (and its manifest) before its deletion failed: what is
    // left of it sits in .cutover/trash, where no rollback can pick it.
    assert_eq!(site.releases(), [second.clone(), third.clone()]);
    assert_eq!(site.manifests(), site.releases());
    let trash = trashed(&site, &oldest);
    assert!(
        trash.exists(),
        "{} holds what could not be deleted",
        trash.display()
    );
    site.assert_clean("after a deploy whose cleanup failed");

    // While the obstacle stays, the next deploy still goes live and prunes the next one, and it
    // reports the remains it could not remove: a warning naming them, exit 3.
    site.write("index.php", "<?php echo 4;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(
        3,
        "the next deploy, the old release still stuck in the trash",
    );
    let trash_path = trash.display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains(&trash_path)),
        "a warning names {trash_path}\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("stage after swap"),
        "{}",
        run.describe()
    );
    let fourth = run.summary().release;
    assert_eq!(site.current_id(), Some(fourth.clone()));
    site.assert_release_is_source(&fourth, WEBAPP_NOT_DEPLOYED);
    assert_eq!(site.releases(), [third.clone(), fourth.clone()]);
    assert!(trash.exists(), "still stuck");

    guard.path = trash.join("assets"); // the immutable directory moved with its release
    drop(guard);
    site.write("index.php", "<?php echo 5;\n");
    let fifth = site.deploy().release;
    assert_eq!(site.releases(), [fourth, fifth.clone()]);
    assert!(!trash.exists(), "the trash is emptied at last");
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("after the obstacle was removed");
}

both_targets!(undeletable_old_release_warns_and_stays_live);

/// A site deployed over SSH as a deploy user who is not root (created for the test; `shell`
/// is its login shell), into a deploy path that user owns.
struct UserSite {
    site: Site,
    _user: common::TestUser,
    _keys: tempfile::TempDir,
}

fn user_site(prefix: &str, shell: Option<&std::path::Path>, top: &str) -> Option<UserSite> {
    user_site_with(prefix, shell, top, "", "")
}

/// [`user_site`] with `sshd_top` at the top of the sshd's config (e.g. another `Subsystem`) and
/// `target_extra` in the target's table.
fn user_site_with(
    prefix: &str,
    shell: Option<&std::path::Path>,
    top: &str,
    sshd_top: &str,
    target_extra: &str,
) -> Option<UserSite> {
    use std::os::unix::fs::PermissionsExt;
    if !common::fixtures::root_or_skip("creating a deploy user") || !common::sshd_or_skip() {
        return None;
    }
    let keys = tempfile::tempdir().unwrap();
    fs::set_permissions(keys.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = keys.path().join("home");
    mkdirs(&home);
    let user = match shell {
        Some(shell) => common::TestUser::with_shell(prefix, &home, shell),
        None => common::TestUser::create(prefix, &home),
    };
    let authorized = keys.path().join("authorized_keys");
    let sshd = common::Sshd::start_with(&format!(
        "{sshd_top}\nMatch User {}\n    AuthorizedKeysFile {}\n",
        user.name,
        authorized.display()
    ));
    fs::copy(sshd.identity.with_extension("pub"), &authorized).unwrap();
    fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).unwrap();

    let mut site = Site::new(Local).unwrap();
    site.sshd = Some(sshd);
    site.kind = Ssh;
    fs::set_permissions(site.root(), fs::Permissions::from_mode(0o755)).unwrap();
    mkdirs(&site.path);
    chown(&user.name, &site.path);
    site.configure(top, target_extra);
    let table = site.target_table();
    let cfg = fs::read_to_string(&site.config).unwrap().replace(
        &format!("user = {}", toml_str(&site.sshd().user)),
        &format!("user = {}", toml_str(&user.name)),
    );
    assert!(
        table.contains("user = ") && cfg.contains(&user.name),
        "{cfg}"
    );
    fs::write(&site.config, cfg).unwrap();
    Some(UserSite {
        site,
        _user: user,
        _keys: keys,
    })
}

/// The realistic variant over SSH: the deploy user cannot remove a directory that root made in
/// an old release (a cron job's cache, say). Same outcome: live; the next deploy names the
/// remains and exits 3.
#[test]
fn root_owned_dir_in_an_old_release_warns_and_stays_live() {
    let Some(deploy_user) = user_site("cofault", None, "keep_releases = 2") else {
        return;
    };
    let site = &deploy_user.site;
    site.write("index.php", "<?php\n");
    let oldest = site.deploy().release;
    site.write("index.php", "<?php echo 2;\n");
    site.deploy();
    // root makes a directory in the oldest release, with a file the deploy user cannot unlink
    let cache = site.release_dir(&oldest).join("cache");
    write_file(&cache.join("entry"), b"root's\n", 0o644);

    site.write("index.php", "<?php echo 3;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy whose user cannot remove the oldest release");
    let third = run.summary().release;
    assert_eq!(site.current_id(), Some(third.clone()));
    site.assert_release_is_source(&third, &[]);
    site.assert_clean("after a deploy whose cleanup failed");

    // what is left waits in .cutover/trash, out of releases/; the next deploy goes live, says
    // it could not remove that leftover (naming it), and exits 3
    let trash = trashed(site, &oldest);
    assert!(trash.join("cache/entry").exists());
    assert!(!site.releases().contains(&oldest));
    site.write("index.php", "<?php echo 4;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(3, "the next deploy, the old release's remains still stuck");
    let trash_path = trash.display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("could not remove leftover") && l.contains(&trash_path)),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(run.summary().release));
}

// --- rollback ---------------------------------------------------------------------------------------

/// Deploys `n` releases, release i holding `index.php` = "v{i}" and i + 1 files in all.
fn deploy_versions(site: &Site, n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            site.write("index.php", format!("v{i}\n"));
            site.write(format!("extra/{i}.txt"), format!("{i}\n"));
            site.deploy().release
        })
        .collect()
}

/// Runs `cutover rollback ARGS`. On an SSH target, checks the exec calls it made: exactly one
/// when it changed `current` (the swap runs as one script), none when it refused or had nothing
/// to do (that is decided from what was read over SFTP).
fn rollback(site: &Site, args: &[&str]) -> Run {
    let before = site.current_link();
    let execs = site.exec_sessions();
    let mut all = vec!["rollback"];
    all.extend_from_slice(args);
    let run = site.cutover(&all);
    if let (Some(execs), Some(now)) = (execs, site.exec_sessions()) {
        let expected = usize::from(site.current_link() != before);
        assert_eq!(
            now - execs,
            expected,
            "rollback {args:?}: exec calls made\n{}",
            run.describe()
        );
    }
    run
}

/// After three deploys, `cutover rollback` points `current` at the previous release, in one exec
/// call, with a relative link and nothing deleted; again, at the one before; then, at the oldest,
/// it refuses clearly (exit 1) and changes nothing.
fn rollback_goes_to_the_previous_release(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let r = deploy_versions(&site, 3);
    let all = site.releases();

    let run = rollback(&site, &[]);
    run.expect_code(0, "rollback after three deploys");
    assert_eq!(site.current_link(), Some(format!("releases/{}", r[1])));
    assert_eq!(read(&site.at("current/index.php")), "v2\n");
    assert!(
        run.stdout
            .contains(&format!("current -> releases/{} (was {})", r[1], r[2])),
        "{}",
        run.describe()
    );
    assert_eq!(site.releases(), all, "a rollback deletes nothing");
    site.assert_clean("after a rollback");

    rollback(&site, &[]).expect_code(0, "second rollback");
    assert_eq!(site.current_id(), Some(r[0].clone()));
    assert_eq!(read(&site.at("current/index.php")), "v1\n");

    let before = snapshot(&site.path);
    let run = rollback(&site, &[]);
    run.expect_code(1, "rollback from the oldest release");
    assert!(
        run.stderr.contains("no earlier release") && run.stderr.contains(&r[0]),
        "says why, naming the release\n{}",
        run.describe()
    );
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after a refused rollback",
    );
}

/// `rollback --to ID` goes to that release, older or newer than current; `--to` the current one
/// changes nothing; an unknown ID is refused (exit 1), a malformed one is a usage error (exit 2).
fn rollback_to_a_named_release(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let r = deploy_versions(&site, 3);

    rollback(&site, &["--to", &r[0]]).expect_code(0, "rollback --to the oldest");
    assert_eq!(site.current_id(), Some(r[0].clone()));
    assert_eq!(read(&site.at("current/index.php")), "v1\n");

    rollback(&site, &["--to", &r[2]]).expect_code(0, "rollback --to the newest (forward again)");
    assert_eq!(site.current_id(), Some(r[2].clone()));
    assert_eq!(read(&site.at("current/index.php")), "v3\n");

    let run = rollback(&site, &["--to", &r[2]]);
    run.expect_code(0, "rollback --to the current release");
    assert!(run.stdout.contains("already current"), "{}", run.describe());
    assert_eq!(site.current_id(), Some(r[2].clone()));

    let before = snapshot(&site.path);
    let run = rollback(&site, &["--to", "20000101000000"]);
    run.expect_code(1, "rollback --to a release that does not exist");
    assert!(
        run.stderr.contains("20000101000000") && run.stderr.contains("cutover releases"),
        "{}",
        run.describe()
    );
    let run = rollback(&site, &["--to", "yesterday"]);
    run.expect_code(2, "rollback --to something that is not a release name");
    assert!(run.stderr.contains("14 digits"), "{}", run.describe());
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after refused rollbacks",
    );
    site.assert_clean("after rollbacks --to");
}

/// With one release there is nothing to roll back to; with none, nothing to roll back from. Both
/// are refused clearly (exit 1) without changing anything.
fn rollback_without_a_previous_release_is_refused(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let run = rollback(&site, &[]);
    run.expect_code(1, "rollback before any deploy");
    assert!(
        run.stderr.contains("nothing to roll back"),
        "{}",
        run.describe()
    );

    let only = site.deploy().release;
    let before = snapshot(&site.path);
    let run = rollback(&site, &[]);
    run.expect_code(1, "rollback with a single release");
    assert!(
        run.stderr.contains("no earlier release") && run.stderr.contains(&only),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(only));
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after a refused rollback",
    );
    site.assert_clean("after a refused rollback");
}

/// Prune after a rollback (keep_releases = 2): a rollback itself deletes nothing; the next deploy
/// builds on the release `current` points to, keeps the rolled-back-from release (it ages out
/// like any other) and never prunes the release that is live.
fn prune_after_a_rollback_keeps_what_is_live(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("keep_releases = 2", "");
    let r = deploy_versions(&site, 3);
    assert_eq!(site.releases(), [r[1].clone(), r[2].clone()]);
    rollback(&site, &[]).expect_code(0, "rollback");
    assert_eq!(site.current_id(), Some(r[1].clone()));
    assert_eq!(
        site.releases(),
        [r[1].clone(), r[2].clone()],
        "rollback prunes nothing"
    );

    // the next deploy is planned against the live release and keeps the newest two
    site.write("index.php", "v4\n");
    let fourth = site.deploy();
    assert_eq!(
        fourth.uploaded, 2,
        "planned against release {}: {fourth:?}",
        r[1]
    );
    site.assert_release_is_source(&fourth.release, &[]);
    assert_eq!(
        site.releases(),
        [r[2].clone(), fourth.release.clone()],
        "the rolled-back-from release stays until it ages out"
    );
    site.write("index.php", "v5\n");
    let fifth = site.deploy().release;
    assert_eq!(site.releases(), [fourth.release.clone(), fifth.clone()]);
    assert_eq!(site.manifests(), site.releases());

    // a rollback to the oldest kept release, then a deploy with keep_releases = 1: the live
    // release before the deploy goes, the new one stays, nothing else is touched
    rollback(&site, &[]).expect_code(0, "rollback to the oldest kept release");
    assert_eq!(site.current_id(), Some(fourth.release.clone()));
    site.configure("keep_releases = 1", "");
    site.write("index.php", "v6\n");
    let sixth = site.deploy().release;
    assert_eq!(site.releases(), std::slice::from_ref(&sixth));
    site.assert_clean("after prune following a rollback");
}

both_targets!(
    rollback_goes_to_the_previous_release,
    rollback_to_a_named_release,
    rollback_without_a_previous_release_is_refused,
    prune_after_a_rollback_keeps_what_is_live,
);

/// A rollback takes the same lock as a deploy: while one is held, it is refused (exit 1) and
/// `current` stays where it was; the held lock is not touched.
fn rollback_is_refused_while_the_target_is_locked(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let r = deploy_versions(&site, 2);
    let info = "holder=someone@box\npid=1\nstarted=2026-01-01T00:00:00Z\nrelease=x\n";
    write_file(&site.at(".cutover/lock/info"), info.as_bytes(), 0o644);
    let run = site.cutover(&["rollback"]);
    run.expect_code(1, "rollback while locked");
    assert!(
        run.stderr.contains("someone@box"),
        "names the holder\n{}",
        run.describe()
    );
    assert!(run.stderr.contains("cutover unlock"), "{}", run.describe());
    assert_eq!(site.current_id(), Some(r[1].clone()), "current untouched");
    assert_eq!(
        read(&site.at(".cutover/lock/info")),
        info,
        "the lock is not ours to remove"
    );
}

both_targets!(rollback_is_refused_while_the_target_is_locked);

// --- cutover releases -------------------------------------------------------------------------------

/// `cutover releases` lists every release, newest first, with its ID, age, file count and which
/// one is current; a release without a manifest says so; names that are not releases are listed
/// as such (and left alone).
fn releases_lists_every_release(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let empty = site.cutover(&["releases"]);
    empty.expect_code(0, "releases before the first deploy");
    assert!(empty.stdout.contains("no releases"), "{}", empty.describe());

    let r = deploy_versions(&site, 3);
    rollback(&site, &[]).expect_code(0, "rollback");
    mkdirs(&site.at("releases/old-site"));
    fs::remove_file(site.at(".cutover/manifests").join(&r[0])).unwrap();
    let execs = site.exec_sessions();

    let run = site.cutover(&["releases"]);
    run.expect_code(0, "cutover releases");
    assert_eq!(
        site.exec_sessions(),
        execs,
        "listing runs no command on the server"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let line_of = |id: &str| -> &str {
        lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for release {id}\n{}", run.describe()))
    };
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| is_release_id(w))
        .collect();
    assert_eq!(
        ids,
        [&r[2], &r[1]],
        "every release, newest first (one without a manifest is not a release)\n{}",
        run.describe()
    );
    for (i, id) in r.iter().enumerate().skip(1) {
        let line = line_of(id);
        assert!(line.contains(" ago"), "age: {line:?}");
        let current = line.split_whitespace().any(|w| w == "current");
        assert_eq!(current, i == 1, "which is current: {line:?}");
    }
    // release i holds index.php and extra/1.txt .. extra/i.txt
    assert!(
        lines.iter().any(|l| l.contains(&r[0])
            && l.contains("not a cutover release")
            && l.contains("no manifest")),
        "{}",
        run.describe()
    );
    assert!(line_of(&r[1]).contains("3 files"), "{}", run.describe());
    assert!(line_of(&r[2]).contains("4 files"), "{}", run.describe());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("old-site") && l.contains("not a cutover release")),
        "{}",
        run.describe()
    );
    assert!(site.at("releases/old-site").is_dir());
}

both_targets!(releases_lists_every_release);

// --- server state the deploy user cannot change, and a lock taken over ------------------------------

/// A client killed before the server's login shell has even started (a slow start-up: a
/// `.bashrc` that runs pyenv or nvm): the script it sent finds nobody reading its output and
/// its input at its end. It does not die of the first write to its gone client: it goes on to
/// its first wait, finds the client gone there, and removes its release, its staging and the
/// lock, so the next deploy needs no `cutover unlock`.
#[test]
fn killed_client_before_the_login_shell_started_leaves_the_server_clean() {
    use std::os::unix::fs::PermissionsExt;
    let shells = tempfile::tempdir().unwrap();
    fs::set_permissions(shells.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shell = shells.path().join("slow-login-sh");
    write_file(&shell, b"#!/bin/sh\nsleep 2\nexec /bin/sh \"$@\"\n", 0o755);
    let Some(deploy_user) = user_site("coslow", Some(&shell), "") else {
        return;
    };
    let site = &deploy_user.site;
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    write_sparse(site, "big.bin", 200 * 1024 * 1024);
    site.write("index.php", "<?php echo 2;\n");
    let mut running = site.spawn(&["deploy"]);
    // The script went out before the first byte of the archive, on the same connection.
    site.app().wait_for_upload(1);
    let shell_started = site.releases().iter().any(|n| n.ends_with(".partial"));
    running.signal("KILL");
    let _ = running.child.wait();
    assert!(
        !shell_started,
        "the shell started before the client was killed: the test's slow login did not hold it"
    );
    site.app().wait_until_clean();
    assert_eq!(site.current_id(), Some(first.release.clone()));
    assert_eq!(site.releases(), std::slice::from_ref(&first.release));

    next_deploy_builds_the_source(site, "after a client killed before the login shell started");
}

/// `chmod -R a-w` on the live release (a hardening step), with a deploy user who is not root:
/// a read-only directory can be neither changed nor emptied. The next deploy makes the
/// directories it changes writable in its own copy and goes live; a deploy that fails removes
/// its copy all the same; pruning removes the read-only releases.
#[test]
fn a_read_only_live_release_deploys_fails_cleanly_and_is_pruned() {
    let hooks = "keep_releases = 2\n[hooks]\nbefore_swap = [\"test ! -e fail-me\"]";
    let Some(deploy_user) = user_site("coro", None, hooks) else {
        return;
    };
    let site = &deploy_user.site;
    let harden = |id: &str| {
        let done = Command::new("chmod")
            .arg("-R")
            .arg("a-w")
            .arg(site.release_dir(id))
            .status()
            .unwrap();
        assert!(done.success());
    };
    site.write("index.php", "<?php\n");
    site.write("sub/k.php", "k\n");
    site.write("sub/deep/d.php", "d\n");
    site.write("other/o.php", "o\n");
    let first = site.deploy().release;
    harden(&first);

    // A change at the top, a deletion in a read-only directory, a new file in another.
    site.write("index.php", "<?php echo 2;\n");
    site.remove("sub/k.php");
    site.write("sub/deep/new.php", "new\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "a deploy from a read-only live release");
    let second = run.summary().release;
    // (What the deploy did not change is a copy of the live release: read-only still.)
    let dir = site.release_dir(&second);
    assert_eq!(read(&dir.join("index.php")), "<?php echo 2;\n");
    assert_eq!(read(&dir.join("sub/deep/new.php")), "new\n");
    assert_eq!(read(&dir.join("sub/deep/d.php")), "d\n");
    assert!(!dir.join("sub/k.php").exists());
    assert!(
        run.stderr.contains("writable in the new release"),
        "{}",
        run.describe()
    );
    harden(&second);

    // A before_swap failure: the copy (read-only where nothing changed) is removed.
    site.write("fail-me", "x\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a failing deploy from a read-only live release");
    assert_eq!(site.current_id(), Some(second.clone()));
    site.assert_clean("after a failed deploy from a read-only live release");
    assert_eq!(site.releases(), [first.clone(), second.clone()]);
    site.remove("fail-me");

    // Two more releases: both read-only ones age out, nothing is left in the trash.
    site.write("index.php", "<?php echo 3;\n");
    site.deploy_with(&[]).expect_code(0, "third deploy");
    site.write("index.php", "<?php echo 4;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "fourth deploy, pruning the read-only releases");
    site.app().wait_for_prune();
    let releases = site.releases();
    assert!(
        !releases.contains(&first) && !releases.contains(&second),
        "{releases:?}"
    );
    assert_eq!(
        list_names(&site.at(".cutover/trash")),
        Vec::<String>::new(),
        "what pruning could not delete"
    );
    site.assert_clean("after pruning read-only releases");
}

/// `deploy --full` makes the release from the source alone: what was edited or planted in the
/// live release by hand (drift, a web shell) is not carried into it, and `verify` is clean
/// after it. The release it replaces keeps its drift (it is not touched).
fn full_deploy_leaves_hand_edits_behind(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    site.write("sub/k.php", "k\n");
    let first = site.deploy().release;
    let live = site.release_dir(&first);
    write_file(&live.join("extra.php"), b"<?php planted();\n", 0o644);
    write_file(&live.join("sub/hack.php"), b"<?php planted();\n", 0o644);
    write_file(&live.join("index.php"), b"<?php edited();\n", 0o644);
    site.cutover(&["verify"])
        .expect_code(1, "verify of the edited release");

    let run = site.deploy_with(&["--full"]);
    run.expect_code(0, "deploy --full");
    let second = run.summary().release;
    assert_ne!(second, first);
    site.assert_release_is_source(&second, &[]);
    site.cutover(&["verify", "--hash"])
        .expect_code(0, "verify after deploy --full");
    assert_eq!(read(&live.join("extra.php")), "<?php planted();\n");
    site.assert_clean("after deploy --full");
}

both_targets!(full_deploy_leaves_hand_edits_behind);

/// A deploy whose lock was removed while it ran (`cutover unlock` by someone, then another
/// deploy took the lock) stops at its next wait, says why, removes what it built, and leaves
/// the other deploy's lock as it is.
fn a_deploy_whose_lock_was_taken_over_stops_and_leaves_the_other_lock(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let first = site.deploy().release;
    // The hook plays the other side: the lock removed, and taken by another deploy.
    site.configure(
        "[hooks]\nbefore_swap = ['lock=\"$CUTOVER_DEPLOY_PATH/.cutover/lock\"; rm -rf \"$lock\" && mkdir \"$lock\" && echo token=someone-else >\"$lock/info\"']",
        "",
    );
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a deploy whose lock was taken over");
    assert!(
        run.stderr.contains("no longer this script's"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first.clone()));
    assert_eq!(site.releases(), std::slice::from_ref(&first));
    assert_eq!(
        read(&site.at(".cutover/lock/info")),
        "token=someone-else\n",
        "the other deploy's lock"
    );
}

both_targets!(a_deploy_whose_lock_was_taken_over_stops_and_leaves_the_other_lock);

/// `cutover unlock` while the deploy that holds the lock still runs on this machine: refused,
/// naming its pid and how to stop it; the lock stays and the deploy ends as it would have.
fn unlock_refuses_the_lock_of_a_deploy_still_running_here(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("[hooks]\nbefore_swap = [\"sleep 2\"]", "");
    site.write("index.php", "<?php\n");
    let running = site.spawn(&["deploy"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !site.lock_exists() {
        assert!(Instant::now() < deadline, "the deploy never took its lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let unlock = site.cutover(&["unlock"]);
    unlock.expect_code(1, "unlock while the deploy runs");
    assert!(
        unlock.stderr.contains("still running on this machine")
            && unlock
                .stderr
                .contains(&format!("pid {}", running.child.id())),
        "{}",
        unlock.describe()
    );
    assert!(site.lock_exists(), "the running deploy's lock was removed");
    let run = running.wait();
    run.expect_code(0, "the deploy whose lock unlock left alone");
    site.assert_clean("after the deploy");
}

both_targets!(unlock_refuses_the_lock_of_a_deploy_still_running_here);

/// A login shell that prints when it starts (`echo` in ~/.bashrc, which bash reads for an
/// sshd session), on a server running Debian's default `Subsystem sftp
/// /usr/lib/openssh/sftp-server`: sshd starts that through the login shell, and the greeting
/// lands in the SFTP stream. check fails its sftp line and deploy fails, both quoting the text
/// and naming the fix (not sshd_config's Subsystem, which is there); once ~/.bashrc is silent
/// for non-interactive shells, as the message says, both work.
#[test]
fn a_login_shell_that_prints_is_named_as_what_spoils_sftp() {
    let Some(deploy_user) = user_site_with(
        "conoisy",
        Some(Path::new("/bin/bash")),
        "",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ) else {
        return;
    };
    let site = &deploy_user.site;
    let bashrc = deploy_user._keys.path().join("home").join(".bashrc");
    write_file(&bashrc, b"echo \"Welcome to web-7\"\n", 0o644);
    site.write("index.php", "<?php\n");

    let check = site.cutover(&["check"]);
    check.expect_code(1, "check with a greeting login shell");
    for needed in ["Welcome to web-7", "not SFTP", "~/.bashrc", "internal-sftp"] {
        assert!(
            check.stderr.contains(needed) || check.stdout.contains(needed),
            "check does not say {needed:?}:\n{}",
            check.describe()
        );
    }
    assert!(
        !check.stdout.contains("the SFTP subsystem is available"),
        "check ticked sftp:\n{}",
        check.describe()
    );
    let deploy = site.deploy_with(&[]);
    deploy.expect_code(1, "deploy with a greeting login shell");
    assert!(
        deploy.stderr.contains("Welcome to web-7") && deploy.stderr.contains("~/.bashrc"),
        "{}",
        deploy.describe()
    );
    assert_eq!(site.current_id(), None);

    // The fix the message gives.
    write_file(
        &bashrc,
        b"case $- in *i*) ;; *) return ;; esac\necho \"Welcome to web-7\"\n",
        0o644,
    );
    site.cutover(&["check"])
        .expect_code(0, "check once ~/.bashrc is silent");
    let s = site.deploy();
    site.assert_release_is_source(&s.release, &[]);
}

/// A deploy path that cannot be made or written, as the deploy user (not root) meets it: under a
/// directory of root's, under a file, and on a file system mounted read-only. SFTP's status
/// said "No such file" or "Failure"; the deploy names what is in the way and points to check.
#[test]
fn a_deploy_path_that_cannot_be_made_names_what_is_in_the_way() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut deploy_user) = user_site("comake", None, "") else {
        return;
    };
    let user = deploy_user._user.name.clone();
    // (the site rewrites its config with its sshd's user: the deploy user goes back in)
    let move_to = |site: &mut Site, path: PathBuf| {
        site.set_path(path);
        let cfg = fs::read_to_string(&site.config).unwrap().replace(
            &format!("user = {}", toml_str(&site.sshd().user)),
            &format!("user = {}", toml_str(&user)),
        );
        fs::write(&site.config, cfg).unwrap();
    };
    let site = &mut deploy_user.site;
    site.write("index.php", "<?php\n");
    let roots = site.root().join("roots");
    mkdirs(&roots);
    fs::set_permissions(&roots, fs::Permissions::from_mode(0o755)).unwrap();
    let attempt = |site: &mut Site, path: PathBuf, what: &str, says: &str, at: &Path| {
        move_to(site, path);
        let run = site.deploy_with(&[]);
        run.expect_code(1, what);
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(says) && l.contains(&at.display().to_string())),
            "{what}: does not say {says:?} about {}\n{}",
            at.display(),
            run.describe()
        );
        assert!(run.stderr.contains("cutover check"), "{}", run.describe());
    };
    attempt(
        site,
        roots.join("app"),
        "a deploy path under root's directory",
        "cannot create entries in",
        &roots,
    );
    let file = site.root().join("a-file");
    fs::write(&file, "x").unwrap();
    attempt(
        site,
        file.join("app"),
        "a deploy path under a file",
        "is a file",
        &file,
    );

    // An existing deploy path whose file system is then mounted read-only.
    let mount = site.root().join("ro");
    let tmpfs = common::Tmpfs::mount(&mount, "8m");
    chown(&user, &mount);
    move_to(site, mount.join("app"));
    site.deploy();
    tmpfs.read_only(true);
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a read-only file system");
    assert!(
        run.stderr.contains("mounted read-only"),
        "{}",
        run.describe()
    );
    tmpfs.read_only(false);
    drop(tmpfs);
}

/// An account whose login shell is nologin (SFTP works, with internal-sftp; no command runs):
/// check and deploy name nologin and the two ways out, instead of "make sure sh is on the PATH"
/// (check) and "SFTP-only or a forced command" (deploy).
#[test]
fn a_nologin_account_is_named_as_such() {
    let nologin = Path::new("/usr/sbin/nologin");
    if !nologin.exists() {
        eprintln!("skipped: no /usr/sbin/nologin");
        return;
    }
    let Some(deploy_user) = user_site("conolog", Some(nologin), "") else {
        return;
    };
    let site = &deploy_user.site;
    site.write("index.php", "<?php\n");
    let run = site.cutover(&["check"]);
    run.expect_code(1, "check of a nologin account");
    assert!(
        run.stdout.contains("nologin") && run.stdout.contains("usermod -s /bin/sh"),
        "{}",
        run.describe()
    );
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy as a nologin account");
    assert!(
        run.stderr.contains("no login shell") && run.stderr.contains("sftp_only = true"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None);
    assert!(!site.lock_exists(), "{}", run.describe());
}

/// releases/ that the deploy user cannot write in (a root-run tool made it root's): the deploy
/// says so (cp's "Permission denied" was read as another user's files in the live release,
/// with --full suggested, which cannot help), and changes nothing.
#[test]
fn a_releases_directory_the_user_cannot_write_is_named() {
    let Some(deploy_user) = user_site("coreldir", None, "") else {
        return;
    };
    let site = &deploy_user.site;
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    chown("root", &site.at("releases"));
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "releases/ not writable");
    assert!(
        run.stderr.contains("releases is not writable") && !run.stderr.contains("--full"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first.release));
}

/// An SFTP-only account (not root: permission bits count) whose live release an FTP client made
/// read-only (chmod -R a-w): later deploys prune it (it stayed in releases/ without its
/// manifest, no longer a release, and never removed) and empty the trash of it (every later
/// deploy exited 3), as exec deploys do.
#[test]
fn an_sftp_only_deploy_prunes_read_only_releases() {
    let Some(deploy_user) = user_site_with(
        "cosftpro",
        None,
        "keep_releases = 1",
        "ForceCommand internal-sftp",
        "sftp_only = true",
    ) else {
        return;
    };
    let site = &deploy_user.site;
    site.write("index.html", "v1\n");
    site.write("sub/deep/f.txt", "deep\n");
    let first = site.deploy();
    let done = Command::new("chmod")
        .arg("-R")
        .arg("a-w")
        .arg(site.release_dir(&first.release))
        .status()
        .unwrap();
    assert!(done.success());
    site.write("index.html", "v2\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "the deploy that prunes the read-only release");
    let live = site.current_id().unwrap();
    assert_eq!(site.releases(), vec![live.clone()], "{}", run.describe());
    assert_eq!(site.manifests(), vec![live], "{}", run.describe());
    site.write("index.html", "v3\n");
    site.deploy_with(&[])
        .expect_code(0, "the next deploy: nothing left to report");
    assert!(
        fs::read_dir(site.at(".cutover/trash"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "the trash is empty"
    );
}
