//! Zero downtime, measured: a real nginx serves `PATH/current` while a real client requests it
//! back to back, and cutover deploys over a real sshd, again and again, alternating two versions
//! of a site. Not one request may fail, and every response must be one version's file, whole.
//! Run by tests/live_traffic.rs (the deploy script over exec) and tests/sftp_only.rs (SFTP
//! requests alone).
//!
//! nginx is Debian's package (`/usr/sbin/nginx`, installed by scripts/test), started by the test
//! in the foreground with its own config, pid file, logs and temp dirs in a temp dir, listening on
//! a free port of 127.0.0.1. It follows `current` on every request (no open_file_cache), exactly
//! as a production server would.
//!
//! The client is plain std: HTTP/1.1 over TcpStream, with Content-Length bodies (all nginx sends
//! for static files), so a failure is never hidden by a library's retry.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::site::{noise, Site, TargetKind};

const NGINX: &str = "/usr/sbin/nginx";

/// Deploys made while the traffic runs.
const DEPLOYS: usize = 10;
/// Rollbacks made after them, still under traffic.
const ROLLBACKS: usize = 2;
/// Small files per version, besides the big asset.
const PAGES: usize = 300;
/// The big asset's size.
const ASSET_BYTES: usize = 3 * 1024 * 1024;
/// The big asset's path (requested once in every ASSET_EVERY requests).
const ASSET: &str = "assets/video.bin";
const ASSET_EVERY: u64 = 50;

/// Nice value of nginx and the client threads: the traffic runs back to back, but on a small CI
/// machine the deploys (sshd, cutover, the script) come first, so the test stays short.
const TRAFFIC_NICE: i32 = 10;

/// Client threads of each kind: one connection for all their requests, or one per request.
const KEEP_ALIVE_CLIENTS: usize = 1;
const NEW_CONNECTION_CLIENTS: usize = 1;

/// While cutover deploys a site back and forth to a `kind` of target, then rolls it back twice,
/// requests to nginx keep getting whole files of one version or the other: zero connection
/// errors, zero 404s, zero 5xx, zero mixed or truncated bodies, over keep-alive and fresh
/// connections alike.
pub fn requests_never_fail_while_deploys_and_rollbacks_alternate_two_versions(kind: TargetKind) {
    if !nginx_or_skip() {
        return;
    }
    let Some(site) = Site::new(kind) else {
        return;
    };
    let versions = Arc::new(Versions::new());
    versions.write(&site, 0);
    let first = site.deploy();
    let nginx = Nginx::start(&site.path.join("current"));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..KEEP_ALIVE_CLIENTS + NEW_CONNECTION_CLIENTS)
        .map(|i| {
            let (versions, stop, done) = (versions.clone(), stop.clone(), done.clone());
            let keep_alive = i < KEEP_ALIVE_CLIENTS;
            let port = nginx.port;
            thread::spawn(move || client(port, keep_alive, i as u64 + 1, &versions, &stop, &done))
        })
        .collect();

    // Every swap must happen while requests are in flight: a deploy or rollback during which no
    // request completed would prove nothing.
    let mut quiet = Vec::new();
    let mut during = |what: String, change: &mut dyn FnMut()| {
        let before = done.load(Ordering::Relaxed);
        change();
        if done.load(Ordering::Relaxed) == before {
            quiet.push(what);
        }
    };
    let mut live = vec![first.release];
    let deploys_started = Instant::now();
    for n in 1..=DEPLOYS {
        versions.write(&site, n % 2);
        during(format!("deploy {n}"), &mut || {
            live.push(site.deploy().release)
        });
    }
    for n in 1..=ROLLBACKS {
        during(format!("rollback {n}"), &mut || {
            site.cutover(&["rollback"])
                .expect_code(0, "rollback under traffic");
        });
        assert_eq!(
            site.current_id().as_ref(),
            Some(&live[DEPLOYS - n]),
            "rollback {n} went to the release before"
        );
    }
    let deploy_time = deploys_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let stats: Vec<Stats> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    drop(nginx);

    let total = Stats::sum(&stats);
    println!(
        "live traffic ({kind:?}): {} requests ({} over keep-alive connections, {} on new connections) during {DEPLOYS} deploys \
         and {ROLLBACKS} rollbacks ({:.1} s); \
         {} served version A, {} version B; {} failed",
        total.requests,
        stats[..KEEP_ALIVE_CLIENTS].iter().map(|s| s.requests).sum::<u64>(),
        stats[KEEP_ALIVE_CLIENTS..].iter().map(|s| s.requests).sum::<u64>(),
        deploy_time.as_secs_f64(),
        total.served[0],
        total.served[1],
        total.failures.len()
    );
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed; the first ones:\n{}",
        total.failures.len(),
        total.requests,
        total.failures[..total.failures.len().min(20)].join("\n")
    );
    assert!(
        quiet.is_empty(),
        "no request completed during {quiet:?}: the traffic did not overlap them"
    );
    assert!(
        total.served[0] > 0 && total.served[1] > 0,
        "both versions were served: {:?}",
        total.served
    );
    assert!(
        stats.iter().all(|s| s.requests > 0),
        "every client made requests"
    );
    live.dedup();
    assert_eq!(live.len(), DEPLOYS + 1, "every deploy made a new release");
}

