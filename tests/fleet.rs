//! Fleets, end to end: one target of many hosts, each a real sshd on its own port with its own
//! deploy path (tests/common/fleet.rs), deployed as one. Every host is locked and prepared
//! (upload, build, before_swap) before any switches; `go` goes to all at once; the verify hooks
//! run on every host; then `commit` to all, or `revert` to all.
//!
//! What is proven here, host by host on the file system: one release ID everywhere, trees equal
//! to the source, one exec per host; a bad host anywhere before the switch leaves every host as
//! it was (no lock, staging or partial release anywhere); a killed client leaves every host to
//! clean up or switch back by itself; a failing verify hook switches every host back; the
//! `current` renames of hosts at different distances land close together.
//!
//! Measured figures (the mixed-version window, the skew of the renames) are printed with
//! `eprintln!`: run with `--nocapture` to see them. Only the skew bound is asserted, as the
//! fleet's promise.
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::fleet::Fleet;
use common::site::*;

/// The fleet size of the cases the fleet promise is about: all good, one bad host, a failing
/// verify hook.
const FLEET: usize = 20;

/// A small site: `version` shows in one page, and names one page of its own.
fn write_site(f: &Fleet, version: &str) {
    f.write("index.html", format!("<h1>{version}</h1>\n"));
    f.write("assets/app.css", "body { margin: 0; }\n");
    f.write(
        ".well-known/security.txt",
        "Contact: mailto:ops@example.com\n",
    );
    f.write(format!("pages/{version}.html"), format!("{version}\n"));
}

/// The skew test measures milliseconds: it runs alone, while every other test of this file
/// (whose twenty sshds and deploys would take the CPU it measures with) waits; the others run
/// side by side.
static CPU: RwLock<()> = RwLock::new(());

fn turn() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

/// `N/M hosts switched within X ms` → (N, M, X).
fn switched_within(stdout: &str) -> Option<(usize, usize, f64)> {
    let line = stdout
        .lines()
        .find(|l| l.contains(" hosts switched within "))?;
    let (counts, rest) = line.split_once(" hosts switched within ")?;
    let (n, m) = counts.trim().split_once('/')?;
    let ms = rest.trim().strip_suffix(" ms")?;
    Some((n.parse().ok()?, m.parse().ok()?, ms.parse().ok()?))
}

/// Every host of `f` is live on one release, exactly the source, with nothing of the deploy
/// left over; that release's ID.
fn assert_every_host_live_on_one_release(f: &Fleet, run: &Run) -> String {
    let id = f.hosts[0].app.current_id().expect("current on web01");
    for h in &f.hosts {
        assert_eq!(
            h.app.current_id().as_deref(),
            Some(id.as_str()),
            "{}: one release ID everywhere\n{}",
            h.label,
            run.describe()
        );
        h.app.assert_release_is(&f.src, &id, &[]);
        h.app.assert_clean(&format!("{} after the deploy", h.label));
    }
    id
}

// --- all good ------------------------------------------------------------------------------------

/// Twenty hosts, nothing wrong: every host ends on the same new release, each release is exactly
/// the source, each host ran one exec, and nothing of the deploy is left over. The output has a
/// `[host]` line per host, the table, and the `20/20 hosts switched within N ms` line; `--json`
/// has the same per host.
#[test]
fn twenty_hosts_all_good_get_one_release_equal_to_the_source_in_one_exec_each() {
    let _turn = turn();
    let Some(f) = Fleet::start(FLEET) else { return };
    write_site(&f, "v1");
    let run = f.cutover(&["deploy"]);
    run.expect_code(0, "deploy to 20 good hosts");
    let id = assert_every_host_live_on_one_release(&f, &run);
    for h in &f.hosts {
        assert_eq!(h.sshd.exec_sessions(), 1, "{}: one exec", h.label);
        let live = format!("[{}] t: release {id} is live: ", h.label);
        assert!(run.stdout.contains(&live), "{live:?}\n{}", run.describe());
        let row = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", h.label)))
            .unwrap_or_else(|| panic!("no table row for {}\n{}", h.label, run.describe()));
        assert!(
            row.contains(&id) && row.contains("live") && row.contains(" ms"),
            "{row:?}"
        );
    }
    assert!(
        run.stdout.lines().any(|l| l.starts_with("host ")
            && ["release", "previous", "uploaded", "time", "result", "rtt"]
                .iter()
                .all(|c| l.contains(c))),
        "the table's header\n{}",
        run.describe()
    );
    f.assert_nothing_left_running("after the deploy");
    let (n, m, spread) = switched_within(&run.stdout)
        .unwrap_or_else(|| panic!("no `hosts switched within` line\n{}", run.describe()));
    assert_eq!((n, m), (FLEET, FLEET), "{}", run.describe());
    eprintln!("all good: {n}/{m} hosts switched within {spread} ms (as the client saw it)");

    // The next deploy, with --json: the same, per host, as one document on stdout.
    f.write("index.html", "<h1>v2</h1>\n");
    let run = f.cutover(&["deploy", "--json"]);
    run.expect_code(0, "second deploy, --json");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e})\n{}", run.describe()));
    let id2 = f.hosts[0].app.current_id().unwrap();
    assert_ne!(id2, id);
    assert_eq!(doc["status"], "live", "{doc:#}");
    assert_eq!(doc["release"], id2.as_str(), "{doc:#}");
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), FLEET);
    for (h, j) in f.hosts.iter().zip(hosts) {
        assert_eq!(j["host"], h.label.as_str(), "{j:#}");
        assert_eq!(j["status"], "live", "{j:#}");
        assert_eq!(j["release"], id2.as_str(), "{j:#}");
        assert_eq!(j["previous"], id.as_str(), "{j:#}");
        assert_eq!(j["uploaded"], 1, "{j:#}");
        assert!(j["rtt_ms"].as_f64().is_some(), "{j:#}");
        assert_eq!(h.app.current_id().as_deref(), Some(id2.as_str()));
        h.app.assert_release_is(&f.src, &id2, &[]);
        assert_eq!(
            h.sshd.exec_sessions(),
            2,
            "{}: one exec per deploy",
            h.label
        );
    }
    f.assert_clean("after the second deploy");
    f.assert_nothing_left_running("after the second deploy");
}

// --- one bad host among twenty -------------------------------------------------------------------

/// The host that goes wrong in the one-bad-host cases: one in the middle of the fleet.
const BAD: &str = "web07";

/// Twenty hosts on release v1, and v2 written into the source: where each one-bad-host case
/// starts.
struct OnV1 {
    f: Fleet,
    v1: String,
    /// The tree of release v1, as deployed.
    tree: Tree,
}

