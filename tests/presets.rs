//! `cutover init --preset NAME`: each preset, written by `init` as a user gets it, deploys a
//! minimal tree of its framework's layout to a `local` target. The framework's own tools
//! (composer, php, npm, sudo) are stand-ins on PATH that record how they were called, in which
//! directory, and what they saw of the shared paths: so the test checks the preset's hooks run
//! in the new release, in order, with `shared/` already linked in.
mod common;

use std::fs;
use std::path::Path;

use common::site::*;

/// What the real tools leave in the release, made by their stand-ins: `verify` must not count
/// it as drift (each preset's `verify_exclude`).
const MAKES: &str = r#"case "$(basename "$0") $*" in
  "composer install"*) mkdir -p vendor/composer && echo '<?php' > vendor/autoload.php ;;
  "npm ci"*) mkdir -p node_modules/dep && echo x > node_modules/dep/index.js ;;
  "php artisan "*":cache"*) mkdir -p bootstrap/cache && echo '<?php' > "bootstrap/cache/$2.php" ;;
  "php bin/console cache:clear"*) mkdir -p var/cache/prod && echo x > var/cache/prod/container.php ;;
esac
"#;

/// A stand-in for each tool the presets' hooks call: it appends `TOOL ARGS (in DIR)` to the log
/// and leaves in the release what the tool would (see [`MAKES`]).
fn stub_tools(bin: &Path, log: &Path) {
    for tool in ["composer", "php", "npm", "sudo", "wp"] {
        write_file(
            &bin.join(tool),
            format!(
                "#!/bin/sh\nprintf '%s %s (in %s)\\n' {tool} \"$*\" \"$(pwd)\" >> {}\n{MAKES}",
                log.display()
            )
            .as_bytes(),
            0o755,
        );
    }
}

/// `cutover init --preset NAME` in `dir`, then the target pointed at `app` on this machine.
fn init(dir: &Path, preset: &str, app: &Path) -> String {
    let run = run_cutover(
        dir,
        dir,
        &[
            "init".to_string(),
            "--preset".to_string(),
            preset.to_string(),
        ],
    );
    run.expect_code(0, &format!("init --preset {preset}"));
    let file = dir.join("cutover.toml");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("preset: {preset}")), "{text}");
    let local = text
        .replace("host = \"example.com\"", "host = \"local\"")
        .replace("user = \"deploy\"\n", "")
        .replace("port = 22\n", "")
        .replace(
            "path = \"/var/www/app\"",
            &format!("path = {}", toml_str(&app.display().to_string())),
        )
        .replace(
            "path = \"/var/www/wordpress\"",
            &format!("path = {}", toml_str(&app.display().to_string())),
        );
    assert!(local.contains("host = \"local\""), "{local}");
    fs::write(&file, &local).unwrap();
    text
}

/// Deploys `dir` (holding a preset's cutover.toml and a framework tree) with the stand-ins on
/// PATH; returns the release directory and the tools' log.
fn deploy(dir: &Path, app: &Path) -> (std::path::PathBuf, String) {
    let bin = dir.join("stub-bin");
    let log = dir.join("tools.log");
    stub_tools(&bin, &log);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = spawn_cutover_env(dir, dir, &["deploy".to_string()], &[("PATH", &path)]).wait();
    run.expect_code(0, "deploy with the preset");
    // What the hooks made is declared (verify_exclude): the release has not drifted.
    let verify = spawn_cutover_env(dir, dir, &["verify".to_string()], &[]).wait();
    verify.expect_code(0, "verify after a deploy with the preset");
    let current = fs::read_link(app.join("current")).unwrap();
    let release = app.join(current);
    (release, fs::read_to_string(&log).unwrap_or_default())
}

/// The project (source and config) and, beside it, the deploy path.
fn project(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("project");
    fs::create_dir(&root).unwrap();
    (root, dir.join("app"))
}

fn tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        write_file(&dir.join(path), content.as_bytes(), 0o644);
    }
}

fn assert_links_to_shared(release: &Path, path: &str) {
    let link = fs::read_link(release.join(path))
        .unwrap_or_else(|e| panic!("{path} is not a link in the release: {e}"));
    let depth = path.matches('/').count();
    assert_eq!(
        link.display().to_string(),
        format!("{}shared/{path}", "../".repeat(2 + depth)),
        "{path}"
    );
}

#[test]
fn laravel_preset_deploys_a_laravel_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (root, app) = project(dir.path());
    let root = root.as_path();
    let text = init(root, "laravel", &app);
    assert!(text.contains("shared_dirs = [\"storage\"]"), "{text}");
    tree(
        root,
        &[
            ("artisan", "#!/usr/bin/env php\n<?php\n"),
            ("bootstrap/app.php", "<?php\n"),
            ("bootstrap/cache/.gitignore", "*\n!.gitignore\n"),
            ("composer.json", "{}\n"),
            ("app/Http/Kernel.php", "<?php\n"),
            ("public/index.php", "<?php echo 'laravel';\n"),
            ("public/build/app.js", "built\n"),
            ("storage/logs/laravel.log", "local log: never deployed\n"),
            ("node_modules/x/index.js", "no\n"),
            (".gitignore", "/public/build\n/node_modules\n"),
        ],
    );
    write_file(&app.join("shared/.env"), b"APP_KEY=base64:x\n", 0o600);
    let (release, log) = deploy(root, &app);
    assert_links_to_shared(&release, "storage");
    assert_links_to_shared(&release, ".env");
    assert!(
        release.join("public/build/app.js").exists(),
        "include brings the build back"
    );
    assert!(!release.join("node_modules").exists());
    assert!(
        app.join("shared/storage/framework/views").is_dir(),
        "the first hook made Laravel's storage directories in shared/"
    );
    let rel = release.display().to_string();
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(calls.len(), 6, "{log}");
    assert!(calls[0].starts_with("composer install --no-dev"), "{log}");
    for (i, cmd) in [
        "config:cache",
        "route:cache",
        "view:cache",
        "migrate --force",
        "queue:restart",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            calls[i + 1].starts_with(&format!("php artisan {cmd}")),
            "{i}: {log}"
        );
    }
    assert!(
        calls.iter().all(|c| c.ends_with(&format!("(in {rel})"))),
        "{log}"
    );
}

