//! Deploys killed at random points, then deployed again at once: whatever the moment, the
//! server is never left serving a half-built tree, nothing outside the deploy path changes, and
//! `.cutover/` does not grow.
//!
//! Each round kills one deploy with SIGKILL after a random delay (on the `local` target the whole
//! process group, so the deploy script dies with the client; over SSH the client alone, as when a
//! laptop's lid closes — the script on the server then finishes or undoes itself). It then
//! deploys again at once (after `cutover unlock` when a killed deploy's lock is still there) and
//! checks, every round:
//!
//! * `current` points to a release whose tree equals its manifest exactly (`cutover verify
//!   --hash`) and equals the source that was deployed;
//! * the victim directory outside the deploy path is byte for byte what it was;
//! * no lock, staging, partial release or temporary link is left, `releases/` holds at most
//!   `keep_releases` releases with a manifest each, and `.cutover/` holds no more entries than
//!   after the first round.
//!
//! The delays are drawn from a fixed seed, so a failure replays; the test prints its counts.
mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::site::TargetKind::{Local, Ssh};
use common::site::*;

const ROUNDS: usize = 30;

/// A small deterministic generator (xorshift): the same delays on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Is a process working in `path` (a deploy script `cd`s there)?
fn scripts_running_in(path: &Path) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .any(|p| fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(path)))
}

/// Every entry below `dir`, as a count (what `.cutover/` holds).
fn count_entries(dir: &Path) -> usize {
    snapshot(dir).len()
}

fn crash_rounds(kind: TargetKind, seed: u64) {
    let Some(mut site) = Site::new(kind) else {
        return;
    };
    site.configure(
        "keep_releases = 3\n[hooks]\nbefore_swap = [\"test -f index.php\"]",
        "",
    );
    write_webapp(&site, 8);
    let victim = site.root().join("victim");
    write_file(
        &victim.join("keep.txt"),
        b"outside the deploy path\n",
        0o644,
    );
    write_file(&victim.join("sub/more.txt"), b"more\n", 0o600);
    let victim_before = snapshot(&victim);

    // How long an incremental deploy takes here: the random kills fall within it (and a
    // little after, where the script runs on after its client).
    site.deploy();
    site.write("rev.txt", "warm-up\n");
    let t = Instant::now();
    site.deploy();
    let span = t.elapsed().as_millis().max(50) as u64 * 3 / 2;
    let mut rng = Rng(seed);
    let (mut unlocks, mut checks, mut went_live_anyway) = (0, 0, 0);
    let mut state_entries = None;

    for round in 0..ROUNDS {
        site.write("rev.txt", format!("round {round} killed\n"));
        site.write(
            format!("vendor/round{}.php", round % 4),
            format!("<?php // {round}\n"),
        );
        let delay = rng.next() % span;
        let before = site.current_link();
        let mut child = {
            let mut cmd = Command::new(common::cutover_bin());
            cmd.arg("--config")
                .arg(&site.config)
                .arg("deploy")
                .current_dir(site.root())
                .env("HOME", &site.home)
                .env_remove("SSH_AUTH_SOCK")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if kind == Local {
                // Its own process group: the kill takes the deploy script with it.
                cmd.process_group(0);
            }
            cmd.spawn().unwrap()
        };
        std::thread::sleep(Duration::from_millis(delay));
        let target = if kind == Local {
            -(child.id() as i32)
        } else {
            child.id() as i32
        };
        // SAFETY: kill(2) of a process (group) this test started.
        unsafe { libc::kill(target, libc::SIGKILL) };
        let _ = child.wait();
        if kind == Local {
            // The killed script is reaped by init, not by us: until then `kill -0` (which the
            // next deploy uses to tell a running deleter of `.cutover/trash/ID.PID` from a dead
            // one) still finds it. A retried CI job starts after its killed one is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: kill(2) with signal 0 only asks whether the group still exists.
            while unsafe { libc::kill(target, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        // A deploy script that outlived its client (over SSH) finishes or undoes itself: wait
        // for it, then deploy again at once, after `cutover unlock` when the killed deploy's
        // lock is still there (it was killed before its script ran, or with it).
        let deadline = Instant::now() + Duration::from_secs(30);
        while scripts_running_in(&site.path) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if before != site.current_link() {
            went_live_anyway += 1;
        }
        if site.lock_exists() {
            site.cutover(&["unlock"]).expect_code(0, "unlock");
            unlocks += 1;
        }
        site.write("rev.txt", format!("round {round} deployed\n"));
        let run = site.deploy_with(&[]);
        run.expect_code(
            0,
            &format!("round {round} (killed after {delay} ms): the deploy after"),
        );
        let live = site.current_id().expect("current points to a release");

        // Every invariant, every round.
        let verify = site.cutover(&["verify", "--hash"]);
        verify.expect_code(
            0,
            &format!("round {round}: the live release equals its manifest"),
        );
        site.assert_release_is_source(&live, WEBAPP_NOT_DEPLOYED);
        assert_trees_equal(
            &victim_before,
            &snapshot(&victim),
            &format!("round {round}: the victim outside the deploy path"),
        );
        site.assert_clean(&format!("round {round}"));
        let releases = site.releases();
        assert!(releases.len() <= 3, "round {round}: {releases:?}");
        assert_eq!(
            site.manifests(),
            releases,
            "round {round}: a manifest per release"
        );
        let entries = count_entries(&site.at(".cutover"));
        let bound = *state_entries.get_or_insert(entries + 2);
        assert!(
            entries <= bound,
            "round {round}: .cutover/ grows: {entries} entries (first round: {})\n{:?}",
            bound - 2,
            snapshot(&site.at(".cutover")).keys().collect::<Vec<_>>()
        );
        checks += 6;
    }
    eprintln!(
        "crash test ({kind:?}): {ROUNDS} rounds killed at random points within {span} ms, \
         {checks} invariant checks passed, {unlocks} unlocks needed (the killed deploy held its lock), \
         {went_live_anyway} killed deploys that went live all the same"
    );
}

#[test]
fn killed_local_deploys_never_leave_a_half_built_release_live() {
    crash_rounds(Local, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn killed_ssh_clients_never_leave_a_half_built_release_live() {
    crash_rounds(Ssh, 0x2545_f491_4f6c_dd1d);
}
