//! Deploy scenarios shared by tests/deploy.rs (local and ssh) and tests/sftp_only.rs: each function is
//! one test body, run once per [`TargetKind`]. The deploy path is inspected directly on the
//! file system (an SSH target is 127.0.0.1).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fixtures::read;
use super::site::*;

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn link_target(p: &Path) -> String {
    fs::read_link(p)
        .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", p.display()))
        .to_string_lossy()
        .into_owned()
}

/// The entry lines of a manifest file, without its `#` records (who, when, which commit).
pub fn entries_of(p: &Path) -> Vec<String> {
    read(p)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Runs `sh FILE` in `cwd` (a script emitted by cutover, run "on the server").
fn sh(file: &Path, cwd: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(file)
        .current_dir(cwd)
        .output()
        .expect("running sh")
}

// -------------------------------------------------------------------------------------------

/// First deploy: `current -> releases/ID` (relative), the release holds exactly the source
/// tree, shared/ and the manifest exist, and nothing temporary is left.
pub fn first_deploy_gives_the_exact_layout(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 30);
    let expected = source_view(&site.src, WEBAPP_NOT_DEPLOYED);

    let s = site.deploy();
    let id = s.release.clone();
    assert!(is_release_id(&id), "release name {id:?} is not 14 digits");

    // current: a relative symlink releases/ID
    assert!(meta(&site.at("current")).file_type().is_symlink());
    assert_eq!(site.current_link(), Some(format!("releases/{id}")));
    assert_eq!(
        read(&site.at("current/index.php")),
        read(&site.src.join("index.php"))
    );

    // the deploy path holds exactly the documented layout
    assert_eq!(
        list_names(&site.path),
        [".cutover", "current", "releases", "shared"],
        "top level of the deploy path"
    );
    assert_eq!(site.releases(), std::slice::from_ref(&id));
    assert!(meta(&site.at("shared")).is_dir(), "shared/ is a directory");
    assert_eq!(site.manifests(), std::slice::from_ref(&id));
    let manifest = read(&site.at(format!(".cutover/manifests/{id}")));
    assert!(manifest.starts_with("cutover-manifest "), "{manifest}");
    assert!(manifest.contains("bin/console"), "{manifest}");
    assert!(!manifest.contains(".git/"), "{manifest}");
    site.assert_clean("first deploy");

    // the release is exactly the source (minus .git and gitignored files)
    site.assert_release_is_source(&id, WEBAPP_NOT_DEPLOYED);
    let rel = site.release_dir(&id);
    // the same facts, spelled out
    assert_eq!(
        read(&rel.join(".htaccess")),
        read(&site.src.join(".htaccess"))
    );
    assert!(rel.join(".well-known/security.txt").is_file());
    assert!(!rel.join(".git").exists(), ".git/ must never be deployed");
    assert!(
        !rel.join("debug.log").exists(),
        "a gitignored file was deployed"
    );
    assert!(
        !rel.join("node_modules").exists(),
        "a gitignored dir was deployed"
    );
    assert_eq!(
        meta(&rel.join("bin/console")).permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        meta(&rel.join("index.php")).permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(link_target(&rel.join("favicon.ico")), "assets/img/logo.png");
    assert_eq!(link_target(&rel.join("dangling")), "does/not/exist");
    assert_eq!(
        fs::read(rel.join("assets/img/logo.png")).unwrap(),
        noise(7, 4096)
    );
    assert!(
        meta(&rel.join("storage/logs")).is_dir(),
        "empty directories are deployed"
    );

    assert_eq!(s.uploaded, count_uploadable(&expected), "{s:?}");
    assert_eq!(
        (s.deleted, s.unchanged, s.links, s.warnings),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

/// Second deploy: only changed files travel, removed files and directories go, the previous
/// release is not touched, and a no-change deploy uploads nothing.
pub fn second_deploy_uploads_only_changed_files(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 40);
    let first = site.deploy();
    let total = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));
    assert!(
        total >= 45,
        "the fixture should have ~50 entries, has {total}"
    );
    let release1 = snapshot(&site.release_dir(&first.release));

    // change 2 files, delete 1 file and 1 whole directory (with several files)
    site.write("assets/css/app.css", "body { margin: 1px; }\n");
    site.write(
        "vendor/pkg1/src/Class1.php",
        "<?php\nclass Class1 { /* v2 */ }\n",
    );
    site.remove("assets/js/app.js");
    let gone_dir = site.src.join("vendor/pkg4");
    let gone_files = count_uploadable(&snapshot(&gone_dir));
    assert!(gone_files >= 5);
    site.remove("vendor/pkg4");

    let second = site.deploy();
    assert_ne!(second.release, first.release);
    assert!(second.release > first.release, "release names sort in time");
    assert_eq!(second.uploaded, 2, "{second:?}");
    assert_eq!(second.deleted, 2, "one file and one directory: {second:?}");
    let now = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));
    assert_eq!(now, total - 1 - gone_files);
    assert_eq!(second.unchanged, now - 2, "{second:?}");

    site.assert_release_is_source(&second.release, WEBAPP_NOT_DEPLOYED);
    let rel2 = site.release_dir(&second.release);
    assert!(!rel2.join("vendor/pkg4").exists());
    assert!(!rel2.join("assets/js/app.js").exists());
    assert_trees_equal(
        &release1,
        &snapshot(&site.release_dir(&first.release)),
        "the previous release after the second deploy",
    );
    assert_eq!(
        site.releases(),
        [first.release.clone(), second.release.clone()]
    );
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("second deploy");

    // nothing changed: no new release, no hook, exit 0
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy with nothing changed");
    assert!(
        run.stdout.contains(&format!(
            "nothing changed: release {} stays live",
            second.release
        )),
        "{}",
        run.describe()
    );
    assert_eq!(
        site.releases(),
        [first.release.clone(), second.release.clone()],
        "no release is built when nothing changed"
    );
    site.assert_clean("deploy with nothing changed");
    // --force builds one all the same: nothing to upload, the new release is still complete,
    // and its manifest lists the same tree
    let third = site.deploy_with(&["--force"]).summary();
    assert_eq!((third.uploaded, third.deleted), (0, 0), "{third:?}");
    assert_eq!(third.unchanged, now, "{third:?}");
    site.assert_release_is_source(&third.release, WEBAPP_NOT_DEPLOYED);
    let manifests = site.at(".cutover/manifests");
    assert_eq!(
        entries_of(&manifests.join(&third.release)),
        entries_of(&manifests.join(&second.release)),
        "the manifest of a release where nothing changed"
    );
    site.assert_clean("forced deploy with nothing changed");
    site.write("index.php", "<?php echo 'after a no-op';\n");
    let fourth = site.deploy();
    assert_eq!((fourth.uploaded, fourth.deleted), (1, 0), "{fourth:?}");
    site.assert_release_is_source(&fourth.release, WEBAPP_NOT_DEPLOYED);
}