fn twenty_on_v1() -> Option<OnV1> {
    let f = Fleet::start(FLEET)?;
    write_site(&f, "v1");
    let v1 = f.deploy();
    let tree = snapshot(&f.hosts[0].app.release_dir(&v1));
    write_site(&f, "v2");
    Some(OnV1 { f, v1, tree })
}

impl OnV1 {
    /// What a deploy that failed before the switch must leave: exit 1, every host still on v1,
    /// byte for byte, with no other release; nothing reported live; no lock (but
    /// `foreign_lock`'s, which was not this deploy's), no staging, no partial release anywhere;
    /// and the error names the bad host.
    fn assert_every_host_untouched(&self, run: &Run, foreign_lock: Option<&str>) {
        let v1 = self.v1.as_str();
        run.expect_code(1, "a fleet deploy with one bad host");
        assert!(
            run.stderr.contains(BAD),
            "the error names the bad host\n{}",
            run.describe()
        );
        assert!(
            run.stderr.contains("1 of 20 hosts failed"),
            "says how many hosts failed\n{}",
            run.describe()
        );
        assert!(
            !run.stdout.contains(" is live") && !run.stderr.contains("current -> "),
            "nothing switched\n{}",
            run.describe()
        );
        for h in &self.f.hosts {
            let context = format!("{} after the failed deploy", h.label);
            assert_eq!(
                h.app.current_id().as_deref(),
                Some(v1),
                "{context}: current unchanged\n{}",
                run.describe()
            );
            assert_eq!(h.app.releases(), [v1], "{context}: no other release");
            assert_eq!(h.app.manifests(), [v1], "{context}: no other manifest");
            assert_trees_equal(&self.tree, &snapshot(&h.app.release_dir(v1)), &context);
            if foreign_lock == Some(h.label.as_str()) {
                assert!(h.app.lock_exists(), "{context}: someone else's lock stays");
                assert!(h.app.staging_leftovers().is_empty(), "{context}: staging");
                assert!(h.app.leftovers().is_empty(), "{context}: partial release");
            } else {
                h.app.assert_clean(&context);
            }
        }
        self.f
            .assert_nothing_left_running("after the failed deploy");
    }

    /// The deploy after the fault is gone works on every host.
    fn assert_next_deploy_works(&self) {
        let v2 = self.f.deploy();
        for h in &self.f.hosts {
            h.app.assert_release_is(&self.f.src, &v2, &[]);
        }
        self.f
            .assert_clean("after the deploy that followed the fault");
        self.f
            .assert_nothing_left_running("after the deploy that followed the fault");
    }
}

/// web07 no longer accepts our key: the deploy stops at the connection, before any host is
/// locked or runs anything.
#[test]
fn one_host_refusing_the_key_changes_no_host() {
    let _turn = turn();
    let Some(case) = twenty_on_v1() else { return };
    let bad = case.f.host(BAD);
    let keys = bad.sshd.dir.path().join("authorized_keys");
    let authorized = fs::read(&keys).unwrap();
    fs::write(&keys, "").unwrap();
    let execs: Vec<usize> = case
        .f
        .hosts
        .iter()
        .map(|h| h.sshd.exec_sessions())
        .collect();

    let run = case.f.cutover(&["deploy"]);
    case.assert_every_host_untouched(&run, None);
    assert!(
        run.stderr.contains("authentication") || run.stderr.contains("auth"),
        "says the login failed\n{}",
        run.describe()
    );
    let after: Vec<usize> = case
        .f
        .hosts
        .iter()
        .map(|h| h.sshd.exec_sessions())
        .collect();
    assert_eq!(execs, after, "no host ran anything");

    fs::write(&keys, authorized).unwrap();
    case.assert_next_deploy_works();
}

/// web07 is locked by a deploy from elsewhere: every host that was locked gives its lock back;
/// web07's lock, not ours, stays as it was.
#[test]
fn one_host_locked_by_another_deploy_changes_no_host() {
    let _turn = turn();
    let Some(case) = twenty_on_v1() else { return };
    let bad = case.f.host(BAD);
    let info = "holder=ci@elsewhere\npid=4242\nstarted=2026-01-01T00:00:00Z\ncommand=cutover deploy\ntoken=0123456789abcdef0123456789abcdef\n";
    write_file(&bad.app.at(".cutover/lock/info"), info.as_bytes(), 0o644);

    let run = case.f.cutover(&["deploy"]);
    case.assert_every_host_untouched(&run, Some(BAD));
    for needle in [
        "locked by another deploy",
        "ci@elsewhere",
        "cutover unlock t",
    ] {
        assert!(
            run.stderr.contains(needle),
            "names {needle:?}\n{}",
            run.describe()
        );
    }
    assert_eq!(
        fs::read_to_string(bad.app.at(".cutover/lock/info")).unwrap(),
        info,
        "the other deploy's lock is left as it was"
    );

    let unlock = case.f.cutover(&["--host", BAD, "unlock"]);
    unlock.expect_code(0, "unlock web07");
    case.assert_next_deploy_works();
}

/// web07's deploy path is a file system too small for a copy of its live release: its script
/// fails while the others wait at the barrier; they are called off and remove what they built.
#[test]
fn one_host_with_a_full_disk_changes_no_host() {
    let _turn = turn();
    if !common::fixtures::root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some(f) = Fleet::start(FLEET) else { return };
    // Room for the first deploy (its archive and the unpacked tree: 2 x 2 MB), then not for a
    // second copy of the release.
    let disk = common::Tmpfs::mount(&f.host(BAD).app.path, "6m");
    write_site(&f, "v1");
    f.write("assets/video.bin", noise(11, 2 * 1024 * 1024));
    let v1 = f.deploy();
    let tree = snapshot(&f.hosts[0].app.release_dir(&v1));
    write_site(&f, "v2");
    disk.resize("3m");
    let case = OnV1 { f, v1, tree };

    let run = case.f.cutover(&["deploy"]);
    case.assert_every_host_untouched(&run, None);
    assert!(
        run.stderr.contains("no space left"),
        "says the disk is full\n{}",
        run.describe()
    );

    disk.resize("16m");
    case.assert_next_deploy_works();
    drop(disk);
}