// --- the two versions ------------------------------------------------------------------------------

/// Two versions of one site: the same paths, every file different (in content and length), each
/// carrying its version's marker.
struct Versions {
    paths: Vec<String>,
    content: [HashMap<String, Vec<u8>>; 2],
}

impl Versions {
    fn new() -> Versions {
        let mut paths: Vec<String> = (0..PAGES)
            .map(|i| format!("section{}/page{i:03}.html", i % 12))
            .collect();
        paths.push("index.html".into());
        paths.push("assets/app.css".into());
        paths.push(ASSET.into());
        let content = [0, 1].map(|v| {
            let marker = ["A", "B"][v];
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let body = if p == ASSET {
                        let mut data = format!("version {marker}\n").into_bytes();
                        data.extend(noise(1000 + v as u64, ASSET_BYTES));
                        data
                    } else {
                        // lengths differ between the versions, so a truncated or spliced body
                        // cannot pass for the other version's
                        let filler = "lorem ipsum ".repeat(10 + (i * 7 + v * 13) % 300);
                        format!("<!-- version {marker} -->\n<h1>{p}</h1>\n<p>{filler}</p>\n")
                            .into_bytes()
                    };
                    (p.clone(), body)
                })
                .collect()
        });
        Versions { paths, content }
    }

    /// Makes the site's source version `v` (0 = A, 1 = B).
    fn write(&self, site: &Site, v: usize) {
        for p in &self.paths {
            site.write(p, &self.content[v][p]);
        }
    }

    /// Which version `body` is for `path`, if any.
    fn which(&self, path: &str, body: &[u8]) -> Option<usize> {
        (0..2).find(|&v| self.content[v][path] == body)
    }
}

// --- the client ------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    requests: u64,
    served: [u64; 2],
    failures: Vec<String>,
}

impl Stats {
    fn sum(all: &[Stats]) -> Stats {
        let mut total = Stats::default();
        for s in all {
            total.requests += s.requests;
            total.served[0] += s.served[0];
            total.served[1] += s.served[1];
            total.failures.extend(s.failures.iter().cloned());
        }
        total
    }
}