/// `--full` uploads every file again and builds the release from them alone: the same tree.
pub fn full_deploy_uploads_everything_again(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 10);
    let total = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));
    site.deploy();
    site.write("index.php", "<?php echo 'v2';\n");
    site.remove("assets/js/app.js");
    let run = site.deploy_with(&["--full"]);
    run.expect_code(0, "deploy --full");
    let s = run.summary();
    assert_eq!(s.uploaded, total - 1, "{s:?}");
    // From the source alone: nothing of the live release to delete, nothing kept from it.
    assert_eq!((s.deleted, s.unchanged), (0, 0), "{s:?}");
    site.assert_release_is_source(&s.release, WEBAPP_NOT_DEPLOYED);
}

/// A file the application wrote into the live release is carried into the next one.
pub fn runtime_files_are_carried_into_the_next_release(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 5);
    let first = site.deploy();
    let rel1 = site.release_dir(&first.release);
    write_file(
        &rel1.join("runtime/cache.txt"),
        b"cached at runtime\n",
        0o644,
    );
    write_file(&rel1.join("storage/logs/app.log"), b"log line\n", 0o644);

    site.write("index.php", "<?php echo 'v2';\n");
    let second = site.deploy();
    assert_eq!(second.uploaded, 1, "{second:?}");
    let rel2 = site.release_dir(&second.release);
    assert_eq!(read(&rel2.join("runtime/cache.txt")), "cached at runtime\n");
    assert_eq!(read(&rel2.join("storage/logs/app.log")), "log line\n");
    assert_eq!(read(&rel2.join("index.php")), "<?php echo 'v2';\n");
    // apart from the runtime files, the release is the source
    let mut actual = snapshot(&rel2);
    actual.remove(Path::new("runtime"));
    actual.remove(Path::new("runtime/cache.txt"));
    actual.remove(Path::new("storage/logs/app.log"));
    assert_trees_equal(
        &source_view(&site.src, WEBAPP_NOT_DEPLOYED),
        &actual,
        "release 2 without its runtime files",
    );
}

/// The shared walk: a missing path is linked whole, a directory is descended into, and a
/// path the release has itself wins (with a warning naming it).
pub fn shared_entries_are_linked_by_the_rule(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let shared = site.at("shared");
    write_file(&shared.join("uploads/a.jpg"), &noise(1, 300), 0o644);
    write_file(&shared.join("uploads/2026/b.jpg"), &noise(2, 300), 0o644);
    write_file(&shared.join("conf/x"), b"shared x\n", 0o644);
    write_file(
        &shared.join("index.php"),
        b"<?php // shared, must lose\n",
        0o644,
    );
    write_file(&shared.join(".env"), b"APP_KEY=secret\n", 0o600);
    let shared_before = snapshot(&shared);

    site.write("index.php", "<?php // from the repo\n");
    site.write("conf/app.ini", "a=1\n");
    site.write("conf/other.ini", "b=2\n");

    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy with shared entries");
    let s = run.summary();
    let rel = site.release_dir(&s.release);

    // (1) nothing in the release at uploads: ONE link to the whole directory
    assert_eq!(link_target(&rel.join("uploads")), "../../shared/uploads");
    assert_eq!(fs::read(rel.join("uploads/a.jpg")).unwrap(), noise(1, 300));
    assert_eq!(
        fs::read(site.at("current/uploads/2026/b.jpg")).unwrap(),
        noise(2, 300)
    );
    // hidden entries of shared/ count too
    assert_eq!(link_target(&rel.join(".env")), "../../shared/.env");
    // (2) a directory in both: descend; conf/ stays a real directory
    assert!(
        meta(&rel.join("conf")).is_dir(),
        "conf/ must be a real directory"
    );
    assert_eq!(link_target(&rel.join("conf/x")), "../../../shared/conf/x");
    assert_eq!(read(&rel.join("conf/x")), "shared x\n");
    assert_eq!(read(&rel.join("conf/app.ini")), "a=1\n");
    // (3) a file in the release: the release wins, with a warning naming it
    assert!(meta(&rel.join("index.php")).is_file());
    assert_eq!(read(&rel.join("index.php")), "<?php // from the repo\n");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains("index.php")),
        "expected a warning naming index.php\n{}",
        run.describe()
    );
    assert_eq!((s.links, s.warnings), (3, 1), "{s:?}");
    assert_trees_equal(
        &shared_before,
        &snapshot(&shared),
        "shared/ after the deploy",
    );
    // the manifest lists only what came from the repository
    let manifest = read(&site.at(format!(".cutover/manifests/{}", s.release)));
    assert!(!manifest.contains("uploads"), "{manifest}");
    assert!(!manifest.contains("conf/x"), "{manifest}");

    // the next release (a copy of this one) gets the same links, remade
    site.write("conf/app.ini", "a=2\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "second deploy with shared entries");
    let s2 = run.summary();
    assert_eq!(s2.uploaded, 1, "{s2:?}");
    assert_eq!((s2.links, s2.warnings), (3, 1), "{s2:?}");
    let rel2 = site.release_dir(&s2.release);
    assert_eq!(link_target(&rel2.join("uploads")), "../../shared/uploads");
    assert_eq!(link_target(&rel2.join("conf/x")), "../../../shared/conf/x");
    assert_eq!(link_target(&rel2.join(".env")), "../../shared/.env");
    assert_eq!(read(&rel2.join("index.php")), "<?php // from the repo\n");
    assert_eq!(read(&rel2.join("conf/app.ini")), "a=2\n");
    assert_trees_equal(
        &shared_before,
        &snapshot(&shared),
        "shared/ after two deploys",
    );
}

/// A path that was a shared link in the previous release and is a repository path now is a
/// repository path: its files land in the release and nothing is written into shared/.
pub fn former_shared_link_now_in_the_repo_never_writes_into_shared(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let shared = site.at("shared");
    write_file(&shared.join("uploads/a.jpg"), b"shared a\n", 0o644);
    write_file(&shared.join("uploads/keep.jpg"), b"shared keep\n", 0o644);
    write_file(&shared.join("robots.txt"), b"shared robots\n", 0o644);
    let shared_before = snapshot(&shared);

    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let rel1 = site.release_dir(&first.release);
    assert_eq!(link_target(&rel1.join("uploads")), "../../shared/uploads");
    assert_eq!(
        link_target(&rel1.join("robots.txt")),
        "../../shared/robots.txt"
    );
    let release1 = snapshot(&rel1);

    // the repository now has its own uploads/ directory and robots.txt file
    site.write("uploads/a.jpg", "repo a\n");
    site.write("uploads/readme.txt", "repo readme\n");
    site.write("robots.txt", "repo robots\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy over former shared links");
    let s = run.summary();
    let rel2 = site.release_dir(&s.release);

    assert!(
        meta(&rel2.join("uploads")).is_dir(),
        "uploads/ is a real directory now"
    );
    assert!(meta(&rel2.join("uploads/a.jpg")).is_file());
    assert_eq!(read(&rel2.join("uploads/a.jpg")), "repo a\n");
    assert_eq!(read(&rel2.join("uploads/readme.txt")), "repo readme\n");
    assert!(meta(&rel2.join("robots.txt")).is_file());
    assert_eq!(read(&rel2.join("robots.txt")), "repo robots\n");
    // the shared walk descends into the real directory: keep.jpg is linked, a.jpg is not
    assert_eq!(
        link_target(&rel2.join("uploads/keep.jpg")),
        "../../../shared/uploads/keep.jpg"
    );
    assert_eq!((s.links, s.warnings), (1, 2), "{s:?}");

    assert_trees_equal(
        &shared_before,
        &snapshot(&shared),
        "shared/ (nothing may be written into it)",
    );
    assert_trees_equal(&release1, &snapshot(&rel1), "the previous release");
}