#[test]
fn symfony_preset_deploys_a_symfony_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (root, app) = project(dir.path());
    let root = root.as_path();
    init(root, "symfony", &app);
    tree(
        root,
        &[
            ("bin/console", "#!/usr/bin/env php\n<?php\n"),
            ("composer.json", "{}\n"),
            ("config/services.yaml", "services: {}\n"),
            ("public/index.php", "<?php echo 'symfony';\n"),
            ("src/Kernel.php", "<?php\n"),
            ("var/cache/prod/x", "local cache: never deployed\n"),
            ("public/uploads/local.jpg", "never deployed\n"),
        ],
    );
    write_file(&app.join("shared/.env.local"), b"APP_SECRET=x\n", 0o600);
    let (release, log) = deploy(root, &app);
    for shared in ["var/log", "var/sessions", "public/uploads", ".env.local"] {
        assert_links_to_shared(&release, shared);
    }
    // (the stand-in cache:clear made var/cache/prod/container.php there)
    assert!(
        !release.join("var/cache/prod/x").exists(),
        "var/ is excluded"
    );
    assert!(app.join("shared/var/log").is_dir() && app.join("shared/public/uploads").is_dir());
    assert!(log.contains("composer install --no-dev"), "{log}");
    assert!(log.contains("php bin/console cache:clear"), "{log}");
    assert!(log.contains("doctrine:migrations:migrate"), "{log}");
}

#[test]
fn wordpress_preset_deploys_a_wordpress_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (root, app) = project(dir.path());
    let root = root.as_path();
    init(root, "wordpress", &app);
    tree(
        root,
        &[
            ("index.php", "<?php require 'wp-blog-header.php';\n"),
            ("wp-blog-header.php", "<?php\n"),
            ("wp-config.php", "<?php // local: never deployed\n"),
            ("wp-content/themes/site/style.css", "/* theme */\n"),
            ("wp-content/plugins/p/p.php", "<?php\n"),
            ("wp-content/uploads/2026/01/local.jpg", "never deployed\n"),
            ("wp-content/cache/page.html", "never deployed\n"),
        ],
    );
    write_file(
        &app.join("shared/wp-config.php"),
        b"<?php // server\n",
        0o600,
    );
    write_file(
        &app.join("shared/wp-content/uploads/2025/old.jpg"),
        b"jpg\n",
        0o644,
    );
    let (release, _) = deploy(root, &app);
    assert_links_to_shared(&release, "wp-content/uploads");
    assert_links_to_shared(&release, "wp-config.php");
    assert_eq!(
        fs::read_to_string(release.join("wp-config.php")).unwrap(),
        "<?php // server\n"
    );
    assert!(release.join("wp-content/uploads/2025/old.jpg").exists());
    assert!(!release.join("wp-content/cache").exists());
    assert!(release.join("wp-content/themes/site/style.css").exists());
}

#[test]
fn node_preset_deploys_a_node_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (root, app) = project(dir.path());
    let root = root.as_path();
    init(root, "node", &app);
    tree(
        root,
        &[
            ("package.json", "{\"name\":\"app\"}\n"),
            ("package-lock.json", "{}\n"),
            ("server.js", "console.log('hi')\n"),
            ("dist/app.js", "built\n"),
            ("node_modules/left-pad/index.js", "never deployed\n"),
            (".gitignore", "/dist\n/node_modules\n"),
        ],
    );
    write_file(&app.join("shared/.env"), b"PORT=3000\n", 0o600);
    let (release, log) = deploy(root, &app);
    for shared in ["logs", "uploads", ".env"] {
        assert_links_to_shared(&release, shared);
    }
    assert!(release.join("dist/app.js").exists());
    assert!(!release.join("node_modules/left-pad").exists());
    let calls: Vec<&str> = log.lines().collect();
    assert!(calls[0].starts_with("npm ci --omit=dev"), "{log}");
    assert!(
        calls[1].starts_with("sudo systemctl reload app.service"),
        "{log}"
    );
}

#[test]
fn static_is_the_default_and_unknown_presets_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (root, app) = project(dir.path());
    let root = root.as_path();
    let run = run_cutover(root, root, &["init".to_string()]);
    run.expect_code(0, "init");
    assert!(fs::read_to_string(root.join("cutover.toml"))
        .unwrap()
        .contains("preset: static"));
    fs::remove_file(root.join("cutover.toml")).unwrap();
    init(root, "static", &app);
    fs::write(root.join("index.html"), "<h1>static</h1>\n").unwrap();
    let (release, _) = deploy(root, &app);
    assert!(release.join("index.html").exists());

    let other = tempfile::tempdir().unwrap();
    let run = run_cutover(
        other.path(),
        other.path(),
        &[
            "init".to_string(),
            "--preset".to_string(),
            "rails".to_string(),
        ],
    );
    run.expect_code(2, "an unknown preset");
    for name in ["static", "laravel", "symfony", "wordpress", "node"] {
        assert!(run.stderr.contains(name), "{}", run.describe());
    }
    assert!(!other.path().join("cutover.toml").exists());
}
