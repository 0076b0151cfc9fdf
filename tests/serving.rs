//! Serving from `current`: the recipes in examples/serving/, run with real servers.
//!
//! An atomic swap is half of a zero-downtime deploy: the server in front must then serve the new
//! release. Each test loads its recipe files from examples/serving/ (the files the README shows),
//! fills in their `@PLACEHOLDERS@` (free ports, temp dirs), starts the servers from Debian's
//! packages (installed by scripts/test) in the foreground with their own config in a temp dir, on
//! free ports of 127.0.0.1, and deploys with cutover's `host = "local"` target while client threads
//! request the site back to back. Every answer names what served it: PHP its release (from
//! `__DIR__`) and worker pid, Python its release (from the working directory) and worker pid, a
//! static file its version. So a test knows which release answered each request, and when that
//! request started and ended relative to the moment cutover exited.
//!
//! The tests assert behaviour: no request fails; where a recipe promises it, the first request
//! that starts after cutover exits is answered by the new release; without the recipe (or with one
//! of its lines left out), the previous release keeps answering, so each recipe is known to
//! matter. The times they print (`cargo test --test serving -- --nocapture`) are measurements and
//! are never asserted.
//!
//! The client is plain std: one HTTP/1.0 request per connection, so every response ends when the
//! server closes the connection (no chunked bodies to decode) and no library retries a failure.
mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::fixtures::is_root;
use common::site::{Site, TargetKind};

const NGINX: &str = "/usr/sbin/nginx";
/// Debian's FastCGI parameters (nginx-common), which the nginx recipe includes.
const FASTCGI_PARAMS: &str = "/etc/nginx/fastcgi_params";
const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// The opcache reset hook runs curl.
const CURL: &str = "/usr/bin/curl";

/// Deploys made under traffic with a recipe that must serve each new release.
const DEPLOYS: usize = 10;
/// Deploys made with a hook or with PHP settings, after the stale answer was shown.
const FIXED_DEPLOYS: usize = 4;
/// Client threads requesting the site back to back (one per core of a small CI machine).
const CLIENTS: usize = 2;
/// How long a test watches the previous release keep answering once cutover exited.
const WATCH: Duration = Duration::from_secs(3);
/// How long a reloaded app server may take until its new workers answer.
const RELOAD_WAIT: Duration = Duration::from_secs(20);
/// How long a test keeps the traffic going once a reloaded app server answered with the new release.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a server may take to start answering.
const START_WAIT: Duration = Duration::from_secs(15);
/// How long one deploy may take.
const DEPLOY_WAIT: Duration = Duration::from_secs(60);
/// Nice value of the client threads: on a small CI machine the deploys come first.
const TRAFFIC_NICE: i32 = 10;

/// The two versions every site alternates between.
const VERSIONS: [&str; 2] = ["A", "B"];

// --- nginx: static files -------------------------------------------------------------------------

/// nginx-static.conf: nginx looks `current` up on every request, so the first request that starts
/// after cutover exits gets the new release, every time. With `open_file_cache` (which the recipe
/// warns about), nginx keeps answering with the previous release's files.
#[test]
fn nginx_static_serves_the_new_release_on_the_next_request() {
    if !installed(&[NGINX]) {
        return;
    }
    let site = local_site();
    let recipe = recipe("nginx-static.conf");
    let conf = |port: u16| {
        fill(
            "nginx-static.conf",
            &recipe,
            &[
                ("DEPLOY_PATH", &site.path.display().to_string()),
                ("LISTEN", &format!("127.0.0.1:{port}")),
            ],
        )
    };
    let mut version = 0;
    write_static_site(&site, version);
    let mut live = deploy(&site, version);

    // Without: open_file_cache keeps the files nginx opened through `current`.
    let nginx = Nginx::start(&conf, "open_file_cache max=1000;\n");
    let traffic = Traffic::start(nginx.port, "/index.html");
    traffic.warm_up(1);
    version = 1 - version;
    write_static_site(&site, version);
    let deploys = vec![live, deploy(&site, version)];
    thread::sleep(WATCH);
    let samples = traffic.stop();
    drop(nginx);
    let without = Report::new(&samples, &deploys);
    without.print("nginx static, with open_file_cache (what nginx-static.conf warns about)");
    without.assert_no_failures();
    without.assert_traffic_during_deploys();
    without.assert_previous_release_answers_throughout(1);
    live = deploys.into_iter().last().unwrap();

    // The recipe as it is.
    let nginx = Nginx::start(&conf, "");
    let traffic = Traffic::start(nginx.port, "/index.html");
    traffic.warm_up(1);
    let mut deploys = vec![live];
    for _ in 0..DEPLOYS {
        version = 1 - version;
        write_static_site(&site, version);
        let d = deploy(&site, version);
        traffic.wait_for_an_answer_started_after(d.exited);
        deploys.push(d);
    }
    let samples = traffic.stop();
    drop(nginx);
    let report = Report::new(&samples, &deploys);
    report.print("nginx static (nginx-static.conf)");
    report.assert_no_failures();
    report.assert_traffic_during_deploys();
    for i in 1..deploys.len() {
        report.assert_next_request_is_new(i);
    }
}

fn write_static_site(site: &Site, version: usize) {
    write_source(
        site,
        "index.html",
        format!("version {}\n", VERSIONS[version]),
    );
}

// --- nginx + PHP-FPM -----------------------------------------------------------------------------

/// nginx-php-fpm.conf ($realpath_root): PHP-FPM is handed the release's real path, so after each
/// of 10 deploys the first request that starts after cutover exits runs the new release, and no
/// request fails.
#[test]
fn nginx_php_fpm_with_realpath_root_serves_every_new_release_on_the_next_request() {
    let Some(php_fpm) = php_fpm_or_skip(&[NGINX, FASTCGI_PARAMS]) else {
        return;
    };
    let site = local_site();
    let mut version = 0;
    write_php_app(&site, version);
    let mut deploys = vec![deploy(&site, version)];

    let fpm = PhpFpm::start(&php_fpm, "");
    let nginx = Nginx::start(
        &|port| nginx_php_conf(&site, &fpm, port, "$realpath_root"),
        "",
    );
    let traffic = Traffic::start(nginx.port, "/");
    traffic.warm_up(PHP_WORKERS);
    for _ in 0..DEPLOYS {
        version = 1 - version;
        write_php_app(&site, version);
        let d = deploy(&site, version);
        traffic.wait_for_an_answer_started_after(d.exited);
        deploys.push(d);
    }
    let samples = traffic.stop();
    drop(nginx);
    drop(fpm);

    let report = Report::new(&samples, &deploys);
    report.print("nginx + PHP-FPM, $realpath_root (nginx-php-fpm.conf)");
    report.assert_no_failures();
    report.assert_traffic_during_deploys();
    for i in 1..deploys.len() {
        report.assert_next_request_is_new(i);
    }
}