/// Releases beyond keep_releases (default 3) are pruned with their manifests; current is the
/// newest.
pub fn only_keep_releases_releases_are_kept(kind: TargetKind, keep: Option<u32>) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    let keep_n = keep.unwrap_or(3) as usize;
    if let Some(k) = keep {
        site.configure(&format!("keep_releases = {k}"), "");
    }
    site.write("index.php", "<?php\n");
    let mut ids = Vec::new();
    for i in 0..5 {
        site.write("rev.txt", format!("revision {i}\n"));
        let s = site.deploy();
        ids.push(s.release.clone());
        let want: Vec<String> = ids[ids.len().saturating_sub(keep_n)..].to_vec();
        assert_eq!(site.releases(), want, "releases after deploy {}", i + 1);
        assert_eq!(site.manifests(), want, "manifests after deploy {}", i + 1);
        assert_eq!(
            site.current_id().as_deref(),
            want.last().map(String::as_str)
        );
        assert_eq!(read(&site.at("current/rev.txt")), format!("revision {i}\n"));
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "release names are unique and increase");
    site.assert_clean("after 5 deploys");
}

/// `--emit-script` with nothing changed still stages the manifest (staging is a complete record
/// of the deploy the script finishes), and running the script completes the deploy.
pub fn emit_script_with_nothing_changed_stages_the_manifest(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 3);
    let first = site.deploy();
    let run = site.deploy_with(&["--emit-script"]);
    run.expect_code(0, "deploy --emit-script with nothing changed");
    let staged = site.staging_leftovers();
    assert_eq!(staged.len(), 1, "one staged release: {staged:?}");
    let id = staged[0].clone();
    let manifests = site.at(".cutover/manifests");
    assert_eq!(
        entries_of(&site.at(".cutover/staging").join(&id).join("manifest")),
        entries_of(&manifests.join(&first.release)),
        "the staged manifest"
    );
    let file = site.root().join("deploy.sh");
    fs::write(&file, &run.stdout).unwrap();
    let out = sh(&file, site.root());
    assert!(out.status.success(), "sh deploy.sh: {out:?}");
    assert_eq!(site.current_id(), Some(id.clone()));
    site.assert_release_is_source(&id, WEBAPP_NOT_DEPLOYED);
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("after running the emitted script");
}

/// `--emit-script` stages the release and prints only the script; running it with sh completes
/// the deploy, and running it again fails cleanly.
pub fn emit_script_is_completed_by_running_it(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 5);
    let first = site.deploy();
    let execs = site.exec_sessions();

    site.write("index.php", "<?php echo 'emitted';\n");
    site.write("new/file.txt", "new\n");
    let run = site.deploy_with(&["--emit-script"]);
    run.expect_code(0, "deploy --emit-script");
    let script = run.stdout.clone();
    assert!(script.starts_with("#!/bin/sh\n"), "{}", run.describe());
    assert!(
        !script.contains(" is live: "),
        "stdout must be only the script"
    );
    assert!(
        script.trim_end().ends_with("exit \"$status\""),
        "stdout must end with the script's last line:\n{}",
        &script[script.len().saturating_sub(300)..]
    );
    assert_eq!(
        site.exec_sessions(),
        execs,
        "--emit-script runs nothing on the server"
    );
    assert_eq!(
        site.current_id(),
        Some(first.release.clone()),
        "current unchanged"
    );
    assert!(!site.lock_exists(), "--emit-script releases the lock");
    assert_eq!(site.releases(), std::slice::from_ref(&first.release));
    let staged = site.staging_leftovers();
    assert_eq!(staged.len(), 1, "one staged release: {staged:?}");
    let id = staged[0].clone();
    assert!(is_release_id(&id) && id > first.release, "{id}");

    let file = site.root().join("deploy.sh");
    fs::write(&file, &script).unwrap();
    let syntax = Command::new("sh").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "sh -n: {syntax:?}");

    let out = sh(&file, site.root());
    assert!(out.status.success(), "sh deploy.sh: {out:?}");
    assert_eq!(
        site.current_id(),
        Some(id.clone()),
        "the script switched current"
    );
    site.assert_release_is_source(&id, WEBAPP_NOT_DEPLOYED);
    assert_eq!(read(&site.at("current/new/file.txt")), "new\n");
    assert_eq!(site.releases(), [first.release.clone(), id.clone()]);
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("after running the emitted script");
    let before_again = snapshot(&site.path);

    // a second run finds its staging gone and stops before touching anything
    let again = sh(&file, site.root());
    assert_eq!(again.status.code(), Some(1), "second run: {again:?}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("gone") || err.contains("exists"), "{err}");
    assert_eq!(site.current_id(), Some(id.clone()));
    assert_trees_equal(
        &before_again,
        &snapshot(&site.path),
        "deploy path after the second run",
    );
    site.assert_clean("after the second run");

    // and a normal deploy goes on from the emitted release
    site.write("index.php", "<?php echo 'after';\n");
    let next = site.deploy();
    assert_eq!(next.uploaded, 1, "{next:?}");
}

/// `--dry-run` prints the plan and writes nothing: not even the deploy path on a fresh server.
pub fn dry_run_writes_nothing(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 5);
    let total = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));

    let run = site.deploy_with(&["--dry-run"]);
    run.expect_code(0, "dry run on a fresh server");
    assert!(run.stdout.contains("dry run"), "{}", run.describe());
    assert!(
        run.stdout.contains(&format!("{total} to upload")),
        "expected `{total} to upload`\n{}",
        run.describe()
    );
    assert!(
        fs::symlink_metadata(&site.path).is_err(),
        "a dry run on a fresh server created {}",
        site.path.display()
    );
    assert_eq!(
        site.exec_sessions().unwrap_or(0),
        0,
        "a dry run runs nothing"
    );

    let first = site.deploy();
    site.write("index.php", "<?php echo 'v2';\n");
    site.write("assets/css/app.css", "p {}\n");
    site.remove("assets/js/app.js");
    let before = snapshot(&site.path);
    let execs = site.exec_sessions();
    let run = site.deploy_with(&["--dry-run", "-v"]);
    run.expect_code(0, "dry run after a deploy");
    assert!(run.stdout.contains("2 to upload"), "{}", run.describe());
    assert!(run.stdout.contains("1 to delete"), "{}", run.describe());
    assert!(
        run.stdout.contains(&first.release),
        "names its base release\n{}",
        run.describe()
    );
    let all = format!("{}{}", run.stdout, run.stderr);
    for p in ["index.php", "assets/css/app.css", "assets/js/app.js"] {
        assert!(all.contains(p), "-v lists {p}\n{}", run.describe());
    }
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after a dry run",
    );
    assert_eq!(site.exec_sessions(), execs, "a dry run runs nothing");
}

