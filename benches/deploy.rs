//! `scripts/bench`: cutover against the baselines it must beat, over a 50 ms round trip.
//!
//! Starts a throwaway sshd (the test harness's) behind a TCP proxy that delays every byte by
//! 25 ms each way, generates a deterministic web-app tree, and times, as medians of several runs:
//!
//! | case        | cutover                      | baseline                                          |
//! |-------------|------------------------------|---------------------------------------------------|
//! | full        | first deploy                 | `tar -cf - . \| ssh host tar -xf -`; `sftp put -r` |
//! | incremental | ~15% changed/added/deleted   | `ssh cp -a` + `rsync -a --delete` + `ssh mv -T`   |
//! | no-op       | nothing changed              | the same rsync-based deploy                       |
//!
//! Full and incremental deploys run a second time with `sftp_only = true` (SFTP requests alone,
//! no exec), against the same baselines.
//!
//! A 100,000-file / 1 GB tree is deployed again with nothing changed and with one file changed
//! (`copy = "hardlink"`), against the time each must stay within (`--large`: that case alone);
//! plus local measurements: scan + hash of a 100,000-file / 1 GB tree (time, peak RSS), the
//! server-side assembly of 20,000 staged files, and `copy = "hardlink"` against `"full"` on 1 GB;
//! and a fleet: 20 hosts (each its own sshd behind its own 25 ms proxy) prepared at once against
//! a whole deploy to one of them alone (the target: at most 1.5x), also against that one host's
//! prepare alone, with the spread of the `current` renames (`--fleet`: that case alone).
//! Every tool writes its deploys to this machine's disk (the temporary directory's file system);
//! `--tmpfs` puts them on /dev/shm instead. Benchmarks measure and report; they assert nothing
//! about time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
// BENCH_RUNS overrides RUNS for quick looks.
fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RUNS)
}
const ONE_WAY_DELAY: Duration = Duration::from_millis(25);
const SFTP_CAP: Duration = Duration::from_secs(120);