/// The usual `$document_root` (nginx-php-fpm.conf with `$document_root` in place of
/// `$realpath_root`): after a deploy, PHP keeps answering with the previous release for as long
/// as the test watches. Then the after_swap hook of opcache-reset.php, as the file gives it: from
/// the next deploy on, the first request that starts after cutover exits runs the new release.
#[test]
fn nginx_php_fpm_with_document_root_serves_the_previous_release_until_the_opcache_reset_hook() {
    let Some(php_fpm) = php_fpm_or_skip(&[NGINX, FASTCGI_PARAMS, CURL]) else {
        return;
    };
    let mut site = local_site();
    stale_until_the_opcache_reset_hook(&mut site, &php_fpm, Front::Nginx);
}

// --- Apache + PHP-FPM ----------------------------------------------------------------------------

/// apache-php-fpm.conf: Apache hands PHP-FPM the path through `current`, so PHP keeps answering
/// with the previous release; with the recipe's after_swap hook (opcache-reset.php), the first
/// request that starts after cutover exits runs the new release.
#[test]
fn apache_php_fpm_serves_the_previous_release_until_the_opcache_reset_hook() {
    let modules = Path::new(APACHE_MODULES);
    let Some(php_fpm) = php_fpm_or_skip(&[
        APACHE,
        &modules.join("mod_proxy_fcgi.so").display().to_string(),
        CURL,
    ]) else {
        return;
    };
    let mut site = local_site();
    // Apache started as root serves from its children, which run as www-data (Apache refuses to
    // serve as root): they must be able to enter the site's temp dir.
    fs::set_permissions(site.root(), fs::Permissions::from_mode(0o755)).unwrap();
    stale_until_the_opcache_reset_hook(&mut site, &php_fpm, Front::Apache);
}

/// What is in front of PHP-FPM in the opcache reset tests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Front {
    /// nginx-php-fpm.conf with `$document_root` in place of `$realpath_root`.
    Nginx,
    /// apache-php-fpm.conf as it is.
    Apache,
}

fn stale_until_the_opcache_reset_hook(site: &mut Site, php_fpm: &Path, front: Front) {
    let (label, recipe_file) = match front {
        Front::Nginx => ("nginx + PHP-FPM, $document_root", "nginx-php-fpm.conf"),
        Front::Apache => ("Apache + PHP-FPM", "apache-php-fpm.conf"),
    };
    let mut version = 0;
    write_php_app(site, version);
    let mut deploys = vec![deploy(site, version)];

    let fpm = PhpFpm::start(php_fpm, "");
    let server = match front {
        Front::Nginx => Nginx::start(
            &|port| nginx_php_conf(site, &fpm, port, "$document_root"),
            "",
        ),
        Front::Apache => Apache::start(site, &fpm),
    };
    let traffic = Traffic::start(server.port, "/");
    traffic.warm_up(PHP_WORKERS);

    // Without the hook. Meanwhile, opcache-reset.php refuses what is not a POST of the secret (no
    // secret is set up yet): the previous release answering throughout shows it reset nothing.
    version = 1 - version;
    write_php_app(site, version);
    deploys.push(deploy(site, version));
    for (method, refused) in [("GET", 405), ("POST", 403)] {
        let status = http(server.port, method, "/opcache-reset.php").map(|(status, _)| status);
        assert_eq!(
            status,
            Ok(refused),
            "{method} /opcache-reset.php without the secret"
        );
    }
    thread::sleep(WATCH);

    // With the hook, as opcache-reset.php gives it (and, for Apache, the recipe repeats it).
    let hook = opcache_reset_hook();
    if front == Front::Apache {
        assert_eq!(
            hooks(&recipe("apache-php-fpm.conf")),
            vec![hook.clone()],
            "apache-php-fpm.conf gives the hook of opcache-reset.php"
        );
    }
    fs::write(
        site.path.join("opcache-reset.secret"),
        "c3VwZXIgc2VjcmV0IGZvciB0aGUgdGVzdA==\n",
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}", server.port);
    set_hook(
        site,
        &fill("the opcache reset hook", &hook, &[("URL", &url)]),
    );
    for _ in 0..FIXED_DEPLOYS {
        version = 1 - version;
        write_php_app(site, version);
        let d = deploy(site, version);
        traffic.wait_for_an_answer_started_after(d.exited);
        deploys.push(d);
    }
    let samples = traffic.stop();
    drop(server);
    drop(fpm);

    let report = Report::new(&samples, &deploys);
    report.print(&format!(
        "{label} ({recipe_file}): deploy 1 without a hook, deploys 2-{} with opcache-reset.php's hook",
        deploys.len() - 1
    ));
    report.assert_no_failures();
    report.assert_traffic_during_deploys();
    report.assert_previous_release_answers_throughout(1);
    for i in 2..deploys.len() {
        report.assert_next_request_is_new(i);
    }
}

/// The hook line of opcache-reset.php (with its `@URL@`).
fn opcache_reset_hook() -> String {
    let lines = hooks(&recipe("opcache-reset.php"));
    assert_eq!(
        lines.len(),
        1,
        "opcache-reset.php gives one hook: {lines:?}"
    );
    lines.into_iter().next().unwrap()
}

// --- PHP settings ------------------------------------------------------------------------------