/// A failing before_swap hook aborts: exit 1, current and the previous release untouched,
/// nothing left behind; the next good deploy works.
pub fn failing_before_swap_hook_leaves_current_untouched(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    write_webapp(&site, 5);
    let first = site.deploy();
    let release1 = snapshot(&site.release_dir(&first.release));

    site.configure(
        "[hooks]\nbefore_swap = [\"touch hook-ran\", \"exit 7\"]",
        "",
    );
    site.write("index.php", "<?php echo 'v2';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy with a failing before_swap hook");
    assert!(run.stderr.contains("before_swap"), "{}", run.describe());
    // The final error says why (what the script said first), not only its exit code.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("before_swap hook failed")),
        "{}",
        run.describe()
    );
    assert!(
        parse_summary(&run.stdout).is_none(),
        "no `is live` summary\n{}",
        run.describe()
    );
    assert_eq!(
        site.current_id(),
        Some(first.release.clone()),
        "current untouched"
    );
    assert_eq!(
        site.releases(),
        std::slice::from_ref(&first.release),
        "no partial release"
    );
    assert_eq!(site.manifests(), std::slice::from_ref(&first.release));
    site.assert_clean("after a failed before_swap hook");
    assert_trees_equal(
        &release1,
        &snapshot(&site.release_dir(&first.release)),
        "the live release",
    );

    site.configure("", "");
    let next = site.deploy();
    assert_eq!(
        next.uploaded, 1,
        "planned against the live release: {next:?}"
    );
    site.assert_release_is_source(&next.release, WEBAPP_NOT_DEPLOYED);
    site.assert_clean("after the next good deploy");
}

/// A failing after_swap hook: exit 3, the new release stays live.
pub fn failing_after_swap_hook_exits_3_and_stays_live(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    write_webapp(&site, 5);
    let first = site.deploy();
    site.configure("[hooks]\nafter_swap = [\"exit 5\"]", "");
    site.write("index.php", "<?php echo 'v2';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(3, "deploy with a failing after_swap hook");
    assert!(run.stderr.contains("after_swap"), "{}", run.describe());
    let s = run.summary();
    assert!(s.release > first.release);
    assert_eq!(
        site.current_id(),
        Some(s.release.clone()),
        "the new release is live"
    );
    site.assert_release_is_source(&s.release, WEBAPP_NOT_DEPLOYED);
    assert_eq!(site.manifests(), site.releases());
    site.assert_clean("after a failed after_swap hook");
}

/// Hooks get CUTOVER_RELEASE, CUTOVER_RELEASE_PATH, CUTOVER_PREVIOUS_RELEASE and
/// CUTOVER_DEPLOY_PATH, run in the new release, before_swap before and after_swap after the swap.
pub fn hooks_see_the_release_environment(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    let hook = |file: &str| {
        format!(
            "{{ printf '%s\\n' \"$CUTOVER_RELEASE\" \"$CUTOVER_RELEASE_PATH\" \"$CUTOVER_PREVIOUS_RELEASE\" \
             \"$CUTOVER_DEPLOY_PATH\" \"$PWD\" \"$(readlink \"$CUTOVER_DEPLOY_PATH/current\")\"; \
             if test -f \"$CUTOVER_RELEASE_PATH/index.php\"; then echo has-index; else echo no-index; fi; }} \
             > \"$CUTOVER_DEPLOY_PATH/{file}\""
        )
    };
    site.configure(
        &format!(
            "[hooks]\nbefore_swap = [{}]\nafter_swap = [{}]",
            toml_str(&hook("before.env")),
            toml_str(&hook("after.env"))
        ),
        "",
    );
    site.write("index.php", "<?php\n");
    let deploy_path = site.path.display().to_string();
    let lines =
        |f: &str| -> Vec<String> { read(&site.at(f)).lines().map(str::to_string).collect() };

    let mut previous = String::new();
    for round in 0..2 {
        site.write("rev.txt", format!("{round}\n"));
        let s = site.deploy();
        let id = s.release.clone();
        let final_path = format!("{deploy_path}/releases/{id}");

        let before = lines("before.env");
        assert_eq!(before.len(), 7, "{before:?}");
        assert_eq!(before[0], id, "before_swap CUTOVER_RELEASE");
        // before_swap runs in the finished tree under its final name (not yet live), so
        // paths a hook bakes into caches stay valid once it is.
        assert_eq!(
            before[1], final_path,
            "before_swap CUTOVER_RELEASE_PATH is the release's own path"
        );
        assert_eq!(
            before[1], before[4],
            "before_swap runs in CUTOVER_RELEASE_PATH"
        );
        assert_eq!(before[2], previous, "before_swap CUTOVER_PREVIOUS_RELEASE");
        assert_eq!(before[3], deploy_path, "before_swap CUTOVER_DEPLOY_PATH");
        let old_current = if previous.is_empty() {
            String::new()
        } else {
            format!("releases/{previous}")
        };
        assert_eq!(before[5], old_current, "before_swap runs before the swap");
        assert_eq!(
            before[6], "has-index",
            "the release is complete when before_swap runs"
        );

        let after = lines("after.env");
        assert_eq!(after.len(), 7, "{after:?}");
        assert_eq!(after[0], id, "after_swap CUTOVER_RELEASE");
        assert_eq!(after[1], final_path, "after_swap CUTOVER_RELEASE_PATH");
        assert_eq!(after[4], final_path, "after_swap runs in the release");
        assert_eq!(after[2], previous, "after_swap CUTOVER_PREVIOUS_RELEASE");
        assert_eq!(after[3], deploy_path, "after_swap CUTOVER_DEPLOY_PATH");
        assert_eq!(
            after[5],
            format!("releases/{id}"),
            "after_swap runs after the swap"
        );
        assert_eq!(after[6], "has-index");
        previous = id;
    }
}

/// A held lock refuses the deploy (exit 1) naming the holder and `cutover unlock`; unlock
/// removes it and the next deploy works.
pub fn held_lock_refuses_and_unlock_clears_it(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let info = "holder=someone@box\npid=1\nstarted=2026-01-01T00:00:00Z\nrelease=x\n";
    write_file(&site.at(".cutover/lock/info"), info.as_bytes(), 0o644);
    site.write("index.php", "<?php echo 2;\n");
    let execs = site.exec_sessions();
    let before = snapshot(&site.path);

    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy while locked");
    assert!(
        run.stderr.contains("someone@box"),
        "names the holder\n{}",
        run.describe()
    );
    assert!(run.stderr.contains("cutover unlock"), "{}", run.describe());
    assert!(
        run.stderr.contains("2026-01-01T00:00:00Z"),
        "says since when\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(" ago"),
        "README: names the lock's age\n{}",
        run.describe()
    );
    // At most the shell a deploy starts while it surveys, never given a script.
    site.assert_script_never_ran(execs, &run);
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path (someone else's lock included)",
    );
    assert_eq!(site.current_id(), Some(first.release.clone()));

    let run = site.cutover(&["unlock"]);
    run.expect_code(0, "cutover unlock");
    assert!(
        !site.lock_exists(),
        "unlock removed the lock\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("someone@box"),
        "unlock says whose lock it removed\n{}",
        run.describe()
    );

    let next = site.deploy();
    assert_eq!(next.uploaded, 1, "{next:?}");
    site.assert_clean("after unlock and deploy");
}

/// Names full of shell syntax deploy byte-exact, and change/delete incrementally, without
/// ever being run as code.
pub fn hostile_names_deploy_byte_exact(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let quoted = "it's \"quoted\" $(touch CANARY) ;|&<>";
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let canary_spots: Vec<PathBuf> = vec![
        PathBuf::from("/CANARY"),
        Path::new(&home).join("CANARY"),
        std::env::current_dir().unwrap().join("CANARY"),
    ];
    for c in &canary_spots {
        assert!(!c.exists(), "{} exists before the test", c.display());
    }
    let canaries = |site: &Site| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = snapshot(site.root())
            .keys()
            .filter(|p| p.file_name().is_some_and(|n| n == "CANARY"))
            .map(|p| site.root().join(p))
            .collect();
        found.extend(canary_spots.iter().filter(|c| c.exists()).cloned());
        found
    };

    site.write("index.php", "<?php\n");
    site.write("bystander.txt", "must survive\n");
    site.write(quoted, "quoted v1\n");
    site.write("new\nline", "newline v1\n");
    site.write("-rf", "dash rf\n");
    site.write("*", "star v1\n");
    site.write("-n/-e", "dash e\n");
    site.write("-n/x y", "space\n");
    site.write("dir $(touch CANARY)/f`touch CANARY`", "backticks\n");
    site.symlink("sym'link", quoted);
    site.write("tab\there", "tab\n");
    site.write("back\\slash", "backslash\n");

    let first = site.deploy();
    site.assert_release_is_source(&first.release, &[]);
    assert!(
        canaries(&site).is_empty(),
        "CANARY created: {:?}",
        canaries(&site)
    );

    // change two, delete a file and a directory, add a file in a new hostile directory
    site.write(quoted, "quoted v2\n");
    site.write("new\nline", "newline v2\n");
    site.remove("-rf");
    site.remove("-n");
    site.write("a dir with 'quotes'/f;rm -rf x", "new\n");
    let second = site.deploy();
    assert_eq!((second.uploaded, second.deleted), (3, 2), "{second:?}");
    site.assert_release_is_source(&second.release, &[]);
    let rel2 = site.release_dir(&second.release);
    assert_eq!(read(&rel2.join("bystander.txt")), "must survive\n");
    assert_eq!(read(&rel2.join("*")), "star v1\n");
    assert!(
        canaries(&site).is_empty(),
        "CANARY created: {:?}",
        canaries(&site)
    );

    // and delete the rest of them
    site.remove(quoted);
    site.remove("*");
    site.remove("new\nline");
    site.remove("sym'link");
    let third = site.deploy();
    assert_eq!(third.deleted, 4, "{third:?}");
    site.assert_release_is_source(&third.release, &[]);
    assert!(
        canaries(&site).is_empty(),
        "CANARY created: {:?}",
        canaries(&site)
    );
}

