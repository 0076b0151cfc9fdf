//! A messy or hostile server never makes a deploy reach outside its path, and a half-built tree
//! never goes live. Each test plants what an adversarial user (or a killed deploy) could leave
//! on the server — links where directories belong, leftovers under the names a deploy wants,
//! tampered manifests, names that look like releases — next to a victim directory outside the
//! deploy path whose content must not change, and runs the real commands against it, on the
//! `local` target and over a real sshd.
mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;

use common::fixtures::both_targets;
use common::site::TargetKind::{Local, Ssh};
use common::site::*;

/// A directory outside the deploy path, full of files a deploy must never touch.
struct Victim {
    dir: PathBuf,
    before: Tree,
}

impl Victim {
    fn new(site: &Site) -> Victim {
        let dir = site.root().join("victim");
        write_file(&dir.join("precious.txt"), b"do not touch\n", 0o644);
        write_file(&dir.join("index.php"), b"<?php // someone else's\n", 0o644);
        write_file(&dir.join("assets/app.css"), b"body{}\n", 0o644);
        write_file(&dir.join("sub/deep/file"), b"deep\n", 0o600);
        Victim {
            before: snapshot(&dir),
            dir,
        }
    }

    fn assert_untouched(&self, what: &str) {
        assert_trees_equal(&self.before, &snapshot(&self.dir), what);
    }
}

fn site_with_release(kind: TargetKind) -> Option<(Site, String)> {
    let site = Site::new(kind)?;
    site.write("index.php", "<?php echo 1;\n");
    site.write("assets/app.css", "body { color: red; }\n");
    let first = site.deploy();
    Some((site, first.release))
}

/// A release name `secs` seconds after `id`.
fn shifted(id: &str, secs: i64) -> String {
    let t = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%d%H%M%S").unwrap();
    (t + chrono::Duration::seconds(secs))
        .format("%Y%m%d%H%M%S")
        .to_string()
}

// --- 1. a leftover under the name the next deploy wants ---------------------------------------

/// A killed deploy left `releases/ID.partial` under the very name the next deploy gets (here a
/// live release dated in the future makes every new name live+1): it is removed first, never
/// copied into. The new release is exactly the source, mode 0755, nothing nested.
fn leftover_partial_under_the_next_name_is_removed_not_built_into(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let future = shifted(&first, 3 * 86_400);
    site.redate(&first, &future);
    let next = shifted(&future, 1);
    let partial = site.at(format!("releases/{next}.partial"));
    write_file(&partial.join("junk/from-a-killed-deploy"), b"junk\n", 0o644);
    write_file(&partial.join("index.php"), b"truncat", 0o644);
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o700)).unwrap();

    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy over a leftover partial release");
    let s = run.summary();
    // It takes another name (after the leftover's) or removes the leftover and takes its name;
    // either way it never builds into it, and the leftover is gone.
    assert!(s.release > future, "{} after {future}", s.release);
    assert!(!partial.exists(), "the leftover partial release is removed");
    assert!(
        run.stderr.contains("dated") && run.stderr.contains("ahead"),
        "a release dated days ahead is a warning\n{}",
        run.describe()
    );
    site.assert_release_is_source(&s.release, &[]);
    let mode = fs::metadata(site.release_dir(&s.release))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755, "the release root is not the leftover's 0700");
    site.assert_clean("after a deploy over a leftover partial release");
}

// --- 2. a release that is a link -------------------------------------------------------------