/// Requests random paths back to back until `stop`: over one keep-alive connection (reopened only
/// when nginx says `Connection: close`), or over a new connection each time.
fn client(
    port: u16,
    keep_alive: bool,
    seed: u64,
    versions: &Versions,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Stats {
    // SAFETY: setpriority on this thread (Linux: a thread id is a PRIO_PROCESS id).
    unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            TRAFFIC_NICE,
        )
    };
    let mut stats = Stats::default();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut conn: Option<BufReader<TcpStream>> = None;
    // the asset is the last path; the others are picked uniformly
    let small = versions.paths.len() as u64 - 1;
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let path = if rng.is_multiple_of(ASSET_EVERY) {
            ASSET
        } else {
            versions.paths[((rng >> 8) % small) as usize].as_str()
        };
        stats.requests += 1;
        let mode = if keep_alive {
            "keep-alive"
        } else {
            "new connection"
        };
        match get(port, &mut conn, path, keep_alive) {
            Ok((200, body)) => match versions.which(path, &body) {
                Some(v) => stats.served[v] += 1,
                None => stats.failures.push(format!(
                    "GET /{path} ({mode}): 200 but the body ({} bytes, starts {:?}) is neither version's",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                )),
            },
            Ok((status, body)) => stats.failures.push(format!(
                "GET /{path} ({mode}): status {status}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            Err(e) => {
                conn = None;
                stats.failures.push(format!("GET /{path} ({mode}): {e}"));
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// One GET; returns the status and the body. Keeps `conn` open for the next request when
/// `keep_alive` and the server agrees.
fn get(
    port: u16,
    conn: &mut Option<BufReader<TcpStream>>,
    path: &str,
    keep_alive: bool,
) -> Result<(u16, Vec<u8>), String> {
    if conn.is_none() {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        *conn = Some(BufReader::new(stream));
    }
    let reader = conn.as_mut().unwrap();
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request = format!("GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n");
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;

    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("status line: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status line: {line:?}"))?;
    let mut length = None;
    let mut server_closes = !keep_alive;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("headers: {e}"))?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        let (name, value) = (name.to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        } else if name == "connection" && value.eq_ignore_ascii_case("close") {
            server_closes = true;
        }
    }
    let length = length.ok_or("no Content-Length")?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body ({length} bytes announced): {e}"))?;
    if server_closes {
        *conn = None;
    }
    Ok((status, body))
}

// --- nginx -----------------------------------------------------------------------------------------

/// True when nginx is installed; otherwise a note and false on a developer machine, a failure
/// under CI (where scripts/test installs it).
fn nginx_or_skip() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{NGINX} is missing under CI: scripts/test should have installed nginx"
    );
    eprintln!("skipping: {NGINX} not installed (run scripts/test)");
    false
}

/// A throwaway nginx in the foreground, serving one directory on 127.0.0.1. Stopped on drop.
struct Nginx {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &Path) -> Nginx {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Nginx::try_start(root) {
                Ok(n) => return n,
                Err(e) => failures.push(e),
            }
        }
        panic!("could not start nginx:\n{}", failures.join("\n---\n"));
    }

    fn try_start(root: &Path) -> Result<Nginx, String> {
        let dir = tempfile::Builder::new()
            .prefix("cutover-nginx-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, nginx_conf(dir.path(), port, root)).unwrap();
        let error_log = dir.path().join("error.log");
        let child = Command::new("nice")
            .arg(format!("-n{TRAFFIC_NICE}"))
            .arg(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .map_err(|e| format!("spawning {NGINX}: {e}"))?;
        let mut nginx = Nginx { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!(
                    "nginx on port {port} exited ({status}):\n{}{}",
                    read_lossy(&nginx.dir.path().join("stderr")),
                    read_lossy(&error_log)
                ));
            }
            let mut conn = None;
            if let Ok((200, _)) = get(port, &mut conn, "index.html", false) {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx on port {port} did not serve /index.html within 10 s:\n{}",
                    read_lossy(&error_log)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then itself.
        stop_server(&mut self.child);
    }
}

/// SIGTERM to a server this test started, then (after 10 s) SIGKILL; reaped either way.
pub fn stop_server(child: &mut std::process::Child) {
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// nginx.conf: everything nginx writes goes to `dir`; it serves `root` with the defaults a
/// production server has (symlinks followed on every request, sendfile, keep-alive).
fn nginx_conf(dir: &Path, port: u16, root: &Path) -> String {
    let d = |name: &str| -> PathBuf { dir.join(name) };
    // As root, workers would switch to `nobody`, who cannot enter the test's 0700 temp dirs.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{user}daemon off;
worker_processes 1;
pid \"{pid}\";
error_log \"{error_log}\" warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    client_body_temp_path \"{body}\";
    proxy_temp_path \"{proxy}\";
    fastcgi_temp_path \"{fastcgi}\";
    uwsgi_temp_path \"{uwsgi}\";
    scgi_temp_path \"{scgi}\";
    server {{
        listen 127.0.0.1:{port};
        root \"{root}\";
        location / {{
            try_files $uri =404;
        }}
    }}
}}
",
        pid = d("nginx.pid").display(),
        error_log = d("error.log").display(),
        body = d("client_body").display(),
        proxy = d("proxy").display(),
        fastcgi = d("fastcgi").display(),
        uwsgi = d("uwsgi").display(),
        scgi = d("scgi").display(),
        root = root.display(),
    )
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