/// Type changes between deploys: file → directory, directory → file, symlink retargeted,
/// file → symlink, symlink → file.
pub fn type_changes_are_applied(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("a", "file a\n");
    site.write("b/inner.txt", "inner\n");
    site.mkdir("target-dir");
    site.write("target-dir/t.txt", "t\n");
    site.symlink("c", "target-dir");
    site.write("d", "file d\n");
    site.symlink("e", "a");
    site.write("f/inner.txt", "f inner\n");
    site.write("g.sh", "#!/bin/sh\n");
    let first = site.deploy();
    let release1 = snapshot(&site.release_dir(&first.release));

    site.remove("a");
    site.write("a/now-a-dir.txt", "x\n");
    site.remove("b");
    site.write("b", "now a file\n");
    site.symlink("c", "b");
    site.remove("d");
    site.symlink("d", "target-dir/t.txt");
    site.remove("e");
    site.write("e", "now a file\n");
    site.remove("f");
    site.symlink("f", "target-dir");
    // only the mode changes
    fs::set_permissions(site.src.join("g.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let second = site.deploy();
    assert_eq!(
        second.uploaded, 7,
        "a/now-a-dir.txt b c d e f g.sh: {second:?}"
    );
    site.assert_release_is_source(&second.release, &[]);
    // the retargeted link c pointed at a directory: nothing may have been moved into it
    assert_trees_equal(
        &release1,
        &snapshot(&site.release_dir(&first.release)),
        "the previous release",
    );
    assert_eq!(
        list_names(&site.release_dir(&second.release).join("target-dir")),
        ["t.txt"]
    );
}

/// copy = "hardlink": the new release shares unchanged files with the previous one, and a
/// changed file never changes the previous release's copy.
pub fn hardlink_copy_keeps_the_previous_release_intact(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("copy = \"hardlink\"", "");
    write_webapp(&site, 5);
    let first = site.deploy();
    let rel1 = site.release_dir(&first.release);
    let release1 = snapshot(&rel1);

    site.write("index.php", "<?php echo 'v2';\n");
    site.write_exec("assets/css/app.css", "changed and now executable\n");
    let second = site.deploy();
    assert_eq!(second.uploaded, 2, "{second:?}");
    let rel2 = site.release_dir(&second.release);
    site.assert_release_is_source(&second.release, WEBAPP_NOT_DEPLOYED);
    assert_trees_equal(
        &release1,
        &snapshot(&rel1),
        "the previous release (hard-linked copy)",
    );
    let ino = |p: PathBuf| meta(&p).ino();
    assert_eq!(
        ino(rel1.join("vendor/autoload.php")),
        ino(rel2.join("vendor/autoload.php")),
        "copy = hardlink shares unchanged files"
    );
    assert_ne!(ino(rel1.join("index.php")), ino(rel2.join("index.php")));
}

/// Ignore rules: .gitignore (in a git checkout), .cutoverignore and `exclude` drop paths,
/// `include` forces a gitignored path back in.
pub fn ignore_rules_and_include_patterns_apply(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure(
        "exclude = [\"*.bak\", \"/tests/\"]\ninclude = [\"public/build/\"]",
        "",
    );
    site.write(".git/HEAD", "ref: refs/heads/main\n");
    site.write(".gitignore", "public/build/\n*.tmp\n");
    site.write(".cutoverignore", "secret.txt\n");
    site.write("index.php", "<?php\n");
    site.write("public/build/app.min.js", "min\n");
    site.write("public/style.css", "css\n");
    site.write("scratch.tmp", "tmp\n");
    site.write("secret.txt", "secret\n");
    site.write("old.php.bak", "bak\n");
    site.write("tests/t.php", "test\n");
    let s = site.deploy();
    site.assert_release_is_source(
        &s.release,
        &[".git", "scratch.tmp", "secret.txt", "old.php.bak", "tests"],
    );
    assert!(site
        .release_dir(&s.release)
        .join("public/build/app.min.js")
        .is_file());
}

/// A source name that is not UTF-8 stops the deploy before anything is written.
pub fn non_utf8_name_is_refused_before_anything_is_sent(kind: TargetKind) {
    use std::os::unix::ffi::OsStrExt;
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(site.src.join(bad), "latin-1 name\n").unwrap();
    let run = site.deploy_with(&[]);
    assert!(
        matches!(run.code, Some(1) | Some(2)),
        "expected a failure\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("caf"),
        "names the file\n{}",
        run.describe()
    );
    assert!(
        run.stderr.to_lowercase().contains("utf-8"),
        "{}",
        run.describe()
    );
    assert!(
        fs::symlink_metadata(&site.path).is_err(),
        "nothing may be written"
    );
    assert_eq!(site.exec_sessions().unwrap_or(0), 0);
}

/// A shell snippet for a hook that says it started, then waits for the test's `go` file.
const WAIT_FOR_GO: &str = "touch \"$CUTOVER_DEPLOY_PATH/hook-started\"; i=0; \
     while [ ! -e \"$CUTOVER_DEPLOY_PATH/go\" ]; do i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done";

/// A second deploy while one is running is refused by the lock (exit 1, naming the holder);
/// the running one is not disturbed.
pub fn concurrent_deploy_is_refused_while_one_runs(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    site.configure(
        &format!("[hooks]\nbefore_swap = [{}]", toml_str(WAIT_FOR_GO)),
        "",
    );
    site.write("index.php", "<?php echo 'A';\n");
    let a = site.spawn(&["deploy"]);
    wait_for(&site.at("hook-started"));
    let staged_by_a = site.staging_leftovers();
    assert_eq!(staged_by_a.len(), 1, "{staged_by_a:?}");

    site.configure("", "");
    let b = site.deploy_with(&[]);
    b.expect_code(1, "a deploy while another one runs");
    assert!(b.stderr.contains("locked"), "{}", b.describe());
    assert!(b.stderr.contains("cutover unlock"), "{}", b.describe());
    assert!(
        b.stderr.contains("(cutover deploy), started "),
        "names the running deploy\n{}",
        b.describe()
    );
    assert!(site.lock_exists(), "B must not remove A's lock");
    assert_eq!(
        site.staging_leftovers(),
        staged_by_a,
        "B must not touch A's staging"
    );

    fs::write(site.at("go"), "").unwrap();
    let a = a.wait();
    a.expect_code(0, "the deploy that held the lock");
    let s = a.summary();
    assert_eq!(s.release, staged_by_a[0]);
    assert!(s.release > first.release);
    assert_eq!(site.current_id(), Some(s.release.clone()));
    assert_eq!(read(&site.at("current/index.php")), "<?php echo 'A';\n");
    site.assert_clean("after the concurrent deploys");
}

/// Ctrl-C (SIGINT) while the script runs on the server does not abandon it: the deploy
/// completes, and the lock is released by the script.
pub fn interrupt_while_the_script_runs_lets_it_finish(kind: TargetKind) {
    signal_while_the_script_runs_lets_it_finish(kind, "INT");
}

/// A signal (`INT`, `TERM`) while the script runs on the server does not abandon it: the client
/// says the script completes on its own, and it does (exit 0, new release live, lock released
/// by the script).
pub fn signal_while_the_script_runs_lets_it_finish(kind: TargetKind, signal: &str) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php\n");
    site.configure(
        &format!("[hooks]\nbefore_swap = [{}]", toml_str(WAIT_FOR_GO)),
        "",
    );
    let running = site.spawn(&["deploy"]);
    wait_for(&site.at("hook-started"));
    running.signal(signal);
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs::write(site.at("go"), "").unwrap();
    let run = running.wait();
    run.expect_code(
        0,
        &format!("deploy signalled (SIG{signal}) once while its script ran"),
    );
    assert!(
        run.stderr.contains("keeps running on the server"),
        "{}",
        run.describe()
    );
    let s = run.summary();
    assert_eq!(site.current_id(), Some(s.release.clone()));
    site.assert_release_is_source(&s.release, &[]);
    site.assert_clean(&format!("after SIG{signal} while the script ran"));
}

/// Staging left by `--emit-script` (never run) must not leak into a later deploy that gets the
/// same release name (same second, or a server clock ahead of ours).
pub fn deploy_after_an_unrun_emitted_script_builds_exactly_the_source(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    // A release from the future (the server's clock is ahead): every new release name is the
    // next second after it, so the emitted deploy and the next one are given the same name.
    site.write("index.php", "<?php // first\n");
    let first = site.deploy().release;
    site.redate(&first, "29990101000000");
    site.write("index.php", "<?php\n");
    site.write("stale.txt", "only in the emitted deploy\n");
    site.symlink("link", "index.php");
    site.deploy_with(&["--emit-script"])
        .expect_code(0, "deploy --emit-script");
    assert_eq!(site.staging_leftovers(), ["29990101000001"]);

    // the user changes their mind: the file and the link go, and they deploy normally
    site.remove("stale.txt");
    site.remove("link");
    site.write("index.php", "<?php echo 'normal';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "a normal deploy after an emitted one");
    let s = run.summary();
    site.assert_release_is_source(&s.release, &[]);
    site.assert_clean("after the normal deploy");
}

/// A manifest on the server with a path that leaves the release is refused: exit 1, the lock is
/// released, nothing changes.
pub fn tampered_manifest_is_refused(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    site.write("keep.txt", "keep\n");
    let first = site.deploy();
    let manifest = site.at(format!(".cutover/manifests/{}", first.release));
    let original = read(&manifest);
    assert!(original.contains("\tkeep.txt\n"), "{original}");
    // a file the `..` path would reach from inside the new release
    write_file(&site.root().join("victim/evil"), b"victim\n", 0o644);
    let keep_line = original
        .lines()
        .find(|l| l.ends_with("\tkeep.txt"))
        .unwrap()
        .to_string();
    // Each case: what the keep.txt line of the manifest is replaced by.
    let cases: Vec<String> = [
        "../../../victim/evil",
        "/nonexistent-cutover-test/evil",
        "a//b",
        "./keep.txt",
        "",
        "a\\x00b",
        "a\0b",
    ]
    .iter()
    .map(|evil| keep_line.replace("\tkeep.txt", &format!("\t{evil}")))
    .chain([
        "this is not a manifest line".to_string(),
        keep_line.replacen('f', "q", 1),
        keep_line.replace("\t644\t", "\t4755\t"),
    ])
    .collect();
    for evil in &cases {
        fs::write(&manifest, original.replace(&keep_line, evil)).unwrap();
        site.write("index.php", format!("<?php // {evil}\n"));
        let before = snapshot(&site.path);
        let run = site.deploy_with(&[]);
        run.expect_code(1, &format!("deploy against a manifest naming {evil:?}"));
        assert!(run.stderr.contains("manifest"), "{}", run.describe());
        assert!(
            run.stderr.contains(&manifest.display().to_string()),
            "names the file\n{}",
            run.describe()
        );
        assert_trees_equal(
            &before,
            &snapshot(&site.path),
            "the deploy path after the refusal",
        );
        assert_eq!(site.current_id(), Some(first.release.clone()));
        assert_eq!(read(&site.root().join("victim/evil")), "victim\n");
    }
    // control: the same edit with a harmless name is accepted (the refusal was about the path)
    fs::write(
        &manifest,
        original.replace("\tkeep.txt\n", "\trenamed.txt\n"),
    )
    .unwrap();
    let s = site.deploy();
    site.assert_release_is_source(&s.release, &[]);
}

/// An emitted script whose previous release is gone when it runs stops before touching
/// anything.
pub fn emitted_script_stops_when_its_previous_release_is_gone(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    site.write("index.php", "<?php echo 2;\n");
    let run = site.deploy_with(&["--emit-script"]);
    run.expect_code(0, "deploy --emit-script");
    let file = site.root().join("deploy.sh");
    fs::write(&file, &run.stdout).unwrap();

    // someone removes the release the script was planned against (and points current elsewhere)
    fs::rename(
        site.release_dir(&first.release),
        site.at("releases/moved-away"),
    )
    .unwrap();
    let before = snapshot(&site.path);
    let out = sh(&file, site.root());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&first.release) && err.contains("gone"),
        "{err}"
    );
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path (nothing touched)",
    );
}