fn main() {
    // `cargo test --all-targets` runs this file too, without `--bench`: the suite should not
    // spend minutes benchmarking. `cargo bench` (scripts/bench) passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/deploy.rs: run it with scripts/bench (cargo bench --bench deploy)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let fleet_only = std::env::args().any(|a| a == "--fleet");
    let work = tempfile::Builder::new()
        .prefix("cutover-bench")
        .tempdir()
        .unwrap();
    // Where the "server" writes: every tool deploys into the same place. This machine's disk
    // by default (the temporary directory's file system), where the server's copy, unpack and
    // pruning cost what they cost on a server; `--tmpfs` puts them on /dev/shm, where only the
    // network round trips and the tools' own work remain. BENCH_DEST=/some/dir picks any other.
    let dest_base = std::env::var_os("BENCH_DEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if std::env::args().any(|a| a == "--tmpfs") {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            }
        });
    let dests = tempfile::Builder::new()
        .prefix("cutover-bench-dest")
        .tempdir_in(&dest_base)
        .unwrap_or_else(|e| panic!("cannot use {} for deploys: {e}", dest_base.display()));
    let dest_fs = filesystem_of(dests.path());
    if std::env::args().any(|a| a == "--local") {
        print_rows(&local_cases(work.path(), dests.path()), &dest_fs);
        return;
    }
    if fleet_only {
        print_rows(&fleet_case(dests.path()), &dest_fs);
        return;
    }
    let sshd = common::Sshd::start();
    let proxy = common::proxy::start(sshd.port, ONE_WAY_DELAY);
    let known_hosts = work.path().join("known_hosts");
    let key_line = sshd.host_public_key_line();
    let (_, key) = key_line.split_once(' ').unwrap();
    fs::write(&known_hosts, format!("[127.0.0.1]:{proxy} {key}\n")).unwrap();
    let net = Net {
        sshd: &sshd,
        port: proxy,
        known_hosts: known_hosts.clone(),
    };
    eprintln!(
        "bench: sshd on {}, delay proxy on {proxy} (25 ms each way)",
        sshd.port
    );

    let mut rows = Vec::new();

    // --- network cases on the ~4,000-file tree
    let v1 = work.path().join("v1");
    let v2 = work.path().join("v2");
    let stats = generate_webapp(&v1, 4000, 42);
    copy_tree(&v1, &v2);
    let changed = mutate(&v2, 7);
    eprintln!(
        "bench: tree {} files, {:.1} MB; incremental change: {} modified, {} added, {} deleted",
        stats.files,
        stats.bytes as f64 / 1e6,
        changed.0,
        changed.1,
        changed.2
    );

    if std::env::args().any(|a| a == "--large") {
        print_rows(&large_tree_cases(&net, work.path(), dests.path()), &dest_fs);
        return;
    }
    if std::env::args().any(|a| a == "--serve") {
        serve(&net, &v1, &v2, work.path(), dests.path());
        return;
    }

    let mut c = Vec::new();
    let mut t = Vec::new();
    let mut s = Vec::new();
    for run in 0..runs() {
        let path = dests.path().join(format!("full-cutover-{run}"));
        c.push(cutover_deploy(&net, &v1, &path, work.path(), "full").0);
        let dest = dests.path().join(format!("full-tar-{run}"));
        t.push(time(|| tar_over_ssh(&net, &v1, &dest)));
        if run == 0 && !quick {
            let dest = dests.path().join("full-sftp");
            s.push(sftp_put(&net, &v1, &dest));
        }
    }
    rows.push(Row::new(
        "full deploy",
        median(&c),
        "tar \\| ssh tar -x",
        median(&t),
        0.9,
    ));
    if let Some(sftp) = s.first() {
        let label = if *sftp >= SFTP_CAP.as_secs_f64() {
            "sftp put -r (capped)"
        } else {
            "sftp put -r"
        };
        rows.push(Row::new("full deploy", median(&c), label, *sftp, f64::NAN));
    }

    let mut sf = Vec::new();
    for run in 0..runs() {
        let path = dests.path().join(format!("full-sftp-only-{run}"));
        sf.push(
            cutover_deploy_with(
                &net,
                &v1,
                &path,
                work.path(),
                "sftp-full",
                "full",
                SFTP_ONLY,
            )
            .0,
        );
    }
    rows.push(Row::new(
        "full deploy, sftp_only",
        median(&sf),
        "tar \\| ssh tar -x",
        median(&t),
        1.5,
    ));

    let mut ri = Vec::new();
    let mut rn = Vec::new();
    for run in 0..runs() {
        let path = dests.path().join(format!("inc-rsync-{run}"));
        rsync_deploy(&net, &v1, &path, "r0", None);
        ri.push(time(|| rsync_deploy(&net, &v2, &path, "r1", Some("r0"))));
        rn.push(time(|| rsync_deploy(&net, &v2, &path, "r2", Some("r1"))));
    }
    let mut vf = Vec::new();
    for copy in ["full", "hardlink"] {
        let mut ci = Vec::new();
        let mut cn = Vec::new();
        for run in 0..runs() {
            // incremental: v1 live, deploy v2; no-op: v2 live, deploy v2 again
            let path = dests.path().join(format!("inc-cutover-{copy}-{run}"));
            cutover_deploy_copy(&net, &v1, &path, work.path(), "prep", copy);
            ci.push(cutover_deploy_copy(&net, &v2, &path, work.path(), "inc", copy).0);
            cn.push(cutover_deploy_copy(&net, &v2, &path, work.path(), "noop", copy).0);
            if copy == "full" {
                vf.push(cutover_verify(work.path(), "noop"));
            }
        }
        rows.push(Row::new(
            &format!("incremental (~15%), copy = {copy}"),
            median(&ci),
            "cp -a + rsync + mv -T",
            median(&ri),
            0.5,
        ));
        rows.push(Row::new(
            &format!("no-op, copy = {copy}"),
            median(&cn),
            "cp -a + rsync + mv -T",
            median(&rn),
            0.3,
        ));
    }

    rows.push(Row::within(
        "cutover verify (no --hash), 4,000 files",
        median(&vf),
        2.0,
    ));

    let mut si = Vec::new();
    for run in 0..runs() {
        // v1 live, deploy v2, both with SFTP requests alone
        let path = dests.path().join(format!("inc-sftp-only-{run}"));
        cutover_deploy_with(
            &net,
            &v1,
            &path,
            work.path(),
            "sftp-prep",
            "full",
            SFTP_ONLY,
        );
        si.push(
            cutover_deploy_with(&net, &v2, &path, work.path(), "sftp-inc", "full", SFTP_ONLY).0,
        );
    }
    rows.push(Row::new(
        "incremental (~15%), sftp_only",
        median(&si),
        "cp -a + rsync + mv -T",
        median(&ri),
        1.0,
    ));

    if !quick {
        rows.extend(large_tree_cases(&net, work.path(), dests.path()));
    }

    drop(sshd);
    rows.extend(fleet_case(dests.path()));
    if !quick {
        rows.extend(local_cases(work.path(), dests.path()));
    }
    print_rows(&rows, &dest_fs);
}

fn print_rows(rows: &[Row], dest_fs: &str) {
    println!();
    println!("| case | cutover (s) | baseline | baseline (s) | ratio | target |");
    println!("|---|---:|---|---:|---:|---:|");
    for r in rows {
        println!("{}", r.markdown());
    }
    println!();
    println!(
        "machine: {} cores, {}; medians of {} runs; 50 ms round trip through a delay proxy to OpenSSH {}; deploys written to {dest_fs}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        runs(),
        openssh_version()
    );
}

/// Hosts in the fleet case.
const FLEET_HOSTS: usize = 20;