/// php-fpm-pool.conf behind nginx's `$document_root`: with both of its settings, the first request
/// that starts after cutover exits runs the new release; with either line left out, the previous
/// release keeps answering.
#[test]
fn php_fpm_pool_settings_serve_the_new_release_through_document_root() {
    let Some(php_fpm) = php_fpm_or_skip(&[NGINX, FASTCGI_PARAMS]) else {
        return;
    };
    let pool = recipe("php-fpm-pool.conf");
    let without = |setting: &str| {
        let kept: Vec<&str> = pool
            .lines()
            .filter(|l| l.starts_with(';') || !l.contains(setting))
            .collect();
        assert_eq!(
            kept.len() + 1,
            pool.lines().count(),
            "php-fpm-pool.conf sets {setting} on one line"
        );
        kept.join("\n")
    };
    let site = local_site();
    let mut version = 0;
    write_php_app(&site, version);
    let mut live = deploy(&site, version);

    let variants = [
        (
            "php-fpm-pool.conf without opcache.revalidate_path",
            without("opcache.revalidate_path"),
            false,
        ),
        (
            "php-fpm-pool.conf without realpath_cache_size",
            without("realpath_cache_size"),
            false,
        ),
        ("php-fpm-pool.conf", pool.clone(), true),
    ];
    for (label, settings, serves_the_new_release) in variants {
        let fpm = PhpFpm::start(&php_fpm, &settings);
        let nginx = Nginx::start(
            &|port| nginx_php_conf(&site, &fpm, port, "$document_root"),
            "",
        );
        let traffic = Traffic::start(nginx.port, "/");
        traffic.warm_up(PHP_WORKERS);
        let mut deploys = vec![live];
        let count = if serves_the_new_release {
            FIXED_DEPLOYS
        } else {
            1
        };
        for _ in 0..count {
            version = 1 - version;
            write_php_app(&site, version);
            let d = deploy(&site, version);
            traffic.wait_for_an_answer_started_after(d.exited);
            deploys.push(d);
        }
        if !serves_the_new_release {
            thread::sleep(WATCH);
        }
        let samples = traffic.stop();
        drop(nginx);
        drop(fpm);

        let report = Report::new(&samples, &deploys);
        report.print(&format!("nginx + PHP-FPM, $document_root, {label}"));
        report.assert_no_failures();
        report.assert_traffic_during_deploys();
        for i in 1..deploys.len() {
            if serves_the_new_release {
                report.assert_next_request_is_new(i);
            } else {
                report.assert_previous_release_answers_throughout(i);
            }
        }
        live = deploys.into_iter().last().unwrap();
    }
}

/// A small PHP application: the web root is public/, the code it includes is outside it. An answer
/// names the release that ran it (`__DIR__` is the script's real directory) and the worker.
fn write_php_app(site: &Site, version: usize) {
    write_source(
        site,
        "public/index.php",
        "<?php\nrequire __DIR__ . '/../src/version.php';\n\
         echo 'version ', VERSION, ' release ', basename(dirname(__DIR__)), ' pid ', getmypid(), \"\\n\";\n",
    );
    write_source(
        site,
        "src/version.php",
        format!("<?php\nconst VERSION = '{}';\n", VERSIONS[version]),
    );
    // deployed in every release, as the recipe says
    write_source(
        site,
        "public/opcache-reset.php",
        recipe("opcache-reset.php"),
    );
}

/// nginx-php-fpm.conf for this site, with `root_variable` in place of `$realpath_root` in its
/// directives (not in its comments).
fn nginx_php_conf(site: &Site, fpm: &PhpFpm, port: u16, root_variable: &str) -> String {
    let text = recipe("nginx-php-fpm.conf");
    let mut replaced = 0;
    let conf: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with('#') || !line.contains("$realpath_root") {
                return line.to_string();
            }
            replaced += 1;
            line.replace("$realpath_root", root_variable)
        })
        .collect();
    assert_eq!(
        replaced, 2,
        "nginx-php-fpm.conf passes SCRIPT_FILENAME and DOCUMENT_ROOT from $realpath_root"
    );
    fill(
        "nginx-php-fpm.conf",
        &conf.join("\n"),
        &[
            ("DEPLOY_PATH", &site.path.display().to_string()),
            ("LISTEN", &format!("127.0.0.1:{port}")),
            ("PHP_FPM_SOCKET", &fpm.socket.display().to_string()),
        ],
    )
}

// --- gunicorn ------------------------------------------------------------------------------------