/// `current` that is a real directory (an in-place deploy tool) is refused with advice.
pub fn current_that_is_a_directory_is_refused(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    write_file(&site.at("current/index.html"), b"old site\n", 0o644);
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy over a real current/ directory");
    let current = site.at("current").display().to_string();
    assert!(
        run.stderr.contains(&current),
        "names the path\n{}",
        run.describe()
    );
    assert!(run.stderr.contains("not a symlink"), "{}", run.describe());
    assert!(
        run.stderr.contains("target t"),
        "names the target\n{}",
        run.describe()
    );
    assert_eq!(read(&site.at("current/index.html")), "old site\n");
    assert!(site.releases().is_empty());
    assert!(!site.lock_exists());
    // README "Exit codes": every error message names the target, the stage and the path
    assert!(
        run.stderr.contains("stage"),
        "README: every error names the stage\n{}",
        run.describe()
    );
}

/// No manifest for the live release (made by another tool, or removed): everything is uploaded
/// into an empty new release.
pub fn missing_manifest_means_a_full_upload_into_an_empty_release(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 5);
    let total = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));
    let first = site.deploy();
    fs::remove_file(site.at(format!(".cutover/manifests/{}", first.release))).unwrap();
    write_file(
        &site.release_dir(&first.release).join("made-by-hand.txt"),
        b"x\n",
        0o644,
    );
    let second = site.deploy();
    assert_eq!(
        (second.uploaded, second.unchanged),
        (total, 0),
        "{second:?}"
    );
    site.assert_release_is_source(&second.release, WEBAPP_NOT_DEPLOYED);
    assert!(site
        .release_dir(&first.release)
        .join("made-by-hand.txt")
        .exists());
}