/// A fleet of 20 hosts on this machine, each its own sshd behind its own proxy (25 ms each
/// way), deployed a tree from scratch, against one of those hosts alone: the time until every
/// host is built and ready to switch (the `-v` stamp of the last `built and ready to switch`),
/// the whole deploy, and the spread of the `current` renames (their ctimes). Every host's server
/// work runs on this machine's cores too: the fleet's worst case.
fn fleet_case(dests: &Path) -> Vec<Row> {
    // The fleet's temporary files (sshds, deploy paths) go where the deploys of the other
    // cases go (tmpfs by default).
    std::env::set_var("TMPDIR", dests);
    let Some(mut f) = common::fleet::Fleet::start_with_delays(&[ONE_WAY_DELAY; FLEET_HOSTS]) else {
        panic!("the fleet case needs sshd");
    };
    // A deploy user with a plain /bin/sh (as a server's would be): this machine's root runs
    // `pyenv init` at every login, and twenty logins at once queue on its lock file.
    let home = dests.join("deploy-home");
    fs::create_dir_all(&home).unwrap();
    let user = common::TestUser::create("cobench", &home);
    f.login_as(&user.name);
    let mut rows = Vec::new();
    // Deploy paths of finished runs (see `fleet_rows`), deleted once every run is over.
    let spent = std::cell::RefCell::new(Vec::new());
    // A small tree, where the round trips are most of a deploy; then ten times as many files,
    // where the servers' own work (twenty of them, on this machine's cores) takes over.
    // BENCH_FLEET_FILES=400 runs one of the two trees, for quick looks.
    let trees: Vec<usize> = match std::env::var("BENCH_FLEET_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) => vec![n],
        None => vec![40, 400],
    };
    for files in trees {
        let _ = fs::remove_dir_all(&f.src);
        let stats = generate_webapp(&f.src, files, 99);
        eprintln!(
            "bench: fleet of {FLEET_HOSTS} sshds, each behind its own 25 ms proxy; tree {} files, {:.1} MB",
            stats.files,
            stats.bytes as f64 / 1e6
        );
        rows.extend(fleet_rows(&mut f, &format!("{files} files"), &spent));
    }
    for aside in spent.take() {
        let _ = fs::remove_dir_all(aside);
    }
    // The sshds (and their sessions) first, then their user.
    drop(f);
    drop(user);
    rows
}

/// The fleet case's rows for the tree in `f.src`: prepare and whole deploy, 20 hosts against
/// one, and the spread of the renames.
fn fleet_rows(
    f: &mut common::fleet::Fleet,
    tree: &str,
    spent: &std::cell::RefCell<Vec<PathBuf>>,
) -> Vec<Row> {
    // Each run starts from empty deploy paths. The previous run's are moved aside, not
    // deleted, until every run is over: on an ext4 without a journal (this project's VM), inodes
    // freed within the last minute (six while their inode table is unwritten) are skipped one
    // by one at every allocation (ext4's `recently_deleted`), and deleting twenty hosts' trees
    // right before a run made the servers' tar and sshd spend up to half their CPU there: a
    // cost of this benchmark's one disk, not of a fleet, whose hosts each have their own.
    // On tmpfs (`--tmpfs`) there is no inode table to skip through: the spent trees go at once,
    // so a later run does not meet the memory of every run before it. (BENCH_KEEP_SPENT=1
    // keeps them there too, to compare.)
    let on_tmpfs = filesystem_of(f.hosts[0].app.path.parent().unwrap()).starts_with("tmpfs")
        && std::env::var_os("BENCH_KEEP_SPENT").is_none();
    let fresh = |f: &common::fleet::Fleet| {
        // Nor does a run start from what the last one left in this machine's cache: every run
        // deploys the same tree, and a host where that tree was seen live last is expected
        // unchanged, so its lock would be taken a round trip late. A deploy of a changed
        // tree, the case measured here, never pays that.
        let _ = fs::remove_dir_all(f.home.join(".cache/cutover/live"));
        for h in &f.hosts {
            if h.app.path.exists() {
                let mut spent = spent.borrow_mut();
                let aside = h.app.path.with_extension(format!("spent-{}", spent.len()));
                fs::rename(&h.app.path, &aside).unwrap();
                spent.push(aside);
            }
        }
        if on_tmpfs {
            for aside in spent.borrow_mut().drain(..) {
                let _ = fs::remove_dir_all(aside);
            }
        }
    };
    // (seconds until every host was ready, seconds of the whole deploy, stderr)
    let deploy = |f: &common::fleet::Fleet| -> (f64, f64, String) {
        // Where the CPU goes: the whole machine's busy time (every sshd, shell and script of
        // the fleet runs here too) against the cutover process's own.
        let busy = || -> (f64, f64) {
            let stat = fs::read_to_string("/proc/stat").unwrap();
            let v: Vec<f64> = stat
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            // (user + nice + system + irq + softirq, idle + iowait), in clock ticks
            (v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4])
        };
        let client_cpu = || {
            let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage fills the struct it is given.
            let u = unsafe {
                libc::getrusage(libc::RUSAGE_CHILDREN, u.as_mut_ptr());
                u.assume_init()
            };
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            secs(u.ru_utime) + secs(u.ru_stime)
        };
        // As every timed run: the previous run's writes are on disk first.
        settle();
        let ((busy0, idle0), client0) = (busy(), client_cpu());
        let t = Instant::now();
        // (the wall-clock start, to line a run up with a system-wide profile: perf -k realtime)
        if std::env::var_os("BENCH_SHOW").is_some() {
            eprintln!(
                "--- epoch {:.3}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            );
        }
        let run = f.spawn(&["deploy", "-v"]).wait();
        let total = t.elapsed().as_secs_f64();
        let ((busy1, idle1), client1) = (busy(), client_cpu());
        eprintln!(
            "bench: fleet deploy of {} host(s): {total:.2} s; CPU busy {:.2} s, idle {:.2} s (all cores), of which cutover {:.2} s",
            f.members().len(),
            (busy1 - busy0) / 100.0,
            (idle1 - idle0) / 100.0,
            client1 - client0
        );
        assert_eq!(run.code, Some(0), "fleet bench deploy:\n{}", run.describe());
        if std::env::var_os("BENCH_SHOW").is_some() {
            eprintln!("--- fleet deploy: {total:.2} s\n{}", run.stderr);
        }
        for h in &f.hosts {
            h.app.wait_for_prune();
        }
        let ready = run
            .stderr
            .lines()
            .filter(|l| l.ends_with("] built and ready to switch"))
            .filter_map(|l| {
                let stamp = l.split("cutover: [").nth(1)?.split(" s]").next()?;
                stamp.trim().parse::<f64>().ok()
            })
            .fold(0.0, f64::max);
        (ready, total, run.stderr)
    };
    let (mut one_ready, mut one_total) = (Vec::new(), Vec::new());
    let (mut all_ready, mut all_total, mut spreads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        fresh(f);
        f.only(Some(&["web01"]));
        let (ready, total, _) = deploy(f);
        one_ready.push(ready);
        one_total.push(total);
        fresh(f);
        f.only(None);
        let (ready, total, _) = deploy(f);
        all_ready.push(ready);
        all_total.push(total);
        let ctimes: Vec<f64> = f
            .hosts
            .iter()
            .map(|h| {
                use std::os::unix::fs::MetadataExt;
                let md = fs::symlink_metadata(h.app.at("current")).unwrap();
                md.ctime() as f64 + md.ctime_nsec() as f64 / 1e9
            })
            .collect();
        let first = ctimes.iter().cloned().fold(f64::INFINITY, f64::min);
        let last = ctimes.iter().cloned().fold(0.0, f64::max);
        spreads.push((last - first) * 1000.0);
    }
    let mut spread = Row::new(
        &format!("{FLEET_HOSTS}-host fleet, {tree}: spread of the `current` renames (ms; 25 ms one way to every host)"),
        median(&spreads),
        "target: the largest RTT + 20 ms",
        50.0 + 20.0,
        1.0,
    );
    spread.unit = " ms";
    vec![
        // The fleet's target: preparing 20 hosts against a whole single-host deploy of the
        // same tree (prepared, switched and committed).
        Row::new(
            &format!("{FLEET_HOSTS}-host fleet, {tree}, prepare (every host built and ready)"),
            median(&all_ready),
            "1 host, whole deploy",
            median(&one_total),
            1.5,
        ),
        // The stricter view, no target: the one host's prepare alone (up to its `ready`).
        Row::new(
            &format!("{FLEET_HOSTS}-host fleet, {tree}, prepare"),
            median(&all_ready),
            "1 host, prepare",
            median(&one_ready),
            f64::NAN,
        ),
        Row::new(
            &format!("{FLEET_HOSTS}-host fleet, {tree}, whole deploy"),
            median(&all_total),
            "1 host, whole deploy",
            median(&one_total),
            f64::NAN,
        ),
        spread,
    ]
}