/// gunicorn.service: gunicorn started by the unit's ExecStart (as it is: systemd itself is not
/// part of the test) and reloaded by the recipe's `kill -HUP` after_swap hook. No request fails
/// across 10 deploys; the new release answers once the hook has run, and once it has, the
/// previous release answers no request that starts later. Before that, the same ExecStart without
/// `--chdir`, started in `current`: its reload imports the previous release again.
#[test]
fn gunicorn_reloaded_by_the_after_swap_hook_serves_the_new_release() {
    let unit = recipe("gunicorn.service");
    let exec_start: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("gunicorn.service has an ExecStart= line")
        .split_whitespace()
        .map(String::from)
        .collect();
    if !installed(&[&exec_start[0]]) {
        return;
    }
    let mut site = local_site();
    let run_dir = tempfile::Builder::new()
        .prefix("cutover-gunicorn-")
        .tempdir()
        .unwrap();
    let hook = hooks(&unit)
        .into_iter()
        .find(|h| h.contains("kill -HUP"))
        .expect("gunicorn.service gives a kill -HUP hook");
    let (deploy_path, run_path) = (
        site.path.display().to_string(),
        run_dir.path().display().to_string(),
    );
    let values = |port: u16| {
        vec![
            ("DEPLOY_PATH", deploy_path.clone()),
            ("PORT", port.to_string()),
            ("RUN_DIR", run_path.clone()),
        ]
    };
    let mut version = 0;
    write_wsgi_app(&site, version);
    let mut live = deploy(&site, version);
    // from now on gunicorn runs (on the first deploy, there is none to reload)
    set_hook(
        &mut site,
        &fill("the gunicorn hook", &hook, &[("RUN_DIR", &run_path)]),
    );

    // Without --chdir, started in `current` (so in the release it points to), with no $PWD naming
    // the path through `current`: the reload imports that release again.
    let mut args = exec_start.clone();
    let at = args
        .iter()
        .position(|a| a == "--chdir")
        .expect("ExecStart passes --chdir");
    args.drain(at..at + 2);
    let gunicorn = Gunicorn::start(&args, &values, &site.path.join("current"));
    let traffic = Traffic::start(gunicorn.port, "/");
    traffic.warm_up(1);
    let pids_before: BTreeSet<u32> = traffic.pids();
    version = 1 - version;
    write_wsgi_app(&site, version);
    let d = deploy(&site, version);
    let reloaded =
        |s: &Sample| matches!(&s.answer, Ok(a) if a.pid.is_some_and(|p| !pids_before.contains(&p)));
    assert!(
        traffic.wait_for(RELOAD_WAIT, reloaded).is_some(),
        "no answer from a new gunicorn worker within {RELOAD_WAIT:?} of the hook"
    );
    thread::sleep(SETTLE);
    let samples = traffic.stop();
    drop(gunicorn);
    let deploys = vec![live, d];
    let report = Report::new(&samples, &deploys);
    report.print("gunicorn without --chdir, started in current, HUP from the hook");
    report.assert_no_failures();
    report.assert_traffic_during_deploys();
    let from_new_workers: Vec<&Sample> = samples.iter().filter(|s| reloaded(s)).collect();
    let fresh: Vec<&&Sample> = from_new_workers
        .iter()
        .filter(|s| !matches!(&s.answer, Ok(a) if is_from(a, &deploys[0])))
        .collect();
    assert!(
        fresh.is_empty(),
        "without --chdir, the reloaded workers should run the release gunicorn started in ({}); \
         {} of their {} answers did not, e.g. {:?}",
        deploys[0].release,
        fresh.len(),
        from_new_workers.len(),
        fresh[0].answer
    );
    eprintln!(
        "  the reloaded workers answered {} requests, all from release {} (the one gunicorn started in)",
        from_new_workers.len(),
        deploys[0].release
    );
    live = deploys.into_iter().last().unwrap();

    // The recipe: ExecStart as it is.
    let gunicorn = Gunicorn::start(&exec_start, &values, Path::new("/"));
    let traffic = Traffic::start(gunicorn.port, "/");
    traffic.warm_up(1);
    let mut deploys = vec![live];
    for n in 1..=DEPLOYS {
        version = 1 - version;
        write_wsgi_app(&site, version);
        let d = deploy(&site, version);
        let release = d.release.clone();
        let fresh = traffic.wait_for(RELOAD_WAIT, |s| {
            s.start >= d.exited
                && matches!(&s.answer, Ok(a) if a.release.as_deref() == Some(release.as_str()))
        });
        assert!(
            fresh.is_some(),
            "deploy {n}: release {release} did not answer within {RELOAD_WAIT:?} of the hook"
        );
        // The workers that answered with an older release after the hook must exit (gunicorn
        // stops them once their request is done).
        thread::sleep(SETTLE);
        let old_workers: BTreeSet<u32> = traffic
            .samples_since(d.exited)
            .iter()
            .filter_map(|s| s.answer.as_ref().ok())
            .filter(|a| a.release.as_deref() != Some(release.as_str()))
            .filter_map(|a| a.pid)
            .collect();
        let deadline = Instant::now() + RELOAD_WAIT;
        while old_workers.iter().any(|pid| process_exists(*pid)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let running: Vec<&u32> = old_workers.iter().filter(|p| process_exists(**p)).collect();
        assert!(
            running.is_empty(),
            "deploy {n}: workers {running:?} of an older release still run {RELOAD_WAIT:?} after the reload"
        );
        deploys.push(d);
    }
    let samples = traffic.stop();
    drop(gunicorn);
    let report = Report::new(&samples, &deploys);
    report.print("gunicorn (gunicorn.service), HUP from the after_swap hook");
    report.assert_no_failures();
    report.assert_traffic_during_deploys();
    for i in 1..deploys.len() {
        report.assert_new_release_took_over(i);
    }
}

/// A WSGI application whose answers name the release (the worker's working directory, where
/// gunicorn's --chdir left it) and the worker.
fn write_wsgi_app(site: &Site, version: usize) {
    // The versions differ in length, not only in content: Python reuses a module's cached
    // __pycache__/*.pyc (written at runtime into the release, and carried into the next release by
    // cutover's copy) when the source's size and modification second are the same, and the test
    // writes both versions within seconds.
    let padding = " # the other version".repeat(version);
    write_source(
        site,
        "app.py",
        format!(
            "import os\n\nVERSION = \"{}\"{padding}\n\n\n\
             def application(environ, start_response):\n    \
             body = \"version %s release %s pid %d\\n\" % (VERSION, os.path.basename(os.getcwd()), os.getpid())\n    \
             data = body.encode()\n    \
             start_response(\"200 OK\", [(\"Content-Type\", \"text/plain\"), (\"Content-Length\", str(len(data)))])\n    \
             return [data]\n",
            VERSIONS[version]
        ),
    );
}

// --- cutover check -------------------------------------------------------------------------------

/// `cutover check` notes PHP files in the live release (a `!` line pointing at the README's
/// recipes, exit 0), and says nothing of the kind for a release without PHP files.
#[test]
fn check_notes_php_files_in_the_live_release() {
    let site = local_site();
    write_static_site(&site, 0);
    site.deploy();
    let run = site.cutover(&["check"]);
    run.expect_code(0, "check of a static site");
    assert!(
        !run.stdout.contains("serving:"),
        "no note without PHP files\n{}",
        run.describe()
    );

    write_php_app(&site, 0);
    let release = site.deploy().release;
    let run = site.cutover(&["check"]);
    run.expect_code(0, "check of a PHP site: a note is no failure");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("! serving: "))
        .unwrap_or_else(|| panic!("a `! serving:` note\n{}", run.describe()));
    assert!(
        lines[at].contains(&format!(
            "{release} holds 3 PHP files (public/index.php, ...)"
        )),
        "{}",
        run.describe()
    );
    let fix = lines.get(at + 1).copied().unwrap_or_default();
    assert!(
        fix.starts_with("  fix: ")
            && fix.contains("Serving from `current`")
            && fix.contains("$realpath_root"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("1 note"), "{}", run.describe());

    let run = site.cutover(&["check", "--json"]);
    run.expect_code(0, "check --json");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["ready"], true);
    let note = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "serving")
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(note["status"], "warn");
}

// --- the README -----------------------------------------------------------------------------------

/// The README's "Serving from `current`" shows the recipes as tested: each config file's directives
/// (its text without comments) and every hook line the recipes give.
#[test]
fn readme_shows_the_recipes_as_tested() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for name in [
        "nginx-static.conf",
        "nginx-php-fpm.conf",
        "apache-php-fpm.conf",
        "php-fpm-pool.conf",
        "gunicorn.service",
    ] {
        let text = recipe(name);
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !is_comment(l))
            .skip_while(|l| l.trim().is_empty())
            .collect();
        let body = body.join("\n");
        assert!(
            readme.contains(body.trim_end()),
            "README.md does not show {name} as it is:\n{body}"
        );
        assert!(
            readme.contains(&format!("examples/serving/{name}")),
            "README.md names {name}"
        );
    }
    for name in [
        "opcache-reset.php",
        "gunicorn.service",
        "apache-php-fpm.conf",
    ] {
        for hook in hooks(&recipe(name)) {
            assert!(
                readme.contains(&hook),
                "README.md shows the hook of {name}: {hook}"
            );
        }
    }
}