/// web07's before_swap hook fails: every host was built and is waiting at the barrier or
/// building; all are called off.
#[test]
fn one_host_failing_its_before_swap_hook_changes_no_host() {
    let _turn = turn();
    let Some(mut case) = twenty_on_v1() else {
        return;
    };
    case.f.configure(
        "[hooks]\nbefore_swap = ['test ! -e \"$CUTOVER_DEPLOY_PATH/../fail-before-swap\"']\n",
        "",
    );
    let marker = case.f.host(BAD).marker("fail-before-swap");
    fs::write(&marker, "").unwrap();

    let run = case.f.cutover(&["deploy"]);
    case.assert_every_host_untouched(&run, None);
    assert!(
        run.stderr.contains("before_swap hook failed"),
        "names the hook\n{}",
        run.describe()
    );

    fs::remove_file(&marker).unwrap();
    case.assert_next_deploy_works();
}

/// web07's SSH connection is killed while it uploads (its link is slow, so its upload is still
/// under way when the others are ready): every host is called off; web07's script, which sees
/// its input end, removes what it built by itself.
#[test]
fn one_host_losing_its_connection_during_the_upload_changes_no_host() {
    let _turn = turn();
    let Some(mut case) = twenty_on_v1() else {
        return;
    };
    // 3 MB at 1 MB/s for web07; the others take it at loopback speed.
    case.f.write("assets/video.bin", noise(12, 3 * 1024 * 1024));
    case.f.proxy_host(
        BAD,
        common::proxy::Link {
            delay: Duration::ZERO,
            rate: Some(1024 * 1024),
        },
    );
    let bad = case.f.host(BAD);

    let running = case.f.spawn(&["deploy"]);
    bad.app.wait_for_upload(256 * 1024);
    bad.app.wait_for_script();
    bad.sshd.kill_sessions();
    let run = running.wait();
    // web07's script stops by itself once it sees its input end.
    bad.app.wait_until_clean();
    case.assert_every_host_untouched(&run, None);
    assert!(
        run.stderr.contains("connection") && run.stderr.contains("was lost"),
        "says the connection was lost\n{}",
        run.describe()
    );

    case.assert_next_deploy_works();
}

// --- a client killed at the worst moments --------------------------------------------------------

/// Hosts in the cases below: enough to be a fleet, few enough to keep the test short.
const SMALL_FLEET: usize = 6;

/// A hook that says it runs (`NAME` beside the deploy path), then waits for the test's `go-on`
/// there (at most 60 s): a deterministic moment in the deploy, on every host.
fn gate_hook(name: &str) -> String {
    format!(
        "touch \"$CUTOVER_DEPLOY_PATH/../{name}\"; n=0; while [ ! -e \"$CUTOVER_DEPLOY_PATH/../go-on\" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done"
    )
}