/// `scripts/bench --serve`: keep the sshd and the delay proxy up and print configs for deploying
/// the two trees by hand (`cutover deploy -v` shows where the seconds go), until Enter is pressed.
fn serve(net: &Net, v1: &Path, v2: &Path, work: &Path, dests: &Path) {
    for (tag, src) in [("v1", v1), ("v2", v2)] {
        for (copy, extra) in [("full", ""), ("hardlink", ""), ("full", SFTP_ONLY)] {
            let label = if extra.is_empty() { copy } else { "sftp-only" };
            let cfg = write_config(
                net,
                src,
                &dests.join("serve"),
                work,
                &format!("{tag}-{label}"),
                copy,
                extra,
            );
            println!(
                "{} deploy -v --config {}",
                common::cutover_bin().display(),
                cfg.display()
            );
        }
    }
    println!(
        "(HOME={} and no SSH_AUTH_SOCK, as in the benchmark) press Enter (or Ctrl-C) to stop",
        work.display()
    );
    // A signal, too, ends the wait normally, so that the sshd and the temporary trees are
    // dropped (removed) instead of left behind by a killed process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).unwrap();
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut hup = signal(SignalKind::hangup()).unwrap();
        let enter = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_line(&mut String::new());
        });
        tokio::select! {
            _ = enter => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    });
    // the stdin reader may still be blocked: do not wait for it
    rt.shutdown_background();
}

struct Net<'a> {
    sshd: &'a common::Sshd,
    port: u16,
    known_hosts: PathBuf,
}

impl Net<'_> {
    fn ssh_args(&self) -> Vec<String> {
        let mut a = vec![
            "-F".into(),
            "none".into(),
            "-i".into(),
            self.sshd.identity.display().to_string(),
        ];
        a.extend(common::client_options(&self.known_hosts));
        a
    }
}