/// The live release is replaced by a symbolic link to a directory outside the deploy path
/// (with a manifest that names the victim's files): it is not a release. The next deploy
/// builds a full new release and never writes into, copies from or deletes through the link.
fn release_that_is_a_symlink_is_never_followed(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let victim = Victim::new(&site);
    let rel = site.release_dir(&first);
    fs::remove_dir_all(&rel).unwrap();
    symlink(&victim.dir, &rel).unwrap();
    // A manifest that would delete the victim's files if it were acted on through the link.
    fs::write(
        site.at(format!(".cutover/manifests/{first}")),
        "cutover-manifest 1\nf\t644\t4\t00000000000000000000000000000001\tprecious.txt\n",
    )
    .unwrap();

    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy next to a release that is a link");
    let s = run.summary();
    assert_eq!(s.unchanged, 0, "nothing is planned against the link: {s:?}");
    site.assert_release_is_source(&s.release, &[]);
    victim.assert_untouched("the link's target after a deploy");

    // Listed as foreign, never picked by a rollback.
    let listed = site.cutover(&["releases"]);
    assert!(
        listed.stdout.contains(&first) && listed.stdout.contains("symbolic link"),
        "{}",
        listed.describe()
    );
    let rb = site.cutover(&["rollback"]);
    rb.expect_code(
        1,
        "rollback with only a linked 'release' before the live one",
    );
    assert_eq!(site.current_id(), Some(s.release.clone()));
    victim.assert_untouched("the link's target after releases and rollback");
}

// --- 3. state directories that are links ------------------------------------------------------

/// `.cutover/staging` a link to a directory outside: the deploy refuses, naming it, and the
/// link's target keeps every file (it used to be emptied by every deploy). `check` fails too.
fn staging_that_is_a_symlink_is_refused_and_never_emptied(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let victim = Victim::new(&site);
    let staging = site.at(".cutover/staging");
    fs::remove_dir_all(&staging).unwrap();
    symlink(&victim.dir, &staging).unwrap();
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy with .cutover/staging a link");
    assert!(
        run.stderr.contains(".cutover/staging") && run.stderr.contains("symbolic link"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first));
    assert!(!site.lock_exists(), "the lock was given back");
    victim.assert_untouched("staging's link target");
    let check = site.cutover(&["check"]);
    check.expect_code(1, "check with .cutover/staging a link");
    assert!(
        check.stdout.contains("✗ layout") && check.stdout.contains("symbolic link"),
        "{}",
        check.describe()
    );
    victim.assert_untouched("staging's link target after check");
}

/// `.cutover/trash` a link: the deploy removes the link (never its target) and prunes into a
/// real directory.
fn trash_that_is_a_symlink_is_removed_and_never_followed(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("keep_releases = 1", "");
    site.write("index.php", "<?php echo 1;\n");
    site.deploy();
    let victim = Victim::new(&site);
    symlink(&victim.dir, site.at(".cutover/trash")).unwrap();
    let check = site.cutover(&["check"]);
    check.expect_code(1, "check with .cutover/trash a link");
    assert!(
        check.stdout.contains(".cutover/trash"),
        "{}",
        check.describe()
    );
    site.write("index.php", "<?php echo 2;\n");
    let s = site.deploy();
    assert_eq!(
        site.releases(),
        std::slice::from_ref(&s.release),
        "pruned to one"
    );
    assert!(
        fs::symlink_metadata(site.at(".cutover/trash"))
            .map(|m| m.is_dir())
            .unwrap_or(true),
        "the trash is a real directory now (or gone)"
    );
    victim.assert_untouched("trash's link target");
}

// --- 4. a link inside the live release where the manifest has a directory ---------------------