/// Waits until the marker `name` exists beside every host's deploy path.
fn wait_for_every_host(f: &Fleet, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f.hosts.iter().all(|h| h.marker(name).exists()) {
        assert!(
            Instant::now() < deadline,
            "not every host got to {name}: {:?}",
            f.hosts
                .iter()
                .filter(|h| !h.marker(name).exists())
                .map(|h| &h.label)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open_gates(f: &Fleet) {
    for h in &f.hosts {
        fs::write(h.marker("go-on"), "").unwrap();
    }
}

/// The client is killed (SIGKILL: nothing of it runs any more) while every host runs its
/// before_swap hook, the release built but not switched: each host's script sees its client
/// gone at its next wait, removes what it built and its staging, and releases the lock.
#[test]
fn client_killed_while_hosts_prepare_leaves_every_host_to_clean_up_by_itself() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(SMALL_FLEET) else {
        return;
    };
    write_site(&f, "v1");
    let v1 = f.deploy();
    f.configure(
        &format!(
            "barrier_timeout = 5\n[hooks]\nbefore_swap = [{}]\n",
            toml_str(&gate_hook("preparing"))
        ),
        "",
    );
    write_site(&f, "v2");
    let mut running = f.spawn(&["deploy"]);
    wait_for_every_host(&f, "preparing");
    running.signal("KILL");
    let _ = running.child.wait();
    open_gates(&f);
    assert_every_host_back_on(&f, &v1);
    f.assert_clean("after the client was killed while the hosts prepared");
    f.assert_nothing_left_running("after the client was killed while the hosts prepared");
}

/// The client is killed after `go`, before `commit`: every host has switched and runs its
/// verify hook. Each host's script sees its client gone when the hook ends and switches back by
/// itself, within barrier_timeout.
#[test]
fn client_killed_after_go_leaves_every_host_to_switch_back_by_itself() {
    let _turn = turn();
    let barrier_timeout = 5;
    let Some((f, v1, mut running)) = every_host_switched_and_verifying(barrier_timeout) else {
        return;
    };
    running.signal("KILL");
    let _ = running.child.wait();
    let killed = Instant::now();
    open_gates(&f);
    let back = wait_until_every_host_is_on(&f, &v1, Duration::from_secs(barrier_timeout));
    eprintln!(
        "client killed after go: every host back on its previous release {:.0} ms after the kill (barrier_timeout {barrier_timeout} s)",
        back.duration_since(killed).as_secs_f64() * 1000.0
    );
    assert_every_host_back_on(&f, &v1);
    f.assert_nothing_left_running("after the client was killed after go");
}

/// The client stops answering after `go` (SIGSTOP: its connections stay open, so no host sees
/// its input end): every host's watchdog ends the wait for `commit` after barrier_timeout
/// seconds and switches back.
#[test]
fn client_frozen_after_go_leaves_every_host_to_switch_back_after_barrier_timeout() {
    let _turn = turn();
    let barrier_timeout = 3;
    let Some((f, v1, mut running)) = every_host_switched_and_verifying(barrier_timeout) else {
        return;
    };
    running.signal("STOP");
    open_gates(&f);
    let opened = Instant::now();
    // The watchdog counts whole seconds, one `sleep 1` at a time: allow a second for that, and
    // two for twenty hosts' switch back on a loaded machine (the bound that matters is the
    // lower one, below).
    let back = wait_until_every_host_is_on(&f, &v1, Duration::from_secs(barrier_timeout + 3));
    let took = back.duration_since(opened);
    eprintln!(
        "client frozen after go: every host back on its previous release {:.0} ms after its wait for commit began (barrier_timeout {barrier_timeout} s)",
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took >= Duration::from_secs(barrier_timeout - 1),
        "the hosts waited for the client (barrier_timeout {barrier_timeout} s), took {took:?}"
    );
    running.signal("KILL");
    let _ = running.child.wait();
    assert_every_host_back_on(&f, &v1);
    f.assert_nothing_left_running("after the frozen client");
}

/// A fleet on v1 deploying v2 with `barrier_timeout` and a verify hook held at its gate: every
/// host has switched to v2 and waits in the hook. (The fleet, v1's ID, the running deploy.)
fn every_host_switched_and_verifying(barrier_timeout: u64) -> Option<(Fleet, String, Running)> {
    let mut f = Fleet::start(SMALL_FLEET)?;
    write_site(&f, "v1");
    let v1 = f.deploy();
    f.configure(
        &format!(
            "barrier_timeout = {barrier_timeout}\n[hooks]\nverify = [{}]\n",
            toml_str(&gate_hook("verifying"))
        ),
        "",
    );
    write_site(&f, "v2");
    let running = f.spawn(&["deploy"]);
    wait_for_every_host(&f, "verifying");
    let v2 = f.hosts[0].app.current_id().unwrap();
    assert_ne!(v2, v1);
    for h in &f.hosts {
        assert_eq!(
            h.app.current_id(),
            Some(v2.clone()),
            "{}: switched",
            h.label
        );
    }
    Some((f, v1, running))
}

/// Once every host's script is done: each is on `v1` again, its only release, the new one gone.
fn assert_every_host_back_on(f: &Fleet, v1: &str) {
    for h in &f.hosts {
        h.app.wait_until_clean();
        assert_eq!(h.app.current_id().as_deref(), Some(v1), "{}", h.label);
        assert_eq!(
            h.app.releases(),
            [v1],
            "{}: the new release is gone",
            h.label
        );
    }
}

/// Waits until every host's `current` is `id` again (failing after `limit`); when it was.
fn wait_until_every_host_is_on(f: &Fleet, id: &str, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if f.hosts
            .iter()
            .all(|h| h.app.current_id().as_deref() == Some(id))
        {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "not every host is back on {id} after {limit:?}: {:?}",
            f.currents()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// --- a verify hook failing on one host -----------------------------------------------------------

/// The ctime of `current` (the symlink itself): when it was last renamed into place.
fn current_ctime(app: &DeployPath) -> f64 {
    let md = fs::symlink_metadata(app.at("current")).unwrap();
    md.ctime() as f64 + md.ctime_nsec() as f64 / 1e9
}

/// Twenty hosts switch; web07's verify hook fails: every host switches back to its previous
/// release and the new release is removed everywhere; exit 1 naming web07. The mixed-version
/// window (from the first host's switch to the last host's switch back, by the ctimes of
/// `current`) is printed.
#[test]
fn verify_failing_on_one_of_twenty_switches_every_host_back() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(FLEET) else {
        return;
    };
    write_site(&f, "v1");
    let v1 = f.deploy();
    let tree = snapshot(&f.hosts[0].app.release_dir(&v1));
    // The hook notes when `current` was switched (its ctime, before anything can switch it
    // back), then fails where the test left `fail-verify`.
    f.configure(
        "[hooks]\nverify = ['stat -c %.9Z \"$CUTOVER_DEPLOY_PATH/current\" > \"$CUTOVER_DEPLOY_PATH/../switched-at\"', 'test ! -e \"$CUTOVER_DEPLOY_PATH/../fail-verify\"']\n",
        "",
    );
    fs::write(f.host(BAD).marker("fail-verify"), "").unwrap();
    write_site(&f, "v2");

    let run = f.cutover(&["deploy"]);
    run.expect_code(1, "a deploy whose verify hook fails on one host");
    for needle in [BAD, "verify hook failed", "back on its previous release"] {
        assert!(
            run.stderr.contains(needle),
            "names {needle:?}\n{}",
            run.describe()
        );
    }
    let mut switched = Vec::new();
    let mut back = Vec::new();
    for h in &f.hosts {
        assert_eq!(
            h.app.current_id().as_deref(),
            Some(v1.as_str()),
            "{}: back on the previous release\n{}",
            h.label,
            run.describe()
        );
        assert_eq!(
            h.app.releases(),
            [v1.as_str()],
            "{}: the new release is removed",
            h.label
        );
        assert_trees_equal(&tree, &snapshot(&h.app.release_dir(&v1)), &h.label);
        h.app.assert_clean(&h.label);
        let at = fs::read_to_string(h.marker("switched-at")).unwrap_or_else(|e| {
            panic!(
                "{}: every host switched before any switched back ({e})",
                h.label
            )
        });
        switched.push(at.trim().parse::<f64>().unwrap());
        back.push(current_ctime(&h.app));
    }
    f.assert_nothing_left_running("after the switch back");
    let first = switched.iter().cloned().fold(f64::INFINITY, f64::min);
    let last_switch = switched.iter().cloned().fold(0.0, f64::max);
    let last_back = back.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "verify failed on {BAD} of {FLEET}: mixed-version window {:.0} ms (first switch to last switch back; the switches themselves spread over {:.0} ms)",
        (last_back - first) * 1000.0,
        (last_switch - first) * 1000.0
    );
    let json = f.cutover(&["releases", "--json"]);
    json.expect_code(0, "releases after the switch back");
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["in_sync"], true, "{doc:#}");
}

// --- skew -----------------------------------------------------------------------------------------

/// Hosts at three distances: two on the loopback, two 10 ms away and two 25 ms away (one way).
/// `go` reaches each host one one-way delay after it left the client, so the `current` renames
/// (the ctime of each host's `current`) spread over about the largest one-way delay; the promise
/// is the largest round trip + 20 ms. Three deploys; the spreads are printed.
#[test]
fn hosts_at_different_distances_switch_within_the_largest_rtt_plus_20_ms() {
    let _alone = alone();
    let ms = Duration::from_millis;
    let delays = [ms(0), ms(0), ms(10), ms(10), ms(25), ms(25)];
    let Some(f) = Fleet::start_with_delays(&delays) else {
        return;
    };
    let largest_rtt = 2.0 * 25.0;
    let bound = largest_rtt + 20.0;
    write_site(&f, "v0");
    f.deploy();
    for round in 1..=3 {
        write_site(&f, &format!("v{round}"));
        let run = f.cutover(&["deploy"]);
        run.expect_code(0, "deploy to hosts at different distances");
        let ctimes: Vec<f64> = f.hosts.iter().map(|h| current_ctime(&h.app)).collect();
        let first = ctimes.iter().cloned().fold(f64::INFINITY, f64::min);
        let spread = (ctimes.iter().cloned().fold(0.0, f64::max) - first) * 1000.0;
        let per_host: Vec<String> = f
            .hosts
            .iter()
            .zip(&ctimes)
            .map(|(h, t)| {
                format!(
                    "{} (+{} ms one way) at +{:.1} ms",
                    h.label,
                    h.one_way.as_millis(),
                    (t - first) * 1000.0
                )
            })
            .collect();
        let reported = switched_within(&run.stdout).map(|(_, _, s)| s);
        eprintln!(
            "skew, deploy {round}: current renamed on every host within {spread:.1} ms (bound {bound} ms; cutover reported {reported:?} ms): {}",
            per_host.join(", ")
        );
        assert!(
            spread <= bound,
            "the renames spread over {spread:.1} ms, more than the largest RTT + 20 ms ({bound} ms): {per_host:?}\n{}",
            run.describe()
        );
    }
}

// --- a fleet left split -------------------------------------------------------------------------------

/// After `go`, web03's verify hook fails, and web05 cannot switch back (its deploy path is made
/// immutable while its verify hook runs): the fleet ends split. Exit 4; every host's state is
/// printed, web05 still on the new release, with the exact command that brings it back; run
/// once the directory is writable again, the command printed for the whole fleet brings every
/// host to one release.
/// The host that cannot switch back.
const STUCK: &str = "web05";

#[test]
fn a_host_that_cannot_switch_back_leaves_the_fleet_split_exit_4_with_the_command_that_joins_it() {
    let _turn = turn();
    if !common::fixtures::root_or_skip("chattr +i") {
        return;
    }
    let Some(mut f) = Fleet::start(SMALL_FLEET) else {
        return;
    };
    write_site(&f, "v1");
    let v1 = f.deploy();
    f.configure(
        &format!(
            "[hooks]\nverify = [{}, 'test ! -e \"$CUTOVER_DEPLOY_PATH/../fail-verify\"']\n",
            toml_str(&gate_hook("verifying"))
        ),
        "",
    );
    fs::write(f.host("web03").marker("fail-verify"), "").unwrap();
    write_site(&f, "v2");
    let running = f.spawn(&["deploy"]);
    wait_for_every_host(&f, "verifying");
    let v2 = f.host(STUCK).app.current_id().unwrap();
    let Some(stuck) = common::Immutable::set(&f.host(STUCK).app.path) else {
        eprintln!("skipping: this file system has no immutable flag");
        return;
    };
    open_gates(&f);
    let run = running.wait();
    run.expect_code(4, "a fleet one host of which could not switch back");
    assert!(
        run.stdout.contains(&format!(
            "{SMALL_FLEET}/{SMALL_FLEET} hosts switched within"
        )) && run
            .stdout
            .contains("then 5 switched back and 1 may not have"),
        "the summary says how the switch was undone\n{}",
        run.describe()
    );
    let fix = format!("cutover rollback t --host {STUCK} --to {v1}");
    let join = format!("cutover rollback t --to {v1}");
    for needle in [
        "may be split",
        &format!("{STUCK}: unknown, still on {v2}: its script could not switch current back"),
        &fix,
        &join,
    ] {
        assert!(
            run.stderr.contains(needle),
            "says {needle:?}\n{}",
            run.describe()
        );
    }
    for h in &f.hosts {
        let expected = if h.label == STUCK { &v2 } else { &v1 };
        assert_eq!(h.app.current_id().as_ref(), Some(expected), "{}", h.label);
        if h.label != STUCK {
            assert!(
                run.stderr
                    .contains(&format!("{}: reverted, on {v1}", h.label)),
                "{}'s state\n{}",
                h.label,
                run.describe()
            );
        }
    }
    let drift = f.cutover(&["releases"]);
    assert!(
        drift.stderr.contains("NOT on the same release"),
        "releases flags the split\n{}",
        drift.describe()
    );

    drop(stuck);
    let args: Vec<&str> = join.split(' ').skip(1).collect();
    f.cutover(&args).expect_code(0, &join);
    for h in &f.hosts {
        assert_eq!(
            h.app.current_id().as_deref(),
            Some(v1.as_str()),
            "{}",
            h.label
        );
    }
    f.assert_clean("after the fleet was joined again");
}

/// After `go`, web05's connection is killed while every host runs its verify hook: the client
/// cannot tell web05 to switch back, nor see it do so. It switches every other host back and
/// exits 4, naming web05's state as unknown and the command that joins the fleet; web05's
/// script, which sees its client gone, switches back by itself, and the command then finds every
/// host on the previous release already.
#[test]
fn a_host_lost_after_go_leaves_the_fleet_split_exit_4_until_it_switches_back_by_itself() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(SMALL_FLEET) else {
        return;
    };
    write_site(&f, "v1");
    let v1 = f.deploy();
    f.configure(
        &format!(
            "barrier_timeout = 5\n[hooks]\nverify = [{}]\n",
            toml_str(&gate_hook("verifying"))
        ),
        "",
    );
    write_site(&f, "v2");
    let running = f.spawn(&["deploy"]);
    wait_for_every_host(&f, "verifying");
    f.host(STUCK).sshd.kill_sessions();
    // The others switch back once their verify hooks end; web05 too, by itself.
    open_gates(&f);
    let run = running.wait();
    run.expect_code(4, "a fleet that lost a host after go");
    let join = format!("cutover rollback t --to {v1}");
    for needle in [
        &format!("{STUCK}: unknown"),
        "was lost",
        &format!("cutover rollback t --host {STUCK} --to {v1}"),
        &join,
    ] {
        assert!(
            run.stderr.contains(needle),
            "says {needle:?}\n{}",
            run.describe()
        );
    }
    wait_until_every_host_is_on(&f, &v1, Duration::from_secs(10));
    f.host(STUCK).app.wait_until_clean();
    let args: Vec<&str> = join.split(' ').skip(1).collect();
    let joined = f.cutover(&args);
    joined.expect_code(0, &join);
    assert!(
        joined
            .stdout
            .contains(&format!("release {v1} is already current")),
        "{}",
        joined.describe()
    );
    f.assert_clean("after the lost host switched back by itself");
    f.assert_nothing_left_running("after the lost host switched back by itself");
}