struct Row {
    case: String,
    ours: f64,
    baseline: String,
    theirs: f64,
    target: f64,
    unit: &'static str,
    /// A target in seconds rather than a ratio (NaN: none).
    limit: f64,
}

impl Row {
    fn new(case: &str, ours: f64, baseline: &str, theirs: f64, target: f64) -> Row {
        Row {
            case: case.into(),
            ours,
            baseline: baseline.into(),
            theirs,
            target,
            unit: "",
            limit: f64::NAN,
        }
    }
    /// A case with no baseline tool, only a time to stay within.
    fn within(case: &str, ours: f64, limit: f64) -> Row {
        Row {
            limit,
            ..Row::new(case, ours, "—", f64::NAN, f64::NAN)
        }
    }
    fn markdown(&self) -> String {
        let ratio = if self.theirs > 0.0 {
            self.ours / self.theirs
        } else {
            f64::NAN
        };
        let target = if !self.limit.is_nan() {
            format!(
                "≤ {:.1} s {}",
                self.limit,
                if self.ours <= self.limit {
                    "✓"
                } else {
                    "✗"
                }
            )
        } else if self.target.is_nan() {
            "—".to_string()
        } else {
            format!(
                "≤ {:.1}× {}",
                self.target,
                if ratio <= self.target { "✓" } else { "✗" }
            )
        };
        let theirs = if self.theirs.is_nan() {
            "—".into()
        } else {
            format!("{:.2}", self.theirs)
        };
        let ratio = if ratio.is_nan() {
            "—".into()
        } else {
            format!("{ratio:.2}×")
        };
        format!(
            "| {} | {:.2}{} | {} | {theirs} | {ratio} | {target} |",
            self.case, self.ours, self.unit, self.baseline
        )
    }
}

/// The peak RSS of the last [`cutover_deploy_with`], in KiB.
static LAST_PEAK_KB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Waits for `child` with wait4: (exited 0, its own peak RSS in MB).
fn wait_with_peak(child: &std::process::Child) -> (bool, f64) {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: waits for a child this process spawned; usage is written by the kernel.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, usage.as_mut_ptr()) };
    assert!(pid > 0, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // SAFETY: wait4 succeeded, so usage is filled in.
    (ok, unsafe { usage.assume_init() }.ru_maxrss as f64 / 1024.0)
}