/// A Capistrano-style absolute `current` link is understood (incremental deploy) and replaced
/// by a relative one.
pub fn absolute_current_link_is_understood_and_made_relative(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    write_webapp(&site, 5);
    let first = site.deploy();
    fs::remove_file(site.at("current")).unwrap();
    std::os::unix::fs::symlink(site.release_dir(&first.release), site.at("current")).unwrap();
    site.write("index.php", "<?php echo 2;\n");
    let second = site.deploy();
    assert_eq!(
        second.uploaded, 1,
        "planned against the absolute link's release: {second:?}"
    );
    assert_eq!(
        site.current_link(),
        Some(format!("releases/{}", second.release))
    );
    site.assert_release_is_source(&second.release, WEBAPP_NOT_DEPLOYED);
}

/// A deploy path full of shell syntax works, and nothing in it runs.
pub fn deploy_path_with_shell_syntax_works(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    let dir = site
        .root()
        .join("my app's \"dir\" $(touch CANARY) `touch CANARY`;x");
    site.set_path(dir.clone());
    site.configure("[hooks]\nbefore_swap = [\"touch hook-ran\"]", "");
    write_file(&dir.join("shared/uploads/a.jpg"), b"jpg\n", 0o644);
    write_webapp(&site, 3);
    for i in 0..4 {
        site.write("rev.txt", format!("{i}\n"));
        let s = site.deploy();
        assert_eq!(s.links, 1, "{s:?}");
        let rel = site.release_dir(&s.release);
        assert!(rel.join("hook-ran").exists(), "the hook ran in the release");
        assert_eq!(read(&rel.join("uploads/a.jpg")), "jpg\n");
    }
    assert_eq!(site.releases().len(), 3);
    let canaries: Vec<_> = snapshot(site.root())
        .into_keys()
        .filter(|p| p.file_name().is_some_and(|n| n == "CANARY"))
        .collect();
    assert!(canaries.is_empty(), "{canaries:?}");
    assert!(!Path::new("/CANARY").exists());
}

/// Names in releases/ that are not release names belong to someone else: never pruned.
pub fn foreign_names_in_releases_are_left_alone(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure("keep_releases = 1", "");
    write_file(&site.at("releases/old-site/index.html"), b"old\n", 0o644);
    write_file(&site.at("releases/2026.bak/x"), b"bak\n", 0o644);
    site.write("index.php", "<?php\n");
    let mut last = String::new();
    for i in 0..3 {
        site.write("rev.txt", format!("{i}\n"));
        last = site.deploy().release;
    }
    let mut want = vec![last.clone(), "2026.bak".to_string(), "old-site".to_string()];
    want.sort();
    assert_eq!(site.releases(), want);
    assert_eq!(read(&site.at("releases/old-site/index.html")), "old\n");
    assert_eq!(site.manifests(), [last]);
}

/// A symlink committed to the repository that happens to point into shared/ (as a shared link
/// would) is a repository path: every release has it, as the manifest says.
pub fn repository_symlinks_into_shared_survive_later_deploys(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    site.symlink("uploads", "../../shared/uploads");
    site.symlink("conf/x", "../../../shared/conf/x");
    site.write("conf/app.ini", "a=1\n");
    let first = site.deploy();
    site.assert_release_is_source(&first.release, &[]);

    site.write("index.php", "<?php echo 2;\n");
    let second = site.deploy();
    // index.php; the two repository links shaped like shared links travel again every time
    // (the script removes carried-over shared links before anything else), but they are
    // links to shared/, not content: counted apart, not as uploads.
    assert_eq!((second.uploaded, second.deleted), (1, 0), "{second:?}");
    site.assert_release_is_source(&second.release, &[]);
}