// --- --host, releases, rollback --------------------------------------------------------------------

/// `--host web02` deploys to web02 alone and says so loudly (its lines still named `[web02]`);
/// the other hosts are not even connected to. `releases` then flags that the hosts are not on
/// the same release (in --json too), and a deploy to the whole fleet brings them together again.
#[test]
fn host_flag_narrows_a_deploy_to_one_host_and_releases_flags_the_drift() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(4) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    write_site(&f, "v2");
    let logins: Vec<usize> = f
        .hosts
        .iter()
        .map(|h| h.sshd.count_log("Accepted publickey"))
        .collect();

    let run = f.cutover(&["--host", "web02", "deploy"]);
    run.expect_code(0, "deploy --host web02");
    assert!(
        run.stderr.contains(
            "--host web02: deploying to ONE host of target t (4 hosts); the other 3 hosts are left as they are"
        ),
        "says so loudly\n{}",
        run.describe()
    );
    let v2 = f.host("web02").app.current_id().unwrap();
    assert_ne!(v2, v1);
    // A fleet's lines name their host, narrowed to one or not.
    let live = format!("[web02] t: release {v2} is live: ");
    assert!(run.stdout.contains(&live), "{live:?}\n{}", run.describe());
    for (h, before) in f.hosts.iter().zip(&logins) {
        let logins = h.sshd.count_log("Accepted publickey");
        if h.label == "web02" {
            assert_eq!(logins, before + 1, "web02 was deployed to");
        } else {
            assert_eq!(
                h.app.current_id().as_deref(),
                Some(v1.as_str()),
                "{}",
                h.label
            );
            assert_eq!(logins, *before, "{} was not even connected to", h.label);
        }
    }

    let listing = f.cutover(&["releases"]);
    listing.expect_code(0, "releases of a drifted fleet");
    assert!(
        listing.stderr.contains("NOT on the same release")
            && listing.stderr.contains(&format!("web01 on {v1}"))
            && listing.stderr.contains(&format!("web02 on {v2}")),
        "flags the drift, host by host\n{}",
        listing.describe()
    );
    assert!(
        listing.stdout.lines().any(|l| l.starts_with(&v2)
            && l.contains("current on web02")
            && l.contains("missing on 3 hosts")),
        "the new release: where it is current, where it is missing\n{}",
        listing.describe()
    );
    let json = f.cutover(&["releases", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["in_sync"], false, "{doc:#}");
    assert_eq!(doc["hosts"][1]["current"], v2.as_str(), "{doc:#}");

    let one = f.cutover(&["--host", "web02", "releases"]);
    one.expect_code(0, "releases --host web02");
    assert!(
        one.stderr
            .contains("--host web02: listing the releases of ONE host"),
        "{}",
        one.describe()
    );

    let wrong = f.cutover(&["--host", "web09", "deploy"]);
    wrong.expect_code(2, "--host naming no host of the target");
    assert!(
        wrong.stderr.contains("web01, web02, web03, web04"),
        "lists the target's hosts\n{}",
        wrong.describe()
    );

    // web02 has v2's tree live already, the others do not: all four get one new release.
    let v3 = f.deploy();
    assert!(v3 > v2);
    let listing = f.cutover(&["releases"]);
    assert!(
        !listing.stderr.contains("NOT on the same release"),
        "{}",
        listing.describe()
    );

    // Every host has the tree live: nothing changes anywhere, no lock is taken.
    let before: Vec<Vec<String>> = f.hosts.iter().map(|h| h.app.releases()).collect();
    let again = f.cutover(&["deploy", "-v"]);
    again.expect_code(0, "fleet deploy of the live tree");
    assert_eq!(
        again.stderr.matches("holds this tree already").count(),
        4,
        "{}",
        again.describe()
    );
    assert!(
        again.stdout.contains("nothing changed"),
        "{}",
        again.describe()
    );
    for (h, before) in f.hosts.iter().zip(before) {
        assert_eq!(
            h.app.current_id().as_deref(),
            Some(v3.as_str()),
            "{}",
            h.label
        );
        assert_eq!(h.app.releases(), before, "{}: no release built", h.label);
        assert!(!h.app.lock_exists(), "{}", h.label);
    }
    f.only(None);
}