// --- recipes -------------------------------------------------------------------------------------

/// examples/serving/NAME, as the README shows it.
fn recipe(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/serving")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `text` with each `@NAME@` of `values` replaced in its lines that are not comments (comments
/// name the placeholders, for the reader). Every value must be used and no placeholder may be left,
/// so a recipe and its test cannot drift apart.
fn fill(what: &str, text: &str, values: &[(&str, &str)]) -> String {
    let mut unused: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
    let mut left = Vec::new();
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if is_comment(line) {
                return line.to_string();
            }
            let mut line = line.to_string();
            for (name, value) in values {
                let placeholder = format!("@{name}@");
                if line.contains(&placeholder) {
                    unused.retain(|n| n != name);
                    line = line.replace(&placeholder, value);
                }
            }
            left.extend(placeholders(&line));
            line
        })
        .collect();
    assert!(unused.is_empty(), "{what} uses no {unused:?}:\n{text}");
    assert!(left.is_empty(), "{what}: {left:?} not filled in:\n{text}");
    lines.join("\n") + "\n"
}

/// A comment line of a recipe (shell/nginx/Apache/systemd `#`, ini `;`, PHP `//`).
fn is_comment(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('#') || line.starts_with(';') || line.starts_with("//")
}

/// The `@NAME@` placeholders (upper case and `_`) in `text`.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('@') {
            found.push(format!("@{}@", &after[..name_len]));
            rest = &after[name_len + 1..];
        } else {
            rest = after;
        }
    }
    found
}

/// The `after_swap = [...]` lines a recipe gives in its comments, without the comment marks.
fn hooks(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start_matches(['#', '/', ';', ' ']))
        .filter(|l| l.starts_with("after_swap = ["))
        .map(String::from)
        .collect()
}

// --- the site and its deploys --------------------------------------------------------------------

fn local_site() -> Site {
    Site::new(TargetKind::Local).expect("a local site needs no sshd")
}

/// Writes a source file dated an hour ago, as a checkout's files are by the time they are
/// deployed (cutover keeps the modification time). It matters: opcache does not cache a script
/// modified in the last `opcache.file_update_protection` seconds (2), so files written just before
/// a deploy would hide what opcache does to the path through `current`.
fn write_source(site: &Site, rel: &str, content: impl AsRef<[u8]>) {
    site.write(rel, content);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(site.src.join(rel))
        .and_then(|f| f.set_modified(an_hour_ago))
        .unwrap_or_else(|e| panic!("dating {rel}: {e}"));
}

/// Writes the site's config with `[hooks]` holding `line` (an `after_swap = [...]` line).
fn set_hook(site: &mut Site, line: &str) {
    site.configure(&format!("[hooks]\n{line}\n"), "");
}

/// One deploy: the release it made live, its version, when cutover started and when it exited.
#[derive(Debug)]
struct Deployed {
    release: String,
    version: &'static str,
    started: Instant,
    exited: Instant,
}

/// `cutover deploy` of the source as it is (version `version`), which must succeed. The exit is
/// seen by polling every millisecond, so `exited` is at most about a millisecond late.
fn deploy(site: &Site, version: usize) -> Deployed {
    let started = Instant::now();
    let mut running = site.spawn(&["deploy"]);
    let deadline = started + DEPLOY_WAIT;
    let exited = loop {
        if running.child.try_wait().unwrap().is_some() {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "cutover deploy did not finish within {DEPLOY_WAIT:?}"
        );
        thread::sleep(Duration::from_millis(1));
    };
    let run = running.wait();
    run.expect_code(0, "deploy");
    Deployed {
        release: run.summary().release,
        version: VERSIONS[version],
        started,
        exited,
    }
}

// --- answers, traffic and what it shows ------------------------------------------------------------

/// What a response said: `version X` and, where the server can tell, `release ID` and `pid N`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    version: String,
    release: Option<String>,
    pid: Option<u32>,
}

impl Answer {
    fn parse(body: &str) -> Option<Answer> {
        let words: Vec<&str> = body.split_whitespace().collect();
        let field = |name: &str| {
            words
                .windows(2)
                .find(|w| w[0] == name)
                .map(|w| w[1].to_string())
        };
        Some(Answer {
            version: field("version")?,
            release: field("release"),
            pid: field("pid").and_then(|p| p.parse().ok()),
        })
    }
}

/// True when `answer` came from the release `deploy` made live.
fn is_from(answer: &Answer, deploy: &Deployed) -> bool {
    match &answer.release {
        Some(release) => *release == deploy.release,
        None => answer.version == deploy.version,
    }
}

/// One request: when it started and ended, and what came back (or why nothing usable did).
#[derive(Debug, Clone)]
struct Sample {
    start: Instant,
    end: Instant,
    answer: Result<Answer, String>,
}

/// Client threads requesting one path back to back, each request on a new connection.
struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, samples) = (stop.clone(), samples.clone());
                thread::spawn(move || {
                    // SAFETY: setpriority on this thread (Linux: a thread id is a PRIO_PROCESS id).
                    unsafe {
                        libc::setpriority(
                            libc::PRIO_PROCESS,
                            libc::gettid() as libc::id_t,
                            TRAFFIC_NICE,
                        )
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let answer = match http(port, "GET", path) {
                            Ok((200, body)) => Answer::parse(&body)
                                .ok_or_else(|| format!("200 but no `version` in {body:?}")),
                            Ok((status, body)) => Err(format!("status {status}: {body:?}")),
                            Err(e) => Err(e),
                        };
                        let end = Instant::now();
                        samples.lock().unwrap().push(Sample { start, end, answer });
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            samples,
            threads,
        }
    }

    /// Waits (at most START_WAIT) for answers from `workers` different pids (servers that do not
    /// tell their pid: for any answer): a worker that has served a request before a deploy has
    /// whatever it caches about `current` filled.
    fn warm_up(&self, workers: usize) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let (answered, pids) = {
                let samples = self.samples.lock().unwrap();
                let answered = samples.iter().any(|s| s.answer.is_ok());
                let pids: BTreeSet<u32> = samples
                    .iter()
                    .filter_map(|s| s.answer.as_ref().ok()?.pid)
                    .collect();
                (answered, pids.len())
            };
            if answered && (pids == 0 || pids >= workers) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "warming up: answers from {pids} of {workers} workers within {START_WAIT:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The worker pids that answered so far.
    fn pids(&self) -> BTreeSet<u32> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.answer.as_ref().ok()?.pid)
            .collect()
    }

    /// The first finished request (by end) that satisfies `want`, waiting up to `timeout`.
    fn wait_for(&self, timeout: Duration, want: impl Fn(&Sample) -> bool) -> Option<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .samples
                .lock()
                .unwrap()
                .iter()
                .filter(|s| want(s))
                .min_by_key(|s| s.end)
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until a request that started at or after `t` has finished (whatever it got).
    fn wait_for_an_answer_started_after(&self, t: Instant) {
        assert!(
            self.wait_for(START_WAIT, |s| s.start >= t).is_some(),
            "no request started after cutover exited finished within {START_WAIT:?}"
        );
    }

    /// The requests that started at or after `t` and have finished.
    fn samples_since(&self, t: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.start >= t)
            .cloned()
            .collect()
    }

    /// Stops the clients; every request, in the order they started.
    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a client thread panicked");
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|s| s.start);
        samples
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        // a test that fails half-way does not leave clients running
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The requests of one test against its deploys: `deploys[0]` was live when the traffic started;
/// for every later deploy `i`, its window holds the requests that started after it exited and
/// before the next deploy started.
struct Report<'a> {
    samples: &'a [Sample],
    deploys: &'a [Deployed],
    failures: Vec<String>,
}