/// Entries of shared/ with names full of shell syntax are linked like any other.
pub fn hostile_shared_names_are_linked(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let shared = site.at("shared");
    let odd = "it's $(touch CANARY) `touch CANARY` ;|&<>";
    write_file(&shared.join(odd).join("-n/f"), b"deep\n", 0o644);
    write_file(&shared.join("-rf"), b"rf\n", 0o644);
    write_file(&shared.join("*"), b"star\n", 0o644);
    write_file(&shared.join("new\nline"), b"nl\n", 0o644);
    write_file(&shared.join("..hidden"), b"dots\n", 0o644);
    site.write(Path::new(odd).join("repo.txt"), "repo\n");
    site.write("index.php", "<?php\n");
    for round in 0..2 {
        site.write("rev.txt", format!("{round}\n"));
        let s = site.deploy();
        let rel = site.release_dir(&s.release);
        assert_eq!((s.links, s.warnings), (5, 0), "{s:?}");
        assert!(meta(&rel.join(odd)).is_dir());
        assert_eq!(read(&rel.join(odd).join("repo.txt")), "repo\n");
        assert_eq!(
            link_target(&rel.join(odd).join("-n")),
            format!("../../../shared/{odd}/-n")
        );
        assert_eq!(read(&rel.join(odd).join("-n/f")), "deep\n");
        assert_eq!(link_target(&rel.join("-rf")), "../../shared/-rf");
        assert_eq!(link_target(&rel.join("*")), "../../shared/*");
        assert_eq!(
            link_target(&rel.join("new\nline")),
            "../../shared/new\nline"
        );
        assert_eq!(link_target(&rel.join("..hidden")), "../../shared/..hidden");
    }
    let canaries: Vec<_> = snapshot(site.root())
        .into_keys()
        .filter(|p| p.file_name().is_some_and(|n| n == "CANARY"))
        .collect();
    assert!(canaries.is_empty(), "{canaries:?}");
}

/// Empty, tiny and large files (across the SFTP write size of 255 KiB) arrive byte-exact.
pub fn large_and_empty_files_are_byte_exact(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("empty", "");
    site.write("one", "1");
    site.write("no-newline.txt", "no newline at the end");
    for (name, len, seed) in [
        ("exact.bin", 255 * 1024, 1),
        ("plus-one.bin", 255 * 1024 + 1, 2),
        ("big.bin", 3 * 1024 * 1024 + 17, 3),
    ] {
        site.write(name, noise(seed, len));
    }
    let first = site.deploy();
    site.assert_release_is_source(&first.release, &[]);
    // change a large file in its middle only
    let mut big = noise(3, 3 * 1024 * 1024 + 17);
    big[1_500_000] ^= 0xff;
    site.write("big.bin", &big);
    site.write("empty", "now with content");
    let second = site.deploy();
    assert_eq!(second.uploaded, 2, "{second:?}");
    site.assert_release_is_source(&second.release, &[]);
}

/// Thousands of changed and deleted paths (many command batches) are applied exactly.
pub fn thousands_of_files_change_and_go(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    let long = "x".repeat(100);
    for i in 0..500 {
        site.write(format!("many/{long}-{i:04}.txt"), format!("{i}\n"));
        if i % 10 == 0 {
            site.write(format!("dirs/d{i:04}-{long}/f.txt"), format!("{i}\n"));
        }
    }
    site.deploy();
    for i in 0..500 {
        if i % 2 == 0 {
            site.write(format!("many/{long}-{i:04}.txt"), format!("{i} v2\n"));
        } else {
            site.remove(format!("many/{long}-{i:04}.txt"));
        }
        if i % 10 == 0 && i % 20 == 0 {
            site.remove(format!("dirs/d{i:04}-{long}"));
        }
    }
    let second = site.deploy();
    assert_eq!((second.uploaded, second.deleted), (250, 275), "{second:?}");
    site.assert_release_is_source(&second.release, &[]);
}

/// When [`interrupt_before_the_script_abandons_cleanly`] sends its SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// As soon as `.cutover/lock` exists.
    LockTaken,
    /// As soon as this deploy's staging directory exists (the upload has begun).
    Upload,
}

/// Ctrl-C after the lock is taken and before the script runs abandons the deploy: staging
/// removed, lock released, current and the live release untouched, nothing run on the server.
pub fn interrupt_before_the_script_abandons_cleanly(kind: TargetKind, moment: Moment) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let before = snapshot(&site.path);
    let execs = site.exec_sessions();
    // a large (sparse) file keeps the upload busy for a while
    let big = fs::File::create(site.src.join("big.bin")).unwrap();
    big.set_len(120 * 1024 * 1024).unwrap();
    drop(big);
    site.write("index.php", "<?php echo 2;\n");

    let running = site.spawn(&["deploy"]);
    // Staging for this deploy appears when the upload starts (whatever its layout: a tree of
    // files or one archive); 120 MiB keep it busy long after that.
    let staging = site.at(".cutover/staging");
    let lock = site.at(".cutover/lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let staged = loop {
        let ready = match moment {
            Moment::LockTaken => lock.exists(),
            Moment::Upload => !list_names(&staging).is_empty(),
        };
        if ready {
            break list_names(&staging).first().map(|id| staging.join(id));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{moment:?} never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    running.signal("INT");
    let run = running.wait();
    // all the facts at once: an interrupt here has been seen to be lost (the deploy went live)
    // or to kill the process (lock and staging left behind)
    let facts = format!(
        "exit {:?} (want Some(1)), lock left: {}, staging left: {:?}, current: {:?} (want {:?})",
        run.code,
        site.lock_exists(),
        site.staging_leftovers(),
        site.current_id(),
        first.release
    );
    assert!(
        run.code == Some(1)
            && !site.lock_exists()
            && site.staging_leftovers().is_empty()
            && site.current_id().as_deref() == Some(first.release.as_str()),
        "SIGINT at {moment:?} must abandon the deploy cleanly: {facts}\n{}",
        run.describe()
    );
    assert!(run.stderr.contains("interrupted"), "{}", run.describe());
    assert!(staged.is_none_or(|d| !d.exists()), "staging removed");
    // The script may have started (its copy of the live release overlaps the upload): it
    // stopped at its wait for the upload and removed what it built.
    let _ = execs;
    assert!(!run.stderr.contains("current -> "), "{}", run.describe());
    assert_eq!(site.current_id(), Some(first.release.clone()));
    site.assert_clean("after an interrupted upload");
    assert_trees_equal(
        &before,
        &snapshot(&site.path),
        "the deploy path after the interrupt",
    );
}

/// A pending lock directory left by a client killed while it prepared the lock is removed by
/// a later deploy once it is a day old; a young one (a deploy starting right now) is left.
pub fn stale_pending_lock_dirs_are_removed(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    site.deploy();
    let old = site.at(".cutover/lock.new-4242-1");
    let young = site.at(".cutover/lock.new-4243-2");
    for dir in [&old, &young] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("info"), "holder=gone\n").unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    site.write("index.php", "<?php echo 2;\n");
    site.deploy();
    assert!(!old.exists(), "a day-old pending lock is removed");
    assert!(
        young.exists(),
        "a young pending lock may be a deploy starting now"
    );
}