/// A fleet rollback goes through the same barrier as a deploy, to the newest release every
/// host has: web03 never got v2, so the fleet on v3 goes back to v1. One exec per host. `--to`
/// takes every host to the named release; a release one host lacks is refused before anything
/// moves; `--host` rolls back one host, loudly.
#[test]
fn fleet_rollback_takes_every_host_to_the_newest_release_they_all_have() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(4) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    f.only(Some(&["web01", "web02", "web04"]));
    write_site(&f, "v2");
    let v2 = f.deploy();
    f.only(None);
    write_site(&f, "v3");
    let v3 = f.deploy();
    let execs: Vec<usize> = f.hosts.iter().map(|h| h.sshd.exec_sessions()).collect();

    let run = f.cutover(&["rollback"]);
    run.expect_code(0, "fleet rollback");
    for (h, before) in f.hosts.iter().zip(&execs) {
        assert_eq!(
            h.app.current_id().as_deref(),
            Some(v1.as_str()),
            "{}\n{}",
            h.label,
            run.describe()
        );
        assert_eq!(h.sshd.exec_sessions(), before + 1, "{}: one exec", h.label);
        let line = format!(
            "[{}] t: rolled back: current -> releases/{v1} (was {v3})",
            h.label
        );
        assert!(run.stdout.contains(&line), "{line:?}\n{}", run.describe());
    }
    assert!(
        switched_within(&run.stdout).is_some_and(|(n, m, _)| n == 4 && m == 4),
        "{}",
        run.describe()
    );

    let refused = f.cutover(&["rollback", "--to", &v2]);
    refused.expect_code(1, "rollback to a release web03 does not have");
    assert!(
        refused.stderr.contains("web03") && refused.stderr.contains(&v2),
        "{}",
        refused.describe()
    );
    assert_eq!(f.currents(), vec![Some(v1.clone()); 4], "nothing moved");

    f.cutover(&["rollback", "--to", &v3])
        .expect_code(0, "rollback --to v3");
    assert_eq!(f.currents(), vec![Some(v3.clone()); 4]);

    let one = f.cutover(&["--host", "web01", "rollback"]);
    one.expect_code(0, "rollback --host web01");
    assert!(
        one.stderr
            .contains("--host web01: rolling back ONE host of target t (4 hosts)"),
        "{}",
        one.describe()
    );
    assert_eq!(
        f.currents(),
        vec![
            Some(v2.clone()),
            Some(v3.clone()),
            Some(v3.clone()),
            Some(v3.clone())
        ]
    );
    f.assert_clean("after the rollbacks");
    f.assert_nothing_left_running("after the rollbacks");
}

/// One host of the fleet is locked by a deploy from elsewhere: the rollback is refused before
/// any host moves (every host prepares, then all switch or none does).
#[test]
fn fleet_rollback_with_one_host_locked_moves_no_host() {
    let _turn = turn();
    let Some(f) = Fleet::start(4) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    write_site(&f, "v2");
    let v2 = f.deploy();
    let info = "holder=ci@elsewhere\npid=1\nstarted=2026-01-01T00:00:00Z\ncommand=cutover deploy\ntoken=x\n";
    write_file(
        &f.host("web03").app.at(".cutover/lock/info"),
        info.as_bytes(),
        0o644,
    );

    let run = f.cutover(&["rollback"]);
    run.expect_code(1, "rollback with one host locked");
    assert!(
        run.stderr.contains("web03") && run.stderr.contains("locked"),
        "{}",
        run.describe()
    );
    assert_eq!(
        f.currents(),
        vec![Some(v2.clone()); 4],
        "no host moved\n{}",
        run.describe()
    );
    for h in &f.hosts {
        if h.label != "web03" {
            h.app.assert_clean(&h.label);
        }
    }
    fs::remove_dir_all(f.host("web03").app.at(".cutover/lock")).unwrap();
    f.cutover(&["rollback"])
        .expect_code(0, "rollback once the lock is gone");
    assert_eq!(f.currents(), vec![Some(v1.clone()); 4]);
}