impl<'a> Report<'a> {
    fn new(samples: &'a [Sample], deploys: &'a [Deployed]) -> Report<'a> {
        let t0 = samples.first().map(|s| s.start);
        let at = |t: Instant| match t0 {
            Some(t0) => format!("+{:.3} s", t.saturating_duration_since(t0).as_secs_f64()),
            None => String::new(),
        };
        let versions: HashMap<&str, &str> = deploys
            .iter()
            .map(|d| (d.release.as_str(), d.version))
            .collect();
        let mut failures = Vec::new();
        for s in samples {
            match &s.answer {
                Err(e) => failures.push(format!("request at {}: {e}", at(s.start))),
                // an answer must be one release's, whole: its code and the code it includes
                Ok(a) => {
                    if let Some(release) = &a.release {
                        match versions.get(release.as_str()) {
                            Some(v) if *v == a.version => {}
                            Some(v) => failures.push(format!(
                                "request at {}: release {release} is version {v}, but answered {a:?}",
                                at(s.start)
                            )),
                            None => failures.push(format!(
                                "request at {}: answered by release {release}, which no deploy of this test made live: {a:?}",
                                at(s.start)
                            )),
                        }
                    }
                }
            }
        }
        Report {
            samples,
            deploys,
            failures,
        }
    }

    /// The requests of deploy `i`'s window, in the order they started.
    fn window(&self, i: usize) -> Vec<&'a Sample> {
        let from = self.deploys[i].exited;
        let until = self.deploys.get(i + 1).map(|d| d.started);
        self.samples
            .iter()
            .filter(|s| s.start >= from && until.is_none_or(|u| s.start < u))
            .collect()
    }

    /// The first answer from deploy `i`'s release in its window (by when it ended).
    fn first_new(&self, i: usize) -> Option<&'a Sample> {
        self.window(i)
            .into_iter()
            .filter(|s| matches!(&s.answer, Ok(a) if is_from(a, &self.deploys[i])))
            .min_by_key(|s| s.end)
    }

    fn stale(&self, i: usize) -> usize {
        self.window(i)
            .iter()
            .filter(|s| matches!(&s.answer, Ok(a) if !is_from(a, &self.deploys[i])))
            .count()
    }

    fn print(&self, label: &str) {
        let deploys = self.deploys.len() - 1;
        let mut lines = vec![format!(
            "serving: {label}: {} requests, {} failed, {deploys} deploys",
            self.samples.len(),
            self.failures.len()
        )];
        let mut to_new = Vec::new();
        for i in 1..self.deploys.len() {
            let window = self.window(i);
            let first = window
                .first()
                .and_then(|s| s.answer.as_ref().ok())
                .map(|a| {
                    if is_from(a, &self.deploys[i]) {
                        "new"
                    } else {
                        "previous"
                    }
                })
                .unwrap_or("none");
            let new = match self.first_new(i) {
                Some(s) => {
                    let ms = s.end.duration_since(self.deploys[i].exited).as_secs_f64() * 1000.0;
                    to_new.push(ms);
                    format!("{ms:.1} ms after cutover exited")
                }
                None => "none".into(),
            };
            let span = match (window.first(), window.last()) {
                (Some(a), Some(b)) => b.end.duration_since(a.start).as_secs_f64(),
                _ => 0.0,
            };
            let late = match self.first_new(i) {
                Some(f) => window
                    .iter()
                    .filter(|s| s.start >= f.end)
                    .filter(|s| matches!(&s.answer, Ok(a) if !is_from(a, &self.deploys[i])))
                    .count(),
                None => 0,
            };
            lines.push(format!(
                "  deploy {i} -> {}: first answer from it: {new}; first request after exit: {first}; \
                 then {} requests in {span:.1} s, {} answered by an older release ({late} of them after its first answer)",
                self.deploys[i].release,
                window.len(),
                self.stale(i)
            ));
        }
        if !to_new.is_empty() {
            to_new.sort_by(f64::total_cmp);
            lines.push(format!(
                "  exit -> first new answer over {} deploys: median {:.1} ms, max {:.1} ms",
                to_new.len(),
                to_new[to_new.len() / 2],
                to_new[to_new.len() - 1]
            ));
        }
        eprintln!("{}", lines.join("\n"));
    }

    fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed; the first ones:\n{}",
            self.failures.len(),
            self.samples.len(),
            self.failures[..self.failures.len().min(20)].join("\n")
        );
    }

    /// Requests completed while each deploy ran (a deploy with no traffic would prove nothing).
    fn assert_traffic_during_deploys(&self) {
        for (i, d) in self.deploys.iter().enumerate().skip(1) {
            assert!(
                self.samples
                    .iter()
                    .any(|s| s.end >= d.started && s.end <= d.exited),
                "deploy {i}: no request completed while cutover ran"
            );
        }
    }

    /// The first request that started after deploy `i`'s cutover exited was answered by its
    /// release.
    fn assert_next_request_is_new(&self, i: usize) {
        let d = &self.deploys[i];
        let first = self
            .window(i)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("deploy {i}: no request started after cutover exited"));
        let answer = first.answer.as_ref().expect("failures are reported apart");
        assert!(
            is_from(answer, d),
            "deploy {i}: the first request after cutover exited should be answered by release {} (version {}), \
             got {answer:?}; {} of {} requests after exit came from an older release",
            d.release,
            d.version,
            self.stale(i),
            self.window(i).len()
        );
    }

    /// Deploy `i`'s release answered, and it answered the last request of the window: it took
    /// over. (An old gunicorn worker told to stop may still take one more request when the
    /// machine is busy, so answers from both can interleave for a moment; the test prints how
    /// many, and checks that the old workers exited.)
    fn assert_new_release_took_over(&self, i: usize) {
        let d = &self.deploys[i];
        self.first_new(i)
            .unwrap_or_else(|| panic!("deploy {i}: release {} never answered", d.release));
        let last = self.window(i).into_iter().last().unwrap();
        assert!(
            matches!(&last.answer, Ok(a) if is_from(a, d)),
            "deploy {i}: the last request was answered by {:?}, not by release {}",
            last.answer,
            d.release
        );
    }

    /// Every request that started after deploy `i`'s cutover exited, for at least WATCH, was
    /// answered by the release before it.
    fn assert_previous_release_answers_throughout(&self, i: usize) {
        let (d, previous) = (&self.deploys[i], &self.deploys[i - 1]);
        let window = self.window(i);
        assert!(
            window.len() >= 2,
            "deploy {i}: too few requests after cutover exited to tell: {}",
            window.len()
        );
        let watched = window.last().unwrap().start.duration_since(window[0].start);
        assert!(
            watched >= WATCH - Duration::from_millis(500),
            "deploy {i}: requests for only {watched:?} after exit"
        );
        let fresh: Vec<&&Sample> = window
            .iter()
            .filter(|s| matches!(&s.answer, Ok(a) if !is_from(a, previous)))
            .collect();
        assert!(
            fresh.is_empty(),
            "deploy {i} (release {}): without the recipe the previous release {} should keep answering, \
             but {} of {} requests after exit did not get it, e.g. {:?}",
            d.release,
            previous.release,
            fresh.len(),
            window.len(),
            fresh[0].answer
        );
    }
}

