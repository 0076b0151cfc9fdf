//! What day two needs, end to end over a real sshd (and locally where that is the point):
//! `--json` results checked field by field against the server's state, release history with the
//! git commit of a real repository, declared shared paths, shell completions and the man page,
//! and colour only where it belongs.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::fixtures::both_targets;
use common::site::TargetKind::{Local, Ssh};
use common::site::*;
use serde_json::Value;

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document on stdout: {e}\n{}", run.describe()))
}

// --- --json -------------------------------------------------------------------------------------

/// `deploy --json` prints one document on stdout (everything else goes to stderr) whose fields
/// are what the server holds: the release `current` points to, the one before, the counts of
/// the plan, and a `hosts` entry; `unchanged` when nothing changed and `failed` when a hook
/// failed (exit 1, still one document).
#[test]
fn deploy_json_matches_the_servers_state() {
    let Some(mut site) = Site::new(Ssh) else {
        return;
    };
    write_webapp(&site, 5);
    let first = json(site.cutover(&["--json", "deploy"]).expect_code(0, "first"));
    assert_eq!(first["status"], "live");
    assert_eq!(first["target"], "t");
    assert_eq!(first["release"].as_str(), site.current_id().as_deref());
    assert_eq!(first["previous"], Value::Null);
    let files = count_uploadable(&source_view(&site.src, WEBAPP_NOT_DEPLOYED));
    assert_eq!(first["uploaded"].as_u64(), Some(files));
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert!(first["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(first["hosts"].as_array().unwrap().len(), 1);

    site.write("index.php", "<?php echo 2;\n");
    site.remove("assets/js/app.js");
    let run = site.cutover(&["--json", "deploy"]);
    run.expect_code(0, "second");
    assert!(
        !run.stdout.contains("cutover:"),
        "only JSON on stdout\n{}",
        run.describe()
    );
    let second = json(&run);
    assert_eq!(second["status"], "live");
    assert_eq!(second["release"].as_str(), site.current_id().as_deref());
    assert_eq!(second["previous"], first["release"]);
    assert_eq!(
        (second["uploaded"].as_u64(), second["deleted"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(second["unchanged"].as_u64(), Some(files - 2));
    let host = &second["hosts"][0];
    assert_eq!(host["status"], "live");
    assert_eq!(host["release"], second["release"]);
    assert!(host["rtt_ms"].as_f64().is_some(), "{host}");

    let unchanged = json(site.cutover(&["--json", "deploy"]).expect_code(0, "no-op"));
    assert_eq!(unchanged["status"], "unchanged");
    assert_eq!(unchanged["release"], second["release"]);

    site.configure("[hooks]\nbefore_swap = [\"exit 7\"]", "");
    site.write("index.php", "<?php echo 3;\n");
    let run = site.cutover(&["--json", "deploy"]);
    run.expect_code(1, "failing hook");
    let failed = json(&run);
    assert_eq!(failed["status"], "failed");
    assert_eq!(site.current_id().as_deref(), second["release"].as_str());
}

/// `releases --json`: every release with its record, the current one marked.
#[test]
fn releases_json_lists_every_release_with_its_record() {
    let Some(site) = Site::new(Local) else { return };
    site.write("index.php", "<?php\n");
    let a = site.deploy().release;
    site.write("index.php", "<?php echo 2;\n");
    let b = site.deploy().release;
    let listing = json(
        site.cutover(&["--json", "releases"])
            .expect_code(0, "releases"),
    );
    assert_eq!(listing["in_sync"], true);
    let releases = listing["releases"].as_array().unwrap();
    let ids: Vec<&str> = releases.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.as_str(), a.as_str()], "newest first");
    assert_eq!(releases[0]["current"], true);
    assert_eq!(releases[1]["current"], false);
    for r in releases {
        assert_eq!(r["files"].as_u64(), Some(1), "{r}");
        assert!(r["deployed_by"].as_str().unwrap().contains('@'), "{r}");
        assert_eq!(r["cutover_version"], env!("CARGO_PKG_VERSION"));
        assert!(r["created_at"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    let check = json(site.cutover(&["--json", "check"]).expect_code(0, "check"));
    assert_eq!(check["ready"], true);
    let verify = json(site.cutover(&["--json", "verify"]).expect_code(0, "verify"));
    assert_eq!(verify["clean"], true);
    let rollback = json(
        site.cutover(&["--json", "rollback"])
            .expect_code(0, "rollback"),
    );
    assert_eq!(rollback["status"], "live");
    assert_eq!(rollback["release"].as_str(), Some(a.as_str()));
    assert_eq!(site.current_id().as_deref(), Some(a.as_str()));
}

// --- release history ---------------------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A release records the commit, branch and cleanliness of the source's git repository, and
/// who deployed it; a deploy from a dirty tree says so.
#[test]
fn releases_record_the_git_commit_and_who_deployed() {
    let Some(site) = Site::new(Ssh) else { return };
    site.write("index.php", "<?php\n");
    git(&site.src, &["init", "-q", "-b", "release-line"]);
    git(&site.src, &["add", "-A"]);
    git(&site.src, &["commit", "-q", "-m", "first"]);
    let head = git(&site.src, &["rev-parse", "HEAD"]);
    let run = site.deploy_with(&[]);
    run.expect_code(0, "clean deploy");
    assert!(!run.stderr.contains("not committed"), "{}", run.describe());

    site.write("index.php", "<?php echo 'uncommitted';\n");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "dirty deploy");
    assert!(
        run.stderr.contains("not committed") && run.stderr.contains(&head[..12]),
        "a deploy from a dirty tree says so\n{}",
        run.describe()
    );
    let listing = json(
        site.cutover(&["--json", "releases"])
            .expect_code(0, "releases"),
    );
    let releases = listing["releases"].as_array().unwrap();
    let (dirty, clean) = (&releases[0]["git"], &releases[1]["git"]);
    for g in [dirty, clean] {
        assert_eq!(g["commit"].as_str(), Some(head.as_str()));
        assert_eq!(g["branch"], "release-line");
    }
    assert_eq!(
        (dirty["dirty"].as_bool(), clean["dirty"].as_bool()),
        (Some(true), Some(false))
    );
    let user = &site.sshd().user;
    assert!(
        releases[0]["deployed_by"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{user}@")),
        "{listing}"
    );
    let text = site.cutover(&["releases"]);
    assert!(
        text.stdout.contains(&head[..12])
            && text.stdout.contains("dirty")
            && text.stdout.contains("release-line"),
        "{}",
        text.describe()
    );
}

// --- declared shared paths ---------------------------------------------------------------------

/// `shared_dirs` and `shared_files`: never deployed from the source, linked as a whole into every
/// release; a missing shared directory is made empty, a missing shared file stops the deploy
/// before anything moves, naming `shared/PATH`.
fn declared_shared_paths_are_linked_and_a_missing_file_stops_the_deploy(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure(
        "shared_dirs = [\"storage\", \"public/uploads\"]\nshared_files = [\".env\"]",
        "",
    );
    site.write("index.php", "<?php\n");
    site.write("storage/logs/local.log", "never deployed\n");
    site.write(".env", "LOCAL=1\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "deploy without shared/.env");
    assert!(
        run.stderr.contains("shared/.env")
            && run.stderr.contains("missing")
            && run.stderr.contains("hint:"),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), None, "nothing went live");
    assert!(site.releases().is_empty());
    site.assert_clean("after the refused deploy");

    write_file(&site.at("shared/.env"), b"SERVER=1\n", 0o600);
    let s = site.deploy();
    let rel = site.release_dir(&s.release);
    for (path, target) in [
        ("storage", "../../shared/storage"),
        ("public/uploads", "../../../shared/public/uploads"),
        (".env", "../../shared/.env"),
    ] {
        assert_eq!(
            fs::read_link(rel.join(path)).unwrap().display().to_string(),
            target,
            "{path}"
        );
    }
    assert!(site.at("shared/storage").is_dir() && site.at("shared/public/uploads").is_dir());
    assert!(
        !site.at("shared/storage/logs/local.log").exists(),
        "the source's storage stays local"
    );
    assert_eq!(fs::read_to_string(rel.join(".env")).unwrap(), "SERVER=1\n");
    // Written at runtime through the link: kept by the next release, and by a rollback.
    fs::write(rel.join("storage/app.log"), "runtime\n").unwrap();
    site.write("index.php", "<?php echo 2;\n");
    let next = site.deploy();
    assert_eq!(
        fs::read_to_string(site.release_dir(&next.release).join("storage/app.log")).unwrap(),
        "runtime\n"
    );
    assert_eq!(next.warnings, 0, "{next:?}");
    site.cutover(&["rollback"]).expect_code(0, "rollback");
    assert_eq!(
        fs::read_to_string(site.at("current/storage/app.log")).unwrap(),
        "runtime\n"
    );
}

both_targets!(declared_shared_paths_are_linked_and_a_missing_file_stops_the_deploy);

// --- shell integration ---------------------------------------------------------------------------

fn cutover_plain(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(common::cutover_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Completions for bash, zsh and fish and the man page come from the command-line definition:
/// every command is in them, and bash accepts its script.
#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cutover_plain(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for cmd in [
            "deploy", "rollback", "releases", "verify", "unlock", "check", "init",
        ] {
            assert!(text.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let bash = cutover_plain(&["completions", "bash"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.bash");
    fs::write(&file, &bash.stdout).unwrap();
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p cutover", file.display()))
        .output()
        .unwrap();
    assert!(sourced.status.success(), "{sourced:?}");

    let man = cutover_plain(&["man"], &[]);
    assert!(man.status.success());
    let roff = String::from_utf8(man.stdout).unwrap();
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH cutover"),
        "{}",
        &roff[..200.min(roff.len())]
    );
    for word in ["deploy", "json", "host", "rollback", "verify"] {
        assert!(roff.contains(word), "the man page names {word}");
    }
    let bad = cutover_plain(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Colour only on a terminal, and never with NO_COLOR: the same error under a pseudo-terminal
/// (util-linux `script`) is red, with NO_COLOR plain, and through a pipe plain.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml").display().to_string();
    let cmd = format!(
        "{} --config {missing} deploy",
        common::cutover_bin().display()
    );
    let on_tty = |no_color: bool| {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\x1b["),
        "red on a terminal: {coloured:?}"
    );
    let plain = on_tty(true);
    assert!(
        plain.contains("error:") && !plain.contains("\x1b["),
        "{plain:?}"
    );
    let piped = cutover_plain(&["--config", &missing, "deploy"], &[]);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("\x1b["));
}

/// `source = "."` (what `cutover init` writes) puts the config file inside the source: it is
/// never deployed (a web root would serve its hosts, users, paths and hooks), also under
/// another name given with --config; every other file is.
#[test]
fn the_config_file_in_the_source_is_never_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("site");
    let app = dir.path().join("app");
    let home = dir.path().join("home");
    fs::create_dir_all(src.join("deploy")).unwrap();
    fs::create_dir_all(&home).unwrap();
    fs::write(src.join("index.html"), "<h1>hi</h1>\n").unwrap();
    let config = |name: &str| {
        let file = src.join(name);
        fs::write(
            &file,
            format!(
                "source = \"{}\"\n[targets.t]\nhost = \"local\"\npath = \"{}\"\n",
                if name.contains('/') { ".." } else { "." },
                app.display()
            ),
        )
        .unwrap();
        file
    };
    for name in ["cutover.toml", "deploy/production.toml"] {
        let file = config(name);
        let run = run_cutover(
            &src,
            &home,
            &[
                "--config".into(),
                file.display().to_string(),
                "deploy".into(),
                "--force".into(),
            ],
        );
        run.expect_code(0, &format!("deploy with the config at {name}"));
        let live = app.join("current");
        assert!(live.join("index.html").is_file());
        assert!(
            !live.join(name).exists(),
            "{name} was deployed: {:?}",
            list_names(&live)
        );
    }
    // The other config, not the one in use, is a file like any other.
    assert!(app.join("current/cutover.toml").is_file());
}

/// A directory of the live release declared shared later (`shared_dirs` added): the new
/// release links to a new, empty `shared/` directory, and the deploy warns that what the
/// application wrote into the old directory stays behind in the old release, saying how to
/// copy it over.
fn a_directory_declared_shared_later_warns_about_what_it_leaves_behind(kind: TargetKind) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.write("index.php", "<?php\n");
    site.write("storage/.gitkeep", "");
    let first = site.deploy();
    write_file(
        &site.release_dir(&first.release).join("storage/app.log"),
        b"written at runtime\n",
        0o644,
    );
    site.configure("shared_dirs = [\"storage\"]", "");
    let run = site.deploy_with(&[]);
    run.expect_code(0, "deploy that declares storage shared");
    let s = run.summary();
    assert_eq!(s.warnings, 1, "{}", run.describe());
    assert!(
        run.stderr
            .contains(&format!("releases/{}/storage holds files", first.release))
            && run.stderr.contains("cp -a"),
        "{}",
        run.describe()
    );
    assert!(site.at("shared/storage").is_dir());
    assert!(site
        .release_dir(&first.release)
        .join("storage/app.log")
        .is_file());
}

both_targets!(a_directory_declared_shared_later_warns_about_what_it_leaves_behind);

/// The application made a directory at runtime in the live release (`current/rtdir/keep`), and
/// the source now has a file `rtdir`: the deploy stops naming the directory in the way and
/// `--full` (it named neither), and `deploy --full` then builds the release from the source.
fn a_runtime_directory_in_the_way_is_named_with_the_way_out(kind: TargetKind) {
    let Some(site) = Site::new(kind) else { return };
    site.write("index.php", "<?php\n");
    let first = site.deploy();
    let runtime = site.release_dir(&first.release).join("rtdir");
    fs::create_dir_all(&runtime).unwrap();
    fs::write(runtime.join("keep"), "made by the app\n").unwrap();
    site.write("rtdir", "now a file in the repository\n");
    let run = site.deploy_with(&[]);
    run.expect_code(1, "a runtime directory where the source has a file");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("rtdir") && l.contains("--full")),
        "{}",
        run.describe()
    );
    assert_eq!(site.current_id(), Some(first.release.clone()));
    let full = site.deploy_with(&["--full"]);
    full.expect_code(0, "deploy --full");
    let id = site.current_id().unwrap();
    site.assert_release_is_source(&id, &[]);
}

both_targets!(a_runtime_directory_in_the_way_is_named_with_the_way_out);