/// The application's user replaced `assets/` in the live release by a link to a directory
/// outside: a deploy that changes something under assets/ stops with an error naming it, before
/// deleting, creating or unpacking anything; `current` and the link's target are untouched.
/// `verify` reports the drift.
fn link_where_the_manifest_has_a_directory_is_never_followed(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let victim = Victim::new(&site);
    let assets = site.release_dir(&first).join("assets");
    fs::remove_dir_all(&assets).unwrap();
    symlink(victim.dir.join("assets"), &assets).unwrap();

    let drift = site.cutover(&["verify"]);
    drift.expect_code(1, "verify with a link where a directory was deployed");
    assert!(
        drift.stdout.contains("\"assets\"") && drift.stdout.contains("symbolic link"),
        "{}",
        drift.describe()
    );

    site.write("assets/app.css", "body { color: blue; }\n");
    site.write("assets/new.js", "new\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy into a release whose assets/ is a link");
    assert!(
        run.stderr.contains("assets") && run.stderr.contains("symbolic link"),
        "names the link\n{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first.clone()));
    site.assert_clean("after the refused deploy");
    victim.assert_untouched("the target of a link inside the live release");
}

// --- 5. removing a tree whose top is a link ---------------------------------------------------

/// `.cutover/lock` planted as a link to a directory outside: a deploy is refused (the lock
/// exists), `cutover unlock` removes the link and never the target's files.
fn unlock_removes_a_linked_lock_without_following_it(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let victim = Victim::new(&site);
    symlink(&victim.dir, site.at(".cutover/lock")).unwrap();
    site.write("index.php", "<?php echo 2;\n");
    site.deploy_with(&[])
        .expect_code(1, "deploy while .cutover/lock is a link");
    victim.assert_untouched("the lock link's target after a refused deploy");
    let run = site.cutover(&["unlock"]);
    run.expect_code(0, "unlock a linked lock");
    assert!(!site.lock_exists(), "{}", run.describe());
    victim.assert_untouched("the lock link's target after unlock");
    assert_eq!(site.current_id(), Some(first));
    site.deploy();
    victim.assert_untouched("after the next deploy");
}

// --- 6. and 13. only real directories with a manifest are releases ----------------------------

/// A release without a manifest (a deploy killed after its rename, before its before_swap hooks
/// passed), and a file and a link named like releases: listed as not releases, never chosen by
/// rollback, never pruned.
fn rollback_only_picks_releases_with_a_manifest(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let mut ids = Vec::new();
    for i in 1..=3 {
        site.write("index.php", format!("<?php echo {i};\n"));
        ids.push(site.deploy().release);
    }
    let victim = Victim::new(&site);
    fs::remove_file(site.at(format!(".cutover/manifests/{}", ids[1]))).unwrap();
    let as_file = shifted(&ids[0], -10);
    let as_link = shifted(&ids[0], -20);
    fs::write(site.release_dir(&as_file), "a file\n").unwrap();
    symlink(&victim.dir, site.release_dir(&as_link)).unwrap();

    let listed = site.cutover(&["releases"]);
    listed.expect_code(0, "releases");
    for (id, why) in [
        (&ids[1], "no manifest"),
        (&as_file, "not a directory"),
        (&as_link, "symbolic link"),
    ] {
        assert!(
            listed.stdout.lines().any(|l| l.contains(id.as_str())
                && l.contains("not a cutover release")
                && l.contains(why)),
            "{id} listed as not a release ({why})\n{}",
            listed.describe()
        );
    }
    site.cutover(&["rollback"]).expect_code(0, "rollback");
    assert_eq!(
        site.current_id(),
        Some(ids[0].clone()),
        "the release before current that has a manifest"
    );
    let refused = site.cutover(&["rollback", "--to", &ids[1]]);
    refused.expect_code(1, "rollback to a release without a manifest");
    let refused = site.cutover(&["rollback", "--to", &as_file]);
    refused.expect_code(1, "rollback to a file named like a release");
    assert_eq!(site.current_id(), Some(ids[0].clone()));
    // Deploys go on; the foreign names are never pruned.
    for i in 4..=6 {
        site.write("index.php", format!("<?php echo {i};\n"));
        site.deploy();
    }
    assert!(site.at(format!("releases/{as_file}")).exists());
    assert!(fs::symlink_metadata(site.release_dir(&as_link)).is_ok());
    victim.assert_untouched("a link named like a release");
}

// --- 7. the end of the release-name space -------------------------------------------------------

/// A release named `99991231235959`: the next name would have 15 digits. The deploy is refused
/// with a message naming it; nothing changes.
fn the_last_release_name_is_a_clear_refusal(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    site.redate(&first, "99991231235959");
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy after 99991231235959");
    assert!(
        run.stderr.contains("99991231235959") && run.stderr.contains("no release name is left"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id().as_deref(), Some("99991231235959"));
    site.assert_clean("after the refusal");
    let check = site.cutover(&["check"]);
    assert!(
        check.stdout.contains("99991231235959") && check.stdout.contains("ahead"),
        "check notes the future-dated release\n{}",
        check.describe()
    );
}

/// Names in `releases/` that look like releases of the far future but are none (a file, a
/// link to `/`, a leftover `.partial` of one): the next release is named after the real
/// releases, not after them, and they are left as they are (the leftover is removed).
fn future_names_that_are_no_releases_do_not_push_the_next_name(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    write_file(
        &site.at("releases/20991231235959"),
        b"not a release\n",
        0o644,
    );
    symlink("/", site.at("releases/21001231235959")).unwrap();
    write_file(
        &site.at("releases/22001231235959.partial/junk"),
        b"junk\n",
        0o644,
    );
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy beside future-dated names that are no releases");
    let s = run.summary();
    assert!(
        s.release > first && s.release.as_str() < "20991231235959",
        "{} (first {first})",
        s.release
    );
    site.assert_release_is_source(&s.release, &[]);
    assert_eq!(
        fs::read_to_string(site.at("releases/20991231235959")).unwrap(),
        "not a release\n"
    );
    assert!(fs::symlink_metadata(site.at("releases/21001231235959"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!site.at("releases/22001231235959.partial").exists());
}

// --- 8. and 9. sources that must not be deployed ------------------------------------------------

/// A deploy path inside the source (each release would copy the earlier ones) is a config error.
#[test]
fn deploy_path_inside_the_source_is_a_config_error() {
    let Some(mut site) = Site::new(Local) else {
        return;
    };
    site.write("index.php", "<?php\n");
    site.set_path(site.src.join("public/deploy"));
    let run = site.deploy_with(&[]);
    run.expect_code(2, "deploy path inside the source");
    assert!(
        run.stderr.contains("inside the source"),
        "{}",
        run.describe()
    );
    assert!(!site.src.join("public/deploy").exists());
}

/// A source with nothing to deploy (everything excluded) is refused: `current` is untouched.
fn an_empty_source_is_refused(kind: TargetKind) {
    let Some((mut site, first)) = site_with_release(kind) else {
        return;
    };
    site.configure("exclude = [\"*\"]", "");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy of a source with no file");
    assert!(
        run.stderr.contains("no file to deploy"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first));
    site.assert_clean("after the refused empty deploy");
}

// --- 10. leftovers of killed deploys do not pile up ---------------------------------------------

/// Probes and temporary links of killed deploys (`.cutover/probe.PID`, `.cutover/swap-probe.PID`,
/// `.current.*.tmp`) are removed by the next deploy.
fn killed_deploys_probes_and_temp_links_are_removed(kind: TargetKind) {
    let Some((site, _)) = site_with_release(kind) else {
        return;
    };
    fs::create_dir_all(site.at(".cutover/probe.4242/dir")).unwrap();
    fs::create_dir_all(site.at(".cutover/swap-probe.4243/dir")).unwrap();
    symlink("releases/x", site.at(".current.20260101000000.tmp")).unwrap();
    symlink("releases/x", site.at(".current.4244.tmp")).unwrap();
    // a probe's name that is a link to a directory elsewhere: the link goes, nothing is made there
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), site.at(".cutover/probe.4245")).unwrap();
    site.write("index.php", "<?php echo 2;\n");
    site.deploy();
    assert!(list_names(elsewhere.path()).is_empty());
    let left: Vec<String> = list_names(&site.at(".cutover"))
        .into_iter()
        .chain(list_names(&site.path))
        .filter(|n| n.contains("probe") || n.starts_with(".current."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// --- 11. and 12. manifests are untrusted input ----------------------------------------------------

/// A manifest with a 300-byte path component, or a 200 KB path, is refused before anything
/// moves, saying why; a manifest that is a link to another file (a secret) is no manifest at
/// all, and no message ever shows that file's content.
fn oversized_or_linked_manifests_are_refused_without_echoing_them(kind: TargetKind) {
    let Some((site, first)) = site_with_release(kind) else {
        return;
    };
    let manifest = site.at(format!(".cutover/manifests/{first}"));
    let original = fs::read_to_string(&manifest).unwrap();
    let h = "0".repeat(32);
    for (bad, why) in [
        (
            format!("f\t644\t1\t{h}\t{}\n", "c".repeat(300)),
            "255 bytes",
        ),
        (
            format!("f\t644\t1\t{h}\t{}\n", "d/".repeat(100_000) + "x"),
            "4096 bytes",
        ),
    ] {
        fs::write(&manifest, format!("{original}{bad}")).unwrap();
        site.write("index.php", format!("<?php echo '{why}';\n"));
        let run = site.deploy_with(&[]);
        run.expect_code(1, "deploy against an oversized manifest");
        assert!(
            run.stderr.contains(why) && run.stderr.contains(&manifest.display().to_string()),
            "{}",
            run.describe()
        );
        assert_eq!(site.current_id(), Some(first.clone()));
        site.assert_clean("after a refused manifest");
    }
    // A "manifest" that is a link to a secret, and one whose first line is a secret.
    let secret = site.root().join("secret");
    fs::write(&secret, "root:$6$SECRETSALT$hash:19000:0:99999:7:::\n").unwrap();
    fs::remove_file(&manifest).unwrap();
    symlink(&secret, &manifest).unwrap();
    let run = site.deploy_with(&[]);
    assert!(!run.stderr.contains("SECRETSALT") && !run.stdout.contains("SECRETSALT"));
    run.expect_code(0, "a linked manifest is no manifest: a full upload");
    assert_eq!(run.summary().unchanged, 0);
    let live = site.current_id().unwrap();
    fs::write(
        site.at(format!(".cutover/manifests/{live}")),
        "root:$6$SECRETSALT$hash:19000:0:99999:7:::\n",
    )
    .unwrap();
    site.write("index.php", "<?php echo 'after';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy against a garbage manifest");
    assert!(
        run.stderr.contains("not a cutover manifest"),
        "{}",
        run.describe()
    );
    assert!(!run.stderr.contains("SECRETSALT"), "{}", run.describe());
}

// --- 14. directories carry the source's times ------------------------------------------------------

/// Directories of a release are dated like the source's, not 1970 (an archive entry without a
/// time).
fn release_directories_carry_the_sources_times(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("assets/css/app.css", "body{}\n");
    site.write("index.php", "<?php\n");
    let id = site.deploy().release;
    for dir in ["", "assets", "assets/css"] {
        let deployed = fs::metadata(site.release_dir(&id).join(dir))
            .unwrap()
            .modified()
            .unwrap();
        let year_2020 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
        assert!(deployed > year_2020, "{dir:?} is dated {deployed:?}");
        if !dir.is_empty() {
            let source = fs::metadata(site.src.join(dir))
                .unwrap()
                .modified()
                .unwrap();
            let apart = deployed
                .duration_since(source)
                .unwrap_or_else(|e| e.duration());
            assert!(
                apart.as_secs() <= 1,
                "{dir:?}: {deployed:?} vs source {source:?}"
            );
        }
    }
}

both_targets!(
    leftover_partial_under_the_next_name_is_removed_not_built_into,
    release_that_is_a_symlink_is_never_followed,
    staging_that_is_a_symlink_is_refused_and_never_emptied,
    trash_that_is_a_symlink_is_removed_and_never_followed,
    link_where_the_manifest_has_a_directory_is_never_followed,
    unlock_removes_a_linked_lock_without_following_it,
    rollback_only_picks_releases_with_a_manifest,
    the_last_release_name_is_a_clear_refusal,
    future_names_that_are_no_releases_do_not_push_the_next_name,
    an_empty_source_is_refused,
    killed_deploys_probes_and_temp_links_are_removed,
    oversized_or_linked_manifests_are_refused_without_echoing_them,
    release_directories_carry_the_sources_times,
);