/// One request on a new connection (HTTP/1.0: the server closes it after the response); the status
/// and the body.
fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // a POST says its (empty) body's length, as nginx wants
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    stream
        .write_all(
            format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{length}\r\n").as_bytes(),
        )
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

// --- servers -------------------------------------------------------------------------------------

/// Skips (a note; a failure under CI, where scripts/test installs them) unless every path exists.
fn installed(paths: &[&str]) -> bool {
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} missing under CI: scripts/test should have installed them"
    );
    eprintln!("skipping: {missing:?} not installed (run scripts/test)");
    false
}

/// Debian's PHP-FPM binary (/usr/sbin/php-fpm8.2 on Debian 12: the name carries the version),
/// when it and `others` are installed.
fn php_fpm_or_skip(others: &[&str]) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/sbin")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("php-fpm"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let php_fpm = found
        .pop()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/sbin/php-fpm*".into());
    let mut all = vec![php_fpm.as_str()];
    all.extend_from_slice(others);
    installed(&all).then(|| PathBuf::from(php_fpm))
}

/// True while process `pid` exists (kill(2) with signal 0 finds it).
fn process_exists(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only looks the process up.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A temp dir a server's own user can enter (its workers may run as another user).
fn server_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A server process in the foreground, its output in a file. Stopped (SIGTERM, then SIGKILL after
/// 10 s) on drop.
struct Daemon {
    what: String,
    child: Child,
    logs: Vec<PathBuf>,
}

impl Daemon {
    /// Starts `command`; its stdout and stderr go to `dir/WHAT.out`, shown with `logs` when it
    /// fails.
    fn spawn(what: &str, command: &mut Command, dir: &Path, logs: &[PathBuf]) -> Daemon {
        let out = dir.join(format!("{what}.out"));
        let file = fs::File::create(&out).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut all = vec![out];
        all.extend_from_slice(logs);
        Daemon {
            what: what.into(),
            child,
            logs: all,
        }
    }

    fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| {
                format!(
                    "--- {} ---\n{}",
                    p.display(),
                    String::from_utf8_lossy(&fs::read(p).unwrap_or_default())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (at most START_WAIT) until `ready` holds, failing with the logs when the process exits.
    fn wait_until(&mut self, ready: impl Fn() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited ({status}):\n{}", self.what, self.logs()));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {START_WAIT:?}:\n{}",
                    self.what,
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until GET / on `port` is answered by a release.
    fn wait_for_http(&mut self, port: u16) -> Result<(), String> {
        self.wait_until(
            || matches!(http(port, "GET", "/"), Ok((200, body)) if Answer::parse(&body).is_some()),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        common::traffic::stop_server(&mut self.child);
    }
}

/// Tries a server on up to five free ports (another process may take a port between the check
/// and the server's bind).
fn on_a_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut failures = Vec::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(server) => return server,
            Err(e) => failures.push(e),
        }
    }
    panic!("could not start {what}:\n{}", failures.join("\n---\n"));
}

/// A web server on a port of 127.0.0.1 (nginx, Apache, gunicorn).
struct Server {
    port: u16,
    _daemon: Daemon,
    // after the daemon: removed once the process is stopped
    _dir: tempfile::TempDir,
}

/// Fixed workers of the test's PHP-FPM pool (see [`PhpFpm::start`]).
const PHP_WORKERS: usize = 2;

/// PHP-FPM in the foreground (`-F`) with its own config and pool, listening on a socket in its
/// temp dir, with Debian's php.ini and conf.d (opcache on, as installed).
struct PhpFpm {
    socket: PathBuf,
    _daemon: Daemon,
    // after the daemon: removed once the process is stopped
    _dir: tempfile::TempDir,
}

impl PhpFpm {
    /// `pool_extra` is appended to the pool (e.g. php-fpm-pool.conf).
    fn start(binary: &Path, pool_extra: &str) -> PhpFpm {
        let dir = server_dir("cutover-php-fpm-");
        let d = dir.path();
        let socket = d.join("php-fpm.sock");
        let log = d.join("php-fpm.log");
        // A fixed set of workers (`pm = static`), each warmed up before a deploy: a worker started
        // after the swap would look `current` up afresh, and whether one starts would depend on
        // the load. listen.mode 0666: Apache's workers (www-data) connect too.
        let user = if is_root() { "user = root\n" } else { "" };
        let conf = format!(
            "[global]\npid = {pid}\nerror_log = {log}\ndaemonize = no\n\n\
             [app]\n{user}listen = {socket}\nlisten.mode = 0666\n\
             pm = static\npm.max_children = {PHP_WORKERS}\n{pool_extra}\n",
            pid = d.join("php-fpm.pid").display(),
            log = log.display(),
            socket = socket.display(),
        );
        let conf_path = d.join("php-fpm.conf");
        fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(binary);
        command.arg("-F").arg("-y").arg(&conf_path).arg("-p").arg(d);
        if is_root() {
            command.arg("-R");
        }
        let mut daemon = Daemon::spawn("php-fpm", &mut command, d, &[log, conf_path]);
        if let Err(e) = daemon.wait_until(|| socket.exists()) {
            panic!("could not start PHP-FPM: {e}");
        }
        PhpFpm {
            socket,
            _daemon: daemon,
            _dir: dir,
        }
    }
}

struct Nginx;

impl Nginx {
    /// nginx serving `site_conf(port)` (a recipe's server block), with `http_extra` in its `http`
    /// block; everything it writes goes to its temp dir.
    fn start(site_conf: &dyn Fn(u16) -> String, http_extra: &str) -> Server {
        on_a_free_port("nginx", |port| {
            let dir = server_dir("cutover-nginx-");
            let d = dir.path();
            // the recipe's `include fastcgi_params` is relative to the main config's directory
            fs::copy(FASTCGI_PARAMS, d.join("fastcgi_params")).unwrap();
            fs::write(d.join("site.conf"), site_conf(port)).unwrap();
            // As root, workers would switch to `nobody`, who cannot enter the test's temp dirs.
            let user = if is_root() { "user root;\n" } else { "" };
            let main = format!(
                "{user}daemon off;\nworker_processes 1;\npid \"{pid}\";\nerror_log \"{log}\" warn;\n\
                 events {{\n    worker_connections 256;\n}}\n\
                 http {{\n    access_log off;\n    default_type application/octet-stream;\n\
                 client_body_temp_path \"{d}/client_body\";\n    proxy_temp_path \"{d}/proxy\";\n\
                 fastcgi_temp_path \"{d}/fastcgi\";\n    uwsgi_temp_path \"{d}/uwsgi\";\n\
                 scgi_temp_path \"{d}/scgi\";\n    {http_extra}\n    include \"{d}/site.conf\";\n}}\n",
                pid = d.join("nginx.pid").display(),
                log = d.join("error.log").display(),
                d = d.display(),
            );
            let conf = d.join("nginx.conf");
            fs::write(&conf, main).unwrap();
            let error_log = d.join("error.log");
            let mut daemon = Daemon::spawn(
                "nginx",
                Command::new(NGINX)
                    .arg("-p")
                    .arg(d)
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(&error_log),
                d,
                &[error_log.clone(), d.join("site.conf")],
            );
            daemon.wait_for_http(port)?;
            Ok(Server {
                port,
                _daemon: daemon,
                _dir: dir,
            })
        })
    }
}

struct Apache;

impl Apache {
    /// Apache (`-DFOREGROUND`) with the modules the recipe names and apache-php-fpm.conf as its
    /// only site; everything it writes goes to its temp dir.
    fn start(site: &Site, fpm: &PhpFpm) -> Server {
        let recipe = recipe("apache-php-fpm.conf");
        on_a_free_port("apache2", |port| {
            let dir = server_dir("cutover-apache-");
            let d = dir.path();
            let vhost = fill(
                "apache-php-fpm.conf",
                &recipe,
                &[
                    ("DEPLOY_PATH", &site.path.display().to_string()),
                    ("PORT", &port.to_string()),
                    ("PHP_FPM_SOCKET", &fpm.socket.display().to_string()),
                ],
            );
            fs::write(d.join("site.conf"), vhost).unwrap();
            let modules = [
                "mpm_event",
                "authz_core",
                "dir",
                "mime",
                "proxy",
                "proxy_fcgi",
            ]
            .map(|m| format!("LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"))
            .concat();
            // Apache refuses to serve as root: started as root, its children run as www-data.
            let user = if is_root() {
                "User www-data\nGroup www-data\n"
            } else {
                ""
            };
            let error_log = d.join("error.log");
            let main = format!(
                "ServerRoot \"{d}\"\nDefaultRuntimeDir \"{d}\"\nPidFile \"{d}/httpd.pid\"\n\
                 ErrorLog \"{log}\"\nLogLevel warn\nListen 127.0.0.1:{port}\nServerName 127.0.0.1\n\
                 {modules}TypesConfig /etc/mime.types\n{user}Include \"{d}/site.conf\"\n",
                d = d.display(),
                log = error_log.display(),
            );
            let conf = d.join("httpd.conf");
            fs::write(&conf, main).unwrap();
            let mut daemon = Daemon::spawn(
                "apache2",
                Command::new(APACHE)
                    .arg("-f")
                    .arg(&conf)
                    .arg("-DFOREGROUND"),
                d,
                &[error_log, d.join("site.conf")],
            );
            daemon.wait_for_http(port)?;
            Ok(Server {
                port,
                _daemon: daemon,
                _dir: dir,
            })
        })
    }
}

struct Gunicorn;

impl Gunicorn {
    /// gunicorn from `args` (ExecStart's words, `@PLACEHOLDERS@` filled in by `values(port)`),
    /// started in `cwd` with no $PWD, as a service manager starts it.
    fn start(
        args: &[String],
        values: &dyn Fn(u16) -> Vec<(&'static str, String)>,
        cwd: &Path,
    ) -> Server {
        on_a_free_port("gunicorn", |port| {
            let dir = server_dir("cutover-gunicorn-out-");
            let values = values(port);
            let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let line = fill_some(&args.join(" "), &pairs);
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut daemon = Daemon::spawn(
                "gunicorn",
                Command::new(words[0])
                    .args(&words[1..])
                    .current_dir(cwd)
                    .env_remove("PWD"),
                dir.path(),
                &[],
            );
            daemon.wait_for_http(port)?;
            Ok(Server {
                port,
                _daemon: daemon,
                _dir: dir,
            })
        })
    }
}

/// [`fill`] for a command line that may not use every value (ExecStart without `--chdir`), but
/// must be left with no placeholder.
fn fill_some(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (name, value) in values {
        out = out.replace(&format!("@{name}@"), value);
    }
    let left = placeholders(&out);
    assert!(left.is_empty(), "{left:?} not filled in: {out}");
    out
}