/// One host cannot be reached (it refuses the key): the rollback moves no host, and the host
/// is in the table and in `--json` with its error (it was left out of both); `--to` a release
/// that two hosts lack names both.
#[test]
fn fleet_rollback_with_one_host_unreachable_reports_it() {
    let _turn = turn();
    let Some(f) = Fleet::start(3) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    write_site(&f, "v2");
    let v2 = f.deploy();
    let keys = f.host("web02").sshd.dir.path().join("authorized_keys");
    let authorized = fs::read(&keys).unwrap();
    fs::write(&keys, "").unwrap();

    let run = f.cutover(&["rollback", "--json"]);
    run.expect_code(1, "rollback with one host unreachable");
    assert_eq!(
        f.currents(),
        vec![Some(v2.clone()); 3],
        "{}",
        run.describe()
    );
    let hosts = run.stdout.matches("\"host\":").count();
    assert_eq!(hosts, 3, "every host in the JSON\n{}", run.describe());
    assert!(
        run.stdout.contains("\"web02\"") && run.stdout.contains("auth"),
        "web02 and its error in the JSON\n{}",
        run.describe()
    );
    let run = f.cutover(&["rollback"]);
    run.expect_code(1, "rollback with one host unreachable (table)");
    assert!(
        run.stdout
            .lines()
            .chain(run.stderr.lines())
            .any(|l| l.contains("web02") && l.contains("failed")),
        "web02 in the table\n{}",
        run.describe()
    );
    fs::write(&keys, authorized).unwrap();

    // A release two hosts lack: both named.
    for h in ["web01", "web03"] {
        fs::remove_dir_all(f.host(h).app.at(format!("releases/{v1}"))).unwrap();
        fs::remove_file(f.host(h).app.at(format!(".cutover/manifests/{v1}"))).unwrap();
    }
    let run = f.cutover(&["rollback", "--to", &v1]);
    run.expect_code(1, "rollback --to a release two hosts lack");
    for h in ["web01", "web03"] {
        assert!(run.stderr.contains(h), "{h} named\n{}", run.describe());
    }
    assert_eq!(f.currents(), vec![Some(v2.clone()); 3]);
}

// --- duplicates -------------------------------------------------------------------------------------

/// One server listed twice is refused, whatever the command: as written (by the config), under
/// two names of the ssh config (once it is read), both before anything is sent (exit 2); and
/// when the two entries reach it by ways no config can tell apart (here through a proxy in front
/// of the same sshd), the deploy finds, through the second entry, the lock it took through the
/// first: it says so, gives its locks back and changes nothing (exit 2).
#[test]
fn a_server_listed_twice_is_refused_and_changes_nothing() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(3) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    write_site(&f, "v2");
    let logins = |f: &Fleet| -> Vec<usize> {
        f.hosts
            .iter()
            .map(|h| h.sshd.count_log("Accepted publickey"))
            .collect()
    };
    let before = logins(&f);

    f.add_alias("web01", "web01", false);
    for args in [&["deploy"][..], &["check"], &["releases"], &["rollback"]] {
        let run = f.cutover(args);
        run.expect_code(2, &format!("{args:?} with web01 listed twice"));
        assert!(
            run.stderr.contains("are the same server, user and path"),
            "{}",
            run.describe()
        );
    }
    f.clear_aliases();
    f.add_alias("web01b", "web01", false);
    for args in [&["deploy"][..], &["check"], &["releases"], &["rollback"]] {
        let run = f.cutover(args);
        run.expect_code(2, &format!("{args:?} with web01 also listed as web01b"));
        assert!(
            run.stderr
                .contains("hosts \"web01\" and \"web01b\" lead to the same server, user and path"),
            "{}",
            run.describe()
        );
    }
    assert_eq!(logins(&f), before, "nothing was sent to any host");

    f.clear_aliases();
    f.add_alias("web01p", "web01", true);
    let run = f.cutover(&["deploy"]);
    run.expect_code(
        2,
        "deploy with web01 also reached through a proxy as web01p",
    );
    assert!(
        run.stderr.contains("are one deploy path")
            && run.stderr.contains("web01")
            && run.stderr.contains("web01p"),
        "{}",
        run.describe()
    );
    assert_eq!(f.currents(), vec![Some(v1.clone()); 3]);
    f.assert_clean("after the deploy that found web01 twice");
    f.assert_nothing_left_running("after the deploy that found web01 twice");

    f.clear_aliases();
    f.deploy();
}

/// web02 has a release named an hour ahead of this machine's clock (its clock once ran ahead):
/// the fleet's next release is named after it, on every host. The other hosts had started
/// their uploads the moment each was surveyed, under the name this clock gives: those start
/// again under the fleet's name, and nothing of the first ones is left behind.
#[test]
fn a_host_with_a_newer_release_names_the_fleets_release_and_no_upload_is_left_behind() {
    let _turn = turn();
    let Some(f) = Fleet::start(3) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y%m%d%H%M%S")
        .to_string();
    let web02 = &f.host("web02").app;
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(web02.release_dir(&v1))
        .arg(web02.at(format!("releases/{ahead}")))
        .status()
        .unwrap();
    assert!(copied.success());
    fs::copy(
        web02.at(format!(".cutover/manifests/{v1}")),
        web02.at(format!(".cutover/manifests/{ahead}")),
    )
    .unwrap();

    write_site(&f, "v2");
    let run = f.cutover(&["deploy", "-v"]);
    run.expect_code(0, "deploy to a fleet with a host one hour ahead");
    let id = assert_every_host_live_on_one_release(&f, &run);
    assert!(id > ahead, "{id} comes after {ahead}\n{}", run.describe());
    assert_eq!(f.host("web01").app.releases(), [v1.clone(), id.clone()]);
    for (label, again) in [("web01", true), ("web02", false), ("web03", true)] {
        let said = run
            .stderr
            .lines()
            .any(|l| l.starts_with(&format!("[{label}]")) && l.contains("uploading again under"));
        assert_eq!(said, again, "{label}\n{}", run.describe());
    }
    f.assert_nothing_left_running("after the deploy");
    f.deploy();
}

