//! End-to-end deploys to a `host = "local"` target, plus the config and `init` contract.
//! The deploy bodies are shared with tests/deploy_ssh.rs (tests/common/scenarios.rs).
mod common;

use std::fs;

use common::scenarios as s;
use common::site::{run_cutover, toml_str, TargetKind::Local};

#[test]
fn first_deploy_gives_the_exact_layout() {
    s::first_deploy_gives_the_exact_layout(Local);
}

#[test]
fn second_deploy_uploads_only_changed_files() {
    s::second_deploy_uploads_only_changed_files(Local);
}

#[test]
fn full_deploy_uploads_everything_again() {
    s::full_deploy_uploads_everything_again(Local);
}

#[test]
fn runtime_files_are_carried_into_the_next_release() {
    s::runtime_files_are_carried_into_the_next_release(Local);
}

#[test]
fn shared_entries_are_linked_by_the_rule() {
    s::shared_entries_are_linked_by_the_rule(Local);
}

#[test]
fn former_shared_link_now_in_the_repo_never_writes_into_shared() {
    s::former_shared_link_now_in_the_repo_never_writes_into_shared(Local);
}

#[test]
fn three_releases_are_kept_by_default() {
    s::only_keep_releases_releases_are_kept(Local, None);
}

#[test]
fn keep_releases_from_config_is_honoured() {
    s::only_keep_releases_releases_are_kept(Local, Some(2));
}

#[test]
fn emit_script_with_nothing_changed_stages_the_manifest() {
    s::emit_script_with_nothing_changed_stages_the_manifest(Local);
}

#[test]
fn emit_script_is_completed_by_running_it() {
    s::emit_script_is_completed_by_running_it(Local);
}

#[test]
fn dry_run_writes_nothing() {
    s::dry_run_writes_nothing(Local);
}

#[test]
fn failing_before_swap_hook_leaves_current_untouched() {
    s::failing_before_swap_hook_leaves_current_untouched(Local);
}

#[test]
fn failing_after_swap_hook_exits_3_and_stays_live() {
    s::failing_after_swap_hook_exits_3_and_stays_live(Local);
}

#[test]
fn hooks_see_the_release_environment() {
    s::hooks_see_the_release_environment(Local);
}

#[test]
fn held_lock_refuses_and_unlock_clears_it() {
    s::held_lock_refuses_and_unlock_clears_it(Local);
}

#[test]
fn hostile_names_deploy_byte_exact() {
    s::hostile_names_deploy_byte_exact(Local);
}

#[test]
fn type_changes_are_applied() {
    s::type_changes_are_applied(Local);
}

#[test]
fn hardlink_copy_keeps_the_previous_release_intact() {
    s::hardlink_copy_keeps_the_previous_release_intact(Local);
}

#[test]
fn ignore_rules_and_include_patterns_apply() {
    s::ignore_rules_and_include_patterns_apply(Local);
}

#[test]
fn non_utf8_name_is_refused_before_anything_is_sent() {
    s::non_utf8_name_is_refused_before_anything_is_sent(Local);
}

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
fn concurrent_deploy_is_refused_while_one_runs() {
    s::concurrent_deploy_is_refused_while_one_runs(Local);
}

#[test]
fn interrupt_while_the_script_runs_lets_it_finish() {
    s::interrupt_while_the_script_runs_lets_it_finish(Local);
}

#[test]
fn deploy_after_an_unrun_emitted_script_builds_exactly_the_source() {
    s::deploy_after_an_unrun_emitted_script_builds_exactly_the_source(Local);
}

#[test]
fn tampered_manifest_is_refused() {
    s::tampered_manifest_is_refused(Local);
}

#[test]
fn emitted_script_stops_when_its_previous_release_is_gone() {
    s::emitted_script_stops_when_its_previous_release_is_gone(Local);
}

#[test]
fn current_that_is_a_directory_is_refused() {
    s::current_that_is_a_directory_is_refused(Local);
}

#[test]
fn missing_manifest_means_a_full_upload_into_an_empty_release() {
    s::missing_manifest_means_a_full_upload_into_an_empty_release(Local);
}

#[test]
fn absolute_current_link_is_understood_and_made_relative() {
    s::absolute_current_link_is_understood_and_made_relative(Local);
}

#[test]
fn deploy_path_with_shell_syntax_works() {
    s::deploy_path_with_shell_syntax_works(Local);
}

#[test]
fn foreign_names_in_releases_are_left_alone() {
    s::foreign_names_in_releases_are_left_alone(Local);
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

#[test]
fn repository_symlinks_into_shared_survive_later_deploys() {
    s::repository_symlinks_into_shared_survive_later_deploys(Local);
}

#[test]
fn hostile_shared_names_are_linked() {
    s::hostile_shared_names_are_linked(Local);
}

#[test]
fn large_and_empty_files_are_byte_exact() {
    s::large_and_empty_files_are_byte_exact(Local);
}

#[test]
fn thousands_of_files_change_and_go() {
    s::thousands_of_files_change_and_go(Local);
}

#[test]
fn interrupt_during_the_upload_abandons_cleanly() {
    s::interrupt_before_the_script_abandons_cleanly(Local, s::Moment::Upload);
}

#[test]
fn interrupt_right_after_the_lock_is_taken_releases_it() {
    s::interrupt_before_the_script_abandons_cleanly(Local, s::Moment::LockTaken);
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

#[test]
fn stale_pending_lock_dirs_are_removed() {
    s::stale_pending_lock_dirs_are_removed(Local);
}
