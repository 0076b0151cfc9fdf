//! `cutover verify [--hash]`: is the live release still what was deployed? Each kind of drift a
//! hand on the server can cause is made on a real release and must be reported (exit 1), and a
//! clean release must pass (exit 0), over a real sshd and on the `local` target. `verify`
//! changes nothing.
mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use common::fixtures::both_targets;
use common::site::TargetKind::{Local, Ssh};
use common::site::*;

/// A deployed release with a shared link, and the path to it.
fn deployed(kind: TargetKind) -> Option<(Site, std::path::PathBuf)> {
    let site = Site::new(kind)?;
    write_file(&site.at("shared/uploads/a.jpg"), b"jpg\n", 0o644);
    write_webapp(&site, 4);
    let id = site.deploy().release;
    let rel = site.release_dir(&id);
    Some((site, rel))
}

fn verify(site: &Site, flags: &[&str]) -> Run {
    let mut args = vec!["verify"];
    args.extend_from_slice(flags);
    let before = snapshot(&site.path);
    let run = site.cutover(&args);
    assert_trees_equal(&before, &snapshot(&site.path), "verify changes nothing");
    run
}

fn verify_json(site: &Site, flags: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "verify"];
    args.extend_from_slice(flags);
    let run = site.cutover(&args);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()))
}

/// The drift lists of the single host as (kind, path) pairs.
fn drift(json: &serde_json::Value) -> Vec<(String, String)> {
    let host = &json["hosts"][0];
    let mut out = Vec::new();
    for kind in ["modified", "missing", "extra"] {
        for d in host[kind].as_array().unwrap() {
            out.push((kind.to_string(), d["path"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn a_clean_release_matches_its_manifest(kind: TargetKind) {
    let Some((site, _)) = deployed(kind) else {
        return;
    };
    for flags in [&[][..], &["--hash"][..]] {
        let run = verify(&site, flags);
        run.expect_code(0, "verify a clean release");
        assert!(
            run.stdout.contains("matches its manifest"),
            "{}",
            run.describe()
        );
    }
    let json = verify_json(&site, &["--hash"]);
    assert_eq!(json["clean"], true);
    assert_eq!(json["hash"], true);
    assert!(json["hosts"][0]["checked"].as_u64().unwrap() > 10, "{json}");
}

fn every_kind_of_drift_is_reported(kind: TargetKind) {
    let Some((site, rel)) = deployed(kind) else {
        return;
    };
    // A hand edit that keeps the size: only --hash sees it.
    let css = rel.join("assets/css/app.css");
    let mut bytes = fs::read(&css).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&css, &bytes).unwrap();
    let quiet = verify(&site, &[]);
    quiet.expect_code(0, "a same-size edit is not seen without --hash");
    let run = verify(&site, &["--hash"]);
    run.expect_code(1, "verify --hash after a same-size edit");
    assert!(
        run.stdout.contains("assets/css/app.css"),
        "{}",
        run.describe()
    );

    // An edit that changes the size, a deleted file, an extra file, a changed mode, and the
    // shared link replaced by a real directory.
    fs::write(rel.join("index.php"), "<?php echo 'hacked';\n").unwrap();
    fs::remove_file(rel.join("bin/console")).unwrap();
    fs::write(rel.join("backdoor.php"), "<?php\n").unwrap();
    fs::set_permissions(
        rel.join("vendor/autoload.php"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    fs::remove_file(rel.join("uploads")).unwrap();
    fs::create_dir(rel.join("uploads")).unwrap();
    let run = verify(&site, &[]);
    run.expect_code(1, "verify after drift");
    assert!(run.stdout.contains("has drifted"), "{}", run.describe());
    let found = drift(&verify_json(&site, &["--hash"]));
    for want in [
        ("modified", "assets/css/app.css"),
        ("modified", "index.php"),
        ("missing", "bin/console"),
        ("extra", "backdoor.php"),
        ("modified", "vendor/autoload.php"),
        ("extra", "uploads"),
    ] {
        assert!(
            found.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {found:?}"
        );
    }
    assert_eq!(found.len(), 6, "nothing else: {found:?}");
}

/// A repository symlink that points elsewhere, and one replaced by a file.
fn a_changed_link_is_reported(kind: TargetKind) {
    let Some((site, rel)) = deployed(kind) else {
        return;
    };
    fs::remove_file(rel.join("favicon.ico")).unwrap();
    symlink("/etc/passwd", rel.join("favicon.ico")).unwrap();
    fs::remove_file(rel.join("dangling")).unwrap();
    fs::write(rel.join("dangling"), "now a file\n").unwrap();
    let found = drift(&verify_json(&site, &[]));
    assert!(
        found.contains(&("modified".into(), "favicon.ico".into()))
            && found.contains(&("modified".into(), "dangling".into())),
        "{found:?}"
    );
}

/// `verify_exclude` leaves out what hooks make (a vendor/ tree, a generated file beside
/// deployed ones), and nothing else: other drift is still reported.
fn verify_exclude_leaves_out_what_hooks_make_and_nothing_else(kind: TargetKind) {
    let Some((mut site, rel)) = deployed(kind) else {
        return;
    };
    site.configure("verify_exclude = [\"vendor/\", \"assets/*.map\"]", "");
    write_file(&rel.join("vendor/autoload.php"), b"<?php\n", 0o644);
    write_file(&rel.join("assets/app.js.map"), b"{}\n", 0o644);
    let run = verify(&site, &["--hash"]);
    run.expect_code(0, "verify with only excluded paths added");
    write_file(&rel.join("planted.php"), b"<?php evil();\n", 0o644);
    write_file(&rel.join("assets/notes.txt"), b"not excluded\n", 0o644);
    let json = verify_json(&site, &["--hash"]);
    assert_eq!(json["clean"], false, "{json}");
    let mut found = drift(&json);
    found.sort();
    assert_eq!(
        found,
        [
            ("extra".to_string(), "assets/notes.txt".to_string()),
            ("extra".to_string(), "planted.php".to_string()),
        ],
        "{json}"
    );
}

both_targets!(
    verify_exclude_leaves_out_what_hooks_make_and_nothing_else,
    a_clean_release_matches_its_manifest,
    every_kind_of_drift_is_reported,
    a_changed_link_is_reported,
);