/// An after_swap hook failing on one host comes after the commit: every host stays on the
/// new release (it is live everywhere, the fleet is not split), and the exit is 3 with the
/// message naming the host whose warnings to read, and no other.
#[test]
fn an_after_swap_hook_failing_on_one_host_leaves_the_fleet_live_and_names_that_host() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(3) else { return };
    f.configure(
        "[hooks]\nafter_swap = ['test ! -e \"$CUTOVER_DEPLOY_PATH/../fail-after-swap\"']\n",
        "",
    );
    fs::write(f.host("web02").marker("fail-after-swap"), "").unwrap();
    write_site(&f, "v1");
    let run = f.cutover(&["deploy"]);
    run.expect_code(3, "a deploy whose after_swap hook fails on web02");
    assert_every_host_live_on_one_release(&f, &run);
    let summary = run
        .stderr
        .lines()
        .find(|l| l.contains("an after_swap hook or the cleanup failed"))
        .unwrap_or_else(|| panic!("the after_swap failure is reported\n{}", run.describe()));
    assert!(
        summary.contains("on web02") && !summary.contains("web01") && !summary.contains("web03"),
        "names web02 alone: {summary}"
    );
    f.assert_nothing_left_running("after the deploy");
}

// --- check, verify, unlock ------------------------------------------------------------------------

/// `check`, `verify` and `unlock` act on every host, each line prefixed with its host: check
/// fails for the host whose lock is held and passes for the others (--json: one report per
/// host); unlock removes that lock; verify finds the one host whose live release was edited by
/// hand.
#[test]
fn check_verify_and_unlock_act_on_every_host() {
    let _turn = turn();
    let Some(f) = Fleet::start(4) else { return };
    write_site(&f, "v1");
    let v1 = f.deploy();
    let info = "holder=ci@elsewhere\npid=1\nstarted=2026-01-01T00:00:00Z\ncommand=cutover deploy\ntoken=x\n";
    write_file(
        &f.host("web03").app.at(".cutover/lock/info"),
        info.as_bytes(),
        0o644,
    );

    let check = f.cutover(&["check"]);
    check.expect_code(1, "check with web03 locked");
    for h in &f.hosts {
        let prefix = format!("[{}] ", h.label);
        let lines: Vec<&str> = check
            .stdout
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert!(
            lines.iter().any(|l| l.contains("✓ connect")),
            "{}: checked\n{}",
            h.label,
            check.describe()
        );
        let failed = lines.iter().any(|l| l.contains("✗"));
        assert_eq!(failed, h.label == "web03", "{}: {lines:#?}", h.label);
    }
    assert!(
        check.stderr.contains("web03: failed: lock"),
        "{}",
        check.describe()
    );
    let json = f.cutover(&["check", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["ready"], false, "{doc:#}");
    let ready: Vec<bool> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ready"] == true)
        .collect();
    assert_eq!(ready, [true, true, false, true], "{doc:#}");

    let unlock = f.cutover(&["unlock"]);
    unlock.expect_code(0, "unlock every host");
    assert!(
        unlock.stdout.contains("[web03] t: removed the lock")
            && unlock.stdout.contains("ci@elsewhere"),
        "{}",
        unlock.describe()
    );
    assert!(
        unlock.stdout.contains("[web01] t: not locked"),
        "{}",
        unlock.describe()
    );
    assert!(!f.host("web03").app.lock_exists());
    f.cutover(&["check"]).expect_code(0, "check once unlocked");

    f.cutover(&["verify", "--hash"])
        .expect_code(0, "verify an untouched fleet");
    write_file(
        &f.host("web02").app.release_dir(&v1).join("index.html"),
        b"<h1>edited by hand</h1>\n",
        0o644,
    );
    let verify = f.cutover(&["verify", "--hash"]);
    verify.expect_code(1, "verify with web02 edited by hand");
    assert!(
        verify.stdout.contains("[web02] modified  \"index.html\"")
            && verify.stdout.contains("[web02] t: release")
            && verify.stdout.contains("has drifted"),
        "{}",
        verify.describe()
    );
    for label in ["web01", "web03", "web04"] {
        assert!(
            verify
                .stdout
                .contains(&format!("[{label}] t: release {v1} matches its manifest")),
            "{}",
            verify.describe()
        );
    }
}

/// A host that stops waiting by itself (barrier_timeout) while another host's hooks still run:
/// the fleet never moves around it. Its `before_swap` hook outlasting the others' wait for
/// `go`: no host switches; its verify hook outlasting their wait for `commit`: every host goes
/// back. Both exit 1 naming the host that stopped waiting and barrier_timeout, nothing split.
#[test]
fn a_host_that_stops_waiting_by_itself_moves_no_host_and_splits_nothing() {
    let _turn = turn();
    let Some(mut f) = Fleet::start(3) else {
        return;
    };
    write_site(&f, "v1");
    let v1 = f.deploy();
    for (hook, word) in [("before_swap", "go"), ("verify", "commit")] {
        // web03's hook sleeps past the others' barrier_timeout; the others' ends at once.
        f.configure(
            &format!(
                "barrier_timeout = 1\n[hooks]\n{hook} = ['if [ -e \"$CUTOVER_DEPLOY_PATH/../slow\" ]; then sleep 3; fi']\n"
            ),
            "",
        );
        fs::write(f.host("web03").marker("slow"), "").unwrap();
        write_site(&f, &format!("v2 {hook}"));
        let run = f.cutover(&["deploy"]);
        run.expect_code(1, &format!("a {hook} hook outlasting barrier_timeout"));
        for needle in [
            format!("stopped waiting for `{word}`"),
            "barrier_timeout".to_string(),
        ] {
            assert!(run.stderr.contains(&needle), "{needle}\n{}", run.describe());
        }
        if hook == "before_swap" {
            // The host the others waited for is named as the cause (they were blamed).
            assert!(
                run.stderr
                    .lines()
                    .any(|l| l.contains("host web03") && l.contains("ready only after")),
                "{}",
                run.describe()
            );
        }
        for h in &f.hosts {
            assert_eq!(
                h.app.current_id().as_deref(),
                Some(v1.as_str()),
                "{}: on the previous release ({hook})\n{}",
                h.label,
                run.describe()
            );
            assert_eq!(h.app.releases(), [v1.as_str()], "{} ({hook})", h.label);
            h.app
                .assert_clean(&format!("{} after the {hook} case", h.label));
        }
        if hook == "before_swap" {
            assert!(
                !run.stderr.contains("] switched"),
                "no host switches when one stopped waiting for go\n{}",
                run.describe()
            );
        }
    }
}