/// `sync` before a timed run: on a disk, the dirty pages the previous run left (another tool's
/// files, or the same tool's) are written back now, not billed to whichever run comes next.
fn settle() {
    let _ = Command::new("sync").status();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> f64 {
    settle();
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Deploy `src` to `path` on the bench sshd through the proxy; returns (seconds, stderr).
fn cutover_deploy(net: &Net, src: &Path, path: &Path, work: &Path, tag: &str) -> (f64, String) {
    cutover_deploy_copy(net, src, path, work, tag, "full")
}

fn cutover_deploy_copy(
    net: &Net,
    src: &Path,
    path: &Path,
    work: &Path,
    tag: &str,
    copy: &str,
) -> (f64, String) {
    cutover_deploy_with(net, src, path, work, tag, copy, "")
}

/// Extra target keys for a deploy with SFTP requests alone.
const SFTP_ONLY: &str = "sftp_only = true\n";

/// [`cutover_deploy_copy`] with `extra` keys in the target table.
fn cutover_deploy_with(
    net: &Net,
    src: &Path,
    path: &Path,
    work: &Path,
    tag: &str,
    copy: &str,
    extra: &str,
) -> (f64, String) {
    let cfg = write_config(net, src, path, work, tag, copy, extra);
    settle();
    let t = Instant::now();
    // Reaped by wait_with_peak (wait4), which clippy does not know.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(common::cutover_bin())
        .args(["deploy", "-v", "--config"])
        .arg(&cfg)
        .env("HOME", work)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let (ok, peak_mb) = wait_with_peak(&child);
    let secs = t.elapsed().as_secs_f64();
    LAST_PEAK_KB.store(
        (peak_mb * 1024.0) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    assert!(ok, "cutover failed:\n{stderr}");
    if std::env::var_os("BENCH_SHOW").is_some() {
        eprintln!("--- cutover {tag}: {secs:.2} s\n{stderr}");
    }
    (secs, stderr)
}

/// `cutover verify` with the config of the deploy tagged `tag`; the seconds it took.
fn cutover_verify(work: &Path, tag: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new(common::cutover_bin())
        .args(["verify", "--config"])
        .arg(work.join(format!("cutover-{tag}.toml")))
        .env("HOME", work)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "cutover verify:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn write_config(
    net: &Net,
    src: &Path,
    path: &Path,
    work: &Path,
    tag: &str,
    copy: &str,
    extra: &str,
) -> PathBuf {
    let cfg = work.join(format!("cutover-{tag}.toml"));
    fs::write(
        &cfg,
        format!(
            "source = {:?}\ncopy = {copy:?}\n[targets.bench]\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\npath = {:?}\nidentity_file = {:?}\nknown_hosts = {:?}\n{extra}",
            src.display().to_string(),
            net.port,
            net.sshd.user,
            path.display().to_string(),
            net.sshd.identity.display().to_string(),
            net.known_hosts.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

fn tar_over_ssh(net: &Net, src: &Path, dest: &Path) {
    let mut tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(src)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("ssh")
        .args(net.ssh_args())
        .args(["-p", &net.port.to_string(), "127.0.0.1"])
        .arg(format!("mkdir -p {0} && tar -xf - -C {0}", dest.display()))
        .stdin(tar.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success() && tar.wait().unwrap().success());
}

/// OpenSSH's own recursive upload, stopped at the cap.
fn sftp_put(net: &Net, src: &Path, dest: &Path) -> f64 {
    fs::create_dir_all(dest).unwrap();
    let mut child = Command::new("sftp")
        .args(net.ssh_args())
        .args(["-P", &net.port.to_string(), "-b", "-", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    writeln!(
        child.stdin.take().unwrap(),
        "put -r {} {}",
        src.display(),
        dest.display()
    )
    .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return t.elapsed().as_secs_f64();
        }
        if t.elapsed() > SFTP_CAP {
            let _ = child.kill();
            let _ = child.wait();
            return SFTP_CAP.as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rsync-based atomic deploy a careful team would script, over one shared SSH master.
fn rsync_deploy(net: &Net, src: &Path, path: &Path, release: &str, previous: Option<&str>) {
    let ctl = path.with_extension("ctl");
    let port = net.port.to_string();
    let mut base: Vec<String> = net.ssh_args();
    base.extend([
        "-o".into(),
        format!("ControlPath={}", ctl.display()),
        "-p".into(),
        port.clone(),
    ]);
    let ssh = |cmd: &str| {
        let st = Command::new("ssh")
            .args(&base)
            .arg("127.0.0.1")
            .arg(cmd)
            .status()
            .unwrap();
        assert!(st.success(), "ssh {cmd}");
    };
    let master = Command::new("ssh")
        .args(&base)
        .args(["-o", "ControlMaster=yes", "-N", "127.0.0.1"])
        .spawn()
        .unwrap();
    let mut master = master;
    while !ctl.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let p = path.display();
    match previous {
        Some(prev) => ssh(&format!("cp -a {p}/releases/{prev} {p}/releases/{release}")),
        None => ssh(&format!("mkdir -p {p}/releases/{release}")),
    }
    let rsh = format!("ssh {}", base.join(" "));
    let st = Command::new("rsync")
        .args(["-a", "--delete", "-e", &rsh])
        .arg(format!("{}/", src.display()))
        .arg(format!("127.0.0.1:{p}/releases/{release}/"))
        .status()
        .unwrap();
    assert!(st.success(), "rsync");
    ssh(&format!(
        "cd {p} && ln -sfn releases/{release} current.tmp && mv -T current.tmp current"
    ));
    let _ = Command::new("ssh")
        .args(&base)
        .args(["-O", "exit", "127.0.0.1"])
        .stderr(Stdio::null())
        .status();
    let _ = master.wait();
}

struct TreeStats {
    files: usize,
    bytes: u64,
}

/// Deterministic pseudo-random numbers (xorshift64*): the same tree on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize, text: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let x = self.next();
            for b in x.to_le_bytes() {
                v.push(if text {
                    b"abcdefghij klmnopqrstuvwxyz\n{};<>=/"[b as usize % 35]
                } else {
                    b
                });
            }
        }
        v.truncate(n);
        v
    }
}

/// A web-app-like tree: many small text files in nested directories, some images, a few large
/// bundles. About 10 KB per file on average (4,000 files ≈ 40 MB).
fn generate_webapp(root: &Path, files: usize, seed: u64) -> TreeStats {
    let mut rng = Rng(seed);
    let dirs = [
        "src",
        "src/components",
        "src/lib",
        "vendor/a/src",
        "vendor/b/lib",
        "vendor/c",
        "public/css",
        "public/js",
        "public/img",
        "templates",
        "config",
        "lang/en",
        "lang/de",
    ];
    let mut bytes = 0;
    for i in 0..files {
        let r = rng.below(1000);
        let (dir, ext, size, text) = if r < 940 {
            (
                dirs[rng.below(dirs.len() as u64) as usize],
                "php",
                200 + rng.below(5_600) as usize,
                true,
            )
        } else if r < 995 {
            (
                "public/img",
                "png",
                10_000 + rng.below(90_000) as usize,
                false,
            )
        } else {
            (
                "public/build",
                "js",
                300_000 + rng.below(1_000_000) as usize,
                true,
            )
        };
        let sub = rng.below(20);
        let path = root
            .join(dir)
            .join(format!("m{sub}"))
            .join(format!("f{i}.{ext}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, rng.bytes(size, text)).unwrap();
        bytes += size as u64;
    }
    TreeStats { files, bytes }
}

/// Change ~10% of files, add ~2.5%, delete ~2.5%. Returns (modified, added, deleted).
fn mutate(root: &Path, seed: u64) -> (usize, usize, usize) {
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    collect_files(root, &mut all);
    all.sort();
    let (mut m, mut a, mut d) = (0, 0, 0);
    for (i, f) in all.iter().enumerate() {
        match rng.below(1000) {
            0..=99 => {
                let len = fs::metadata(f).unwrap().len() as usize;
                fs::write(f, rng.bytes(len.max(10), true)).unwrap();
                m += 1;
            }
            100..=124 => {
                fs::remove_file(f).unwrap();
                d += 1;
            }
            125..=149 => {
                fs::write(
                    f.with_file_name(format!("new{i}.php")),
                    rng.bytes(3000, true),
                )
                .unwrap();
                a += 1;
            }
            _ => {}
        }
    }
    (m, a, d)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            collect_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

/// Local measurements: the scan, the server-side assembly and the hardlink copy mode.
/// Write `cfg`: a `local` target deploying `src` to `dest` with `copy` mode; returns its path.
fn local_config(cfg: &Path, src: &Path, dest: &Path, copy: &str) -> PathBuf {
    fs::write(
        cfg,
        format!(
            "source = {:?}\ncopy = {copy:?}\n[targets.l]\nhost = \"local\"\npath = {:?}\n",
            src.display().to_string(),
            dest.display().to_string()
        ),
    )
    .unwrap();
    cfg.to_path_buf()
}

/// `df -PT`'s type and mount point of `path`, e.g. "tmpfs (/dev/shm)".
fn filesystem_of(path: &Path) -> String {
    let out = Command::new("df").arg("-PT").arg(path).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match text
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    {
        Some(f) if f.len() >= 7 => format!("{} ({})", f[1], f[6]),
        _ => "an unknown file system".into(),
    }
}

/// A large tree over the network: 100,000 files / 1 GB live (deployed once, untimed), then
/// deployed again with nothing changed (no release is built: connect, survey, read the live
/// manifest, compare) and with one file changed (`copy = "hardlink"`: the whole release is
/// hard-linked on the server, one file travels).
fn large_tree_cases(net: &Net, work: &Path, dests: &Path) -> Vec<Row> {
    let big = work.join("big");
    generate_sized(&big, 100_000, 1_000_000_000, 9);
    let path = dests.join("large-tree");
    cutover_deploy_copy(net, &big, &path, work, "large", "hardlink");
    let peak = || LAST_PEAK_KB.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    let full_peak = peak();
    let unchanged: Vec<f64> = (0..runs())
        .map(|_| cutover_deploy_copy(net, &big, &path, work, "large", "hardlink").0)
        .collect();
    let unchanged_peak = peak();
    let one = big.join("d0/s0/f0.dat");
    let original = fs::read(&one).unwrap();
    let changed: Vec<f64> = (0..runs())
        .map(|run| {
            let mut bytes = original.clone();
            bytes.extend_from_slice(format!("change {run}\n").as_bytes());
            fs::write(&one, bytes).unwrap();
            let secs = cutover_deploy_copy(net, &big, &path, work, "large", "hardlink").0;
            // The releases it pruned are deleted after it reported: let that finish before
            // the next run, as it would between two deploys.
            wait_for_trash(&path);
            secs
        })
        .collect();
    let changed_peak = peak();
    fs::write(&one, original).unwrap();
    let _ = fs::remove_dir_all(&path);
    eprintln!(
        "bench: 100,000 files: peak RSS {full_peak:.0} MB (first deploy, 1 GB uploaded), {unchanged_peak:.0} MB (nothing changed), {changed_peak:.0} MB (one file changed)"
    );
    vec![
        Row {
            baseline: format!("peak RSS {unchanged_peak:.0} MB"),
            ..Row::within(
                "100,000 files / 1 GB, nothing changed",
                median(&unchanged),
                1.5,
            )
        },
        Row {
            baseline: format!("peak RSS {changed_peak:.0} MB"),
            ..Row::within(
                "100,000 files / 1 GB, one file changed, copy = hardlink",
                median(&changed),
                2.5,
            )
        },
    ]
}

/// Waits (at most a minute) until the deploy path's `.cutover/trash/` is empty.
fn wait_for_trash(path: &Path) {
    let trash = path.join(".cutover/trash");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_dir(&trash)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn local_cases(work: &Path, dests: &Path) -> Vec<Row> {
    let mut rows = Vec::new();

    // scan + hash of 100,000 files / ~1 GB, warm cache
    let big = work.join("big");
    generate_sized(&big, 100_000, 1_000_000_000, 9);
    let cfg = local_config(
        &work.join("scan.toml"),
        &big,
        &work.join("scan-dest"),
        "full",
    );
    // (seconds, peak RSS in MB) of one dry run: wait4 gives that child's own peak. `cache`:
    // where cutover keeps the hashes of its last scan (a new directory: every file is read).
    let scan = |cache: &Path| -> (f64, f64) {
        let t = Instant::now();
        // Reaped by wait_with_peak (wait4), which clippy does not know.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(common::cutover_bin())
            .args(["deploy", "--dry-run", "-q", "--config"])
            .arg(&cfg)
            .env("XDG_CACHE_HOME", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (ok, peak_mb) = wait_with_peak(&child);
        assert!(ok, "the dry run failed");
        (t.elapsed().as_secs_f64(), peak_mb)
    };
    let known = work.join("scan-cache-kept");
    scan(&known); // warm the page cache (and keep the hashes for the second row)
    let runs_: Vec<(f64, f64)> = (0..runs())
        .map(|n| scan(&work.join(format!("scan-cache-{n}"))))
        .collect();
    let kept: Vec<(f64, f64)> = (0..runs()).map(|_| scan(&known)).collect();
    for (case, runs_) in [
        ("scan+hash 100k files / 1 GB (dry run)", runs_),
        (
            "scan 100k files / 1 GB, hashes of the last scan kept (dry run)",
            kept,
        ),
    ] {
        let times: Vec<f64> = runs_.iter().map(|r| r.0).collect();
        let rss = runs_.iter().map(|r| r.1).fold(0.0, f64::max);
        rows.push(Row {
            case: case.into(),
            ours: median(&times),
            baseline: format!("target ≤ 1 s; peak RSS {rss:.0} MB (≤ 150)"),
            theirs: f64::NAN,
            target: f64::NAN,
            unit: "",
            limit: f64::NAN,
        });
    }

    // the server's work for 20,000 staged files (a local target: no network)
    let app = work.join("assembly-src");
    generate_sized(&app, 20_000, 40_000_000, 11);
    // --force: a 1 GB release with nothing changed is built anyway (else no release is built).
    let deploy = |cfg: &Path| -> f64 {
        let out = Command::new(common::cutover_bin())
            .args(["deploy", "-v", "--force", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        script_seconds(&stderr)
    };
    // On the deploys' file system, and on the other of disk and tmpfs.
    let shm = tempfile::Builder::new()
        .prefix("cutover-bench-shm")
        .tempdir_in("/dev/shm")
        .unwrap();
    let other = if filesystem_of(dests).starts_with("tmpfs") {
        work
    } else {
        shm.path()
    };
    let mut round = 0;
    for (i, base) in [dests, other].into_iter().enumerate() {
        let dest = base.join(format!("assembly-dest-{i}"));
        let cfg = local_config(
            &work.join(format!("assembly-{i}.toml")),
            &app,
            &dest,
            "full",
        );
        deploy(&cfg);
        let mut assembly = Vec::new();
        for _ in 0..runs() {
            // every file gets a new name and content: 20,000 files are unpacked, 20,000 go
            rename_all(&app, round);
            round += 1;
            assembly.push(deploy(&cfg));
        }
        rows.push(Row {
            case: format!(
                "local target, plan to commit: 20,000 new + 20,000 deleted files, on {}",
                filesystem_of(base)
            ),
            ours: median(&assembly),
            baseline: "target ≤ 2 s".into(),
            theirs: f64::NAN,
            target: f64::NAN,
            unit: "",
            limit: f64::NAN,
        });
    }

    // copy = "full" vs "hardlink" on a 1 GB release (no files changed)
    for mode in ["full", "hardlink"] {
        let dest = work.join(format!("copy-{mode}"));
        let cfg = local_config(&work.join(format!("copy-{mode}.toml")), &big, &dest, mode);
        deploy(&cfg);
        let t: Vec<f64> = (0..runs()).map(|_| deploy(&cfg)).collect();
        rows.push(Row {
            case: format!("local target, plan to commit: 1 GB release, nothing changed, --force, copy = \"{mode}\""),
            ours: median(&t),
            baseline: "".into(),
            theirs: f64::NAN,
            target: f64::NAN,
            unit: "",
            limit: f64::NAN,
        });
        let _ = fs::remove_dir_all(&dest);
    }
    rows
}

/// The server's part of a local deploy, from cutover's verbose stamps: from the plan (`release
/// ID: N to upload ...`) to `committed`. The local "upload" only writes the archives into the
/// staging directory, and the script's copy of the previous release overlaps it.
fn script_seconds(stderr: &str) -> f64 {
    let stamp = |needle: &str| -> Option<f64> {
        stderr.lines().find_map(|l| {
            let rest = l.strip_prefix("cutover: [")?;
            let (secs, what) = rest.split_once(" s] ")?;
            what.starts_with(needle)
                .then(|| secs.trim().parse().ok())
                .flatten()
        })
    };
    match (stamp("release "), stamp("committed")) {
        (Some(plan), Some(done)) => done - plan,
        _ => panic!("no plan or commit stamp in:\n{stderr}"),
    }
}

fn generate_sized(root: &Path, files: usize, total: u64, seed: u64) {
    if root.exists() {
        return;
    }
    let mut rng = Rng(seed);
    let avg = (total / files as u64) as usize;
    for i in 0..files {
        let path = root
            .join(format!("d{}", i % 500))
            .join(format!("s{}", i % 7))
            .join(format!("f{i}.dat"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let size = avg / 2 + rng.below(avg as u64) as usize;
        fs::write(&path, rng.bytes(size, false)).unwrap();
    }
}

fn rename_all(root: &Path, round: u64) {
    let mut files = Vec::new();
    collect_files(root, &mut files);
    for f in files {
        let mut bytes = fs::read(&f).unwrap();
        bytes.extend_from_slice(&round.to_le_bytes());
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        fs::write(f.with_file_name(format!("r{round}-{name}")), bytes).unwrap();
        fs::remove_file(&f).unwrap();
    }
}

fn openssh_version() -> String {
    let out = Command::new("ssh").arg("-V").output().unwrap();
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
