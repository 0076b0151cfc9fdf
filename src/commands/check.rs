//! `cutover check`: connect as a deploy would and say, one line per check, whether a deploy to
//! this target would work, and how to fix what would not.
//!
//! The connection stages are checked here, in order, each with the typed failure of
//! [`Handshake`]: reach (DNS, refused, timeout, no route), host key, authentication, SFTP. A
//! failed stage ends the check (nothing is sent after a refused host key). Then the deploy is
//! planned read-only (no lock) for its upload size, and everything about the server itself —
//! tools, the swap, the deploy path, `current`, free space, the lock, leftovers — is looked at
//! by ONE script (`templates/check.sh.hbs`) in ONE exec call. The script prints one
//! `check<TAB>NAME<TAB>ok|fail|warn<TAB>DETAIL<TAB>FIX` line per finding and writes nothing
//! under the deploy path; this module turns those lines into the report.

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::config::{home_dir, Host, Target};
use crate::layout::{Layout, ReleaseId};
use crate::plan::{Base, Plan};
use crate::remote::ssh::{ConnectError, Handshake};
use crate::remote::{local::LocalSession, PathKind, Session};
use crate::script;
use crate::source::{walk, Manifest};

use super::{human_bytes, Output};

/// How one check came out. `Warn` is a note: worth knowing, but a deploy would work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (failures, and notes that have a remedy).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    /// A failure reported by an error, which may span several lines and may carry its own
    /// `fix: …` line (that one wins over `fix`): the report keeps one line per check.
    fn from_error(name: &str, error: &str, fix: impl Into<String>) -> Check {
        let (detail, own_fix) = flatten(error);
        Check::fail(name, detail, own_fix.unwrap_or_else(|| fix.into()))
    }
}

/// One line from a multi-line message: lines are joined (`a:` + `b` → `a: b`, else `a; b`, list
/// bullets dropped), and a line starting with `fix:` is returned apart.
fn flatten(text: &str) -> (String, Option<String>) {
    let mut detail = String::new();
    let mut fix = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(f) = line.strip_prefix("fix:") {
            fix = Some(f.trim().to_string());
            continue;
        }
        let line = line.strip_prefix("- ").unwrap_or(line);
        if !detail.is_empty() {
            detail.push_str(if detail.ends_with(':') { " " } else { "; " });
        }
        detail.push_str(line);
    }
    (detail, fix)
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub destination: String,
    /// True when a deploy would work: no check failed.
    pub ready: bool,
    pub checks: Vec<Check>,
}

pub async fn run(target: &Target, json: bool, out: Output) -> Result<()> {
    let checks = collect(target).await;
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    let report = Report {
        target: target.name.clone(),
        destination: target.describe(),
        ready: failed.is_empty(),
        checks: checks.clone(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print!("{}", render(&checks, out.quiet));
    }
    if failed.is_empty() {
        let notes = checks.iter().filter(|c| c.status == Status::Warn).count();
        out.info(format_args!(
            "{}: {} checks passed{}: a deploy would work",
            target.name,
            checks.len() - notes,
            match notes {
                0 => String::new(),
                1 => ", 1 note".into(),
                n => format!(", {n} notes"),
            }
        ));
        Ok(())
    } else {
        Err(anyhow!(
            "target {}, stage check: a deploy would not work; failed: {}",
            target.name,
            failed.join(", ")
        ))
    }
}

/// The report as text: `✓ name: detail`, `✗ name: detail` + `  fix: …`, `! name: detail` for a
/// note. `quiet` keeps only the failures.
pub fn render(checks: &[Check], quiet: bool) -> String {
    let mut s = String::new();
    for c in checks {
        if quiet && c.status != Status::Fail {
            continue;
        }
        let mark = match c.status {
            Status::Ok => '✓',
            Status::Fail => '✗',
            Status::Warn => '!',
        };
        // one line per check, whatever a message looks like
        s.push_str(&format!("{mark} {}: {}\n", c.name, flatten(&c.detail).0));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("  fix: {}\n", flatten(fix).0));
        }
    }
    s
}

/// Run every check that can run; stop at the first connection stage that fails.
async fn collect(target: &Target) -> Vec<Check> {
    let mut checks = Vec::new();

    // Scanned before connecting, like a deploy: it needs no server.
    let source = target.source.clone();
    let (exclude, include) = (target.exclude.clone(), target.include.clone());
    let scan = tokio::task::spawn_blocking(move || walk::scan(&source, &exclude, &include))
        .await
        .map_err(|e| anyhow!("the source scan panicked: {e}"))
        .and_then(|r| r);

    let session = match &target.host {
        Host::Local => {
            checks.push(Check::ok(
                "connect",
                "local target: files are copied on this machine and the script runs under /bin/sh",
            ));
            Session::Local(LocalSession)
        }
        Host::Ssh { .. } => match connect(target, &mut checks).await {
            Some(s) => Session::Ssh(Box::new(s)),
            None => return checks,
        },
    };

    let layout = Layout::new(&target.path);
    let mut serving = None;
    let upload_bytes = match scan {
        Ok(scan) => {
            let (check, bytes, note) = plan(&session, &layout, target, &scan.manifest).await;
            checks.push(check);
            serving = note;
            bytes
        }
        Err(e) => {
            checks.push(Check::from_error(
                "upload",
                &format!("cannot scan the source {}: {e:#}", target.source.display()),
                "fix the file named above in the source directory, or exclude it in cutover.toml",
            ));
            0
        }
    };

    checks.extend(run_script(&session, target, upload_bytes).await);
    // last: a note about what serves the release, after everything a deploy needs
    checks.extend(serving);
    session.close().await;
    checks
}

/// The SSH stages, each one check: connect, host key, authentication, SFTP. None when one failed.
async fn connect(
    target: &Target,
    checks: &mut Vec<Check>,
) -> Option<crate::remote::ssh::SshSession> {
    let Host::Ssh { host, port, .. } = &target.host else {
        unreachable!("only SSH targets connect")
    };
    // Best effort: the route may name another known_hosts file (~/.ssh/config); then a
    // recorded key is only announced by the connection's own message.
    let known_hosts = target
        .known_hosts
        .clone()
        .unwrap_or_else(|| home_dir().join(".ssh/known_hosts"));
    let recorded_before = std::fs::read(&known_hosts).ok();

    let mut handshake = match Handshake::start(target).await {
        Ok(h) => h,
        Err(ConnectError::HostKey(refusal)) => {
            checks.push(Check::ok(
                "connect",
                format!("{} answered over TCP and SSH", display_name(host, *port)),
            ));
            checks.push(host_key_refused(&refusal));
            return None;
        }
        Err(e) => {
            checks.push(unreachable_check(&e, target));
            return None;
        }
    };
    checks.push(Check::ok(
        "connect",
        format!("{} answered; SSH handshake done", handshake.name),
    ));
    let recorded_now = std::fs::read(&known_hosts).ok();
    checks.push(Check::ok(
        "host key",
        if recorded_now != recorded_before {
            format!(
                "{} was not known; its key was recorded in {} (host_key_checking = \"accept-new\")",
                handshake.name,
                known_hosts.display()
            )
        } else {
            format!(
                "the key {} offered is trusted (known_hosts)",
                handshake.name
            )
        },
    ));

    match handshake.authenticate(target).await {
        Ok(method) => checks.push(Check::ok(
            "authentication",
            format!("logged in with the {method}"),
        )),
        Err(e) => {
            checks.push(Check::from_error(
                "authentication",
                &format!("{e:#}"),
                format!(
                    "authorize one of the keys tried for the login user on the server (its .pub goes into \
                     ~/.ssh/authorized_keys there, e.g. with ssh-copy-id), or set targets.{}.identity_file to a key it accepts",
                    target.name
                ),
            ));
            return None;
        }
    }

    match handshake.into_session().await {
        Ok(session) => {
            checks.push(Check::ok("sftp", "the SFTP subsystem is available"));
            Some(session)
        }
        Err(e) => {
            checks.push(Check::from_error(
                "sftp",
                &format!("{e:#}"),
                "enable SFTP in the server's sshd_config (`Subsystem sftp internal-sftp`): cutover uploads files over SFTP only",
            ));
            None
        }
    }
}

fn display_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Reach failed: say which way (the message names it) and what to look at for that kind.
fn unreachable_check(e: &ConnectError, target: &Target) -> Check {
    let Host::Ssh { host, port, .. } = &target.host else {
        unreachable!("only SSH targets connect")
    };
    let key = |k: &str| format!("targets.{}.{k}", target.name);
    let fix = match e {
        ConnectError::Dns { .. } => format!(
            "check the name in {} (a typo?) and this machine's DNS (getent hosts {host})",
            key("host")
        ),
        ConnectError::Refused { .. } => format!(
            "start sshd on the server, or set {} to the port it listens on (now {port})",
            key("port")
        ),
        ConnectError::Timeout { .. } => format!(
            "let TCP port {port} through the firewall (or security group) between here and {host}, and check the address"
        ),
        ConnectError::NoRoute { .. } => format!(
            "check the address in {} and this machine's network route to it (a VPN that is down?)",
            key("host")
        ),
        ConnectError::Other { name, .. } if name.starts_with("jump host") => {
            "check the jump host (ProxyJump in ~/.ssh/config): its address, its host key and the keys it accepts".into()
        }
        ConnectError::HostKey(_) | ConnectError::Other { .. } => format!(
            "check that an SSH server listens on {host} port {port} (ssh -v -p {port} {host})"
        ),
    };
    Check::from_error("connect", &e.to_string(), fix)
}

/// A refused host key: unknown, changed or revoked. The refusal's first line (and the key lines
/// indented under it) say what happened; its other lines say what to do.
fn host_key_refused(refusal: &str) -> Check {
    let mut detail = Vec::new();
    let mut fix = Vec::new();
    for (i, line) in refusal.lines().enumerate() {
        if i == 0 || line.starts_with(char::is_whitespace) {
            detail.push(line.trim());
        } else {
            fix.push(line.trim());
        }
    }
    let fix = if !fix.is_empty() {
        fix.join(" ")
    } else if refusal.contains("@revoked") {
        "the key was revoked on purpose: get the server's current key from its administrator".into()
    } else {
        "compare the key's fingerprint with the server's administrator, then add it to known_hosts \
         (ssh-keyscan), or set host_key_checking = \"accept-new\""
            .into()
    };
    Check::fail("host key", detail.join(" "), fix)
}

/// Plan the deploy as `cutover deploy --dry-run` would (read-only, no lock) for its upload size;
/// with the live release's manifest in hand, also the note of [`serving_note`].
async fn plan(
    session: &Session,
    layout: &Layout,
    target: &Target,
    new: &crate::source::Manifest,
) -> (Check, u64, Option<Check>) {
    // A `current` that is not a symlink makes the planner refuse; the script reports it with the
    // migration steps, and after the migration the first deploy uploads everything.
    let current = session.path_kind(&layout.current()).await;
    let state = match current {
        Ok(PathKind::Missing | PathKind::Symlink) => {
            Some(super::deploy::read_state(session, layout, target).await)
        }
        _ => None,
    };
    let mut serving = None;
    let plan = match state {
        Some(Err(e)) => {
            return (
                Check::from_error(
                    "upload",
                    &format!("cannot plan the deploy: {e:#}"),
                    format!("as the message says; `cutover deploy --dry-run {}` plans the same way and shows the same error", target.name),
                ),
                new.total_bytes(),
                None,
            )
        }
        Some(Ok(state)) => {
            serving = state
                .previous
                .as_ref()
                .and_then(|(id, live)| serving_note(id, live));
            Plan::build(
                state.previous.as_ref().map(|(id, m)| (id, m)),
                new,
                false,
            )
        }
        None => Plan::build(None, new, false),
    };
    let what = format!(
        "{}, {}",
        count(plan.uploads.len(), "file"),
        human_bytes(plan.upload_bytes)
    );
    let detail = match &plan.base {
        Base::Empty => format!("no manifest of a live release: the next deploy uploads everything ({what})"),
        Base::Previous(id) => format!(
            "the next deploy uploads {what} (changed since release {id}), deletes {}, keeps {} unchanged",
            count(plan.deletes.len(), "path"),
            count(plan.unchanged, "file")
        ),
    };
    (Check::ok("upload", detail), plan.upload_bytes, serving)
}

/// A note when the live release holds PHP files. PHP-FPM given paths through `current` (nginx's
/// usual `$document_root`, Apache) keeps answering with the previous release after a swap: opcache
/// holds the script it compiled under that name. Which server is in front cannot be seen from
/// here, so it is a note with the remedies, not a failure.
fn serving_note(id: &ReleaseId, live: &Manifest) -> Option<Check> {
    let php: Vec<&String> = live
        .files()
        .map(|(path, _)| path)
        .filter(|path| path.to_ascii_lowercase().ends_with(".php"))
        .collect();
    let first = php.first()?;
    Some(Check {
        name: "serving".into(),
        status: Status::Warn,
        detail: format!(
            "the live release {id} holds {} ({first}{}): PHP-FPM handed paths through `current` \
             (nginx with $document_root, Apache) keeps answering with the previous release after a swap",
            count(php.len(), "PHP file"),
            if php.len() > 1 { ", ..." } else { "" }
        ),
        fix: Some(
            "serve it as cutover's README shows in \"Serving from `current`\": nginx with \
             `fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name`, or an after_swap hook \
             that resets opcache (examples/serving/)"
                .into(),
        ),
    })
}

/// Run the check script in one exec call and turn its lines into checks.
async fn run_script(session: &Session, target: &Target, upload_bytes: u64) -> Vec<Check> {
    let text = script::check_script(target, upload_bytes);
    let (ssh, server) = match session {
        Session::Ssh(s) => (true, s.description.clone()),
        Session::Local(_) => (false, "this machine".to_string()),
    };
    let mut checks = Vec::new();
    let sftp_only_fix = format!(
        "deploy with `cutover deploy --emit-script {0}`: it uploads over SFTP and prints the script, to be run on the \
         server with sh by an account that may run commands; or let this account run commands (remove its \
         `ForceCommand internal-sftp` from sshd_config)",
        target.name
    );
    let exit = match session.run_script(&text, true).await {
        Ok(exit) => exit,
        Err(e) => {
            checks.push(Check::from_error(
                "exec",
                &format!("{server} refused to run a command ({e:#}): the account may be SFTP-only"),
                sftp_only_fix,
            ));
            return checks;
        }
    };
    let parsed = parse_script_output(&exit.stdout);
    if !parsed.began {
        let said = exit.stdout.trim();
        let check = if said.contains("sftp connections only") {
            Check::fail(
                "exec",
                format!(
                    "the account on {server} is SFTP-only: the server runs no commands for it and says {said:?} (exit {})",
                    describe_code(exit.code)
                ),
                sftp_only_fix,
            )
        } else if ssh && said.is_empty() {
            Check::fail(
                "exec",
                format!(
                    "{server} ran something else than the check script (exit {}, no output): the account may be \
                     SFTP-only (ForceCommand internal-sftp) or have another forced command",
                    describe_code(exit.code)
                ),
                sftp_only_fix,
            )
        } else {
            Check::fail(
                if ssh { "exec" } else { "script" },
                format!(
                    "the check script did not start (exit {}){}",
                    describe_code(exit.code),
                    if said.is_empty() { String::new() } else { format!(": {said:?}") }
                ),
                "make sure `sh` is on the PATH of the account's login shell, and the login shell is a POSIX shell or bash",
            )
        };
        checks.push(check);
        return checks;
    }
    if ssh {
        checks.push(Check::ok(
            "exec",
            "the server runs commands: the deploy script can run in one exec call",
        ));
    }
    checks.extend(parsed.checks);
    if !parsed.ended {
        checks.push(Check::fail(
            "script",
            format!(
                "the check script stopped before its end (exit {}); the checks after the last line above did not run",
                describe_code(exit.code)
            ),
            "run `cutover check -v` again; if it stops again, run the script by hand to see why",
        ));
    }
    checks
}

/// "1 file", "3 files".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn describe_code(code: Option<u32>) -> String {
    match code {
        Some(c) => c.to_string(),
        None => "unknown: killed or disconnected".into(),
    }
}

#[derive(Debug, Default)]
struct ScriptOutput {
    began: bool,
    ended: bool,
    checks: Vec<Check>,
}

/// `cutover-check begin`, then `check<TAB>NAME<TAB>STATUS<TAB>DETAIL<TAB>FIX` lines, then
/// `cutover-check end`. Anything else on stdout is ignored.
fn parse_script_output(stdout: &str) -> ScriptOutput {
    let mut out = ScriptOutput::default();
    for line in stdout.lines() {
        if line.starts_with("cutover-check begin") {
            out.began = true;
        } else if line == "cutover-check end" {
            out.ended = true;
        } else if let Some(rest) = line.strip_prefix("check\t") {
            let mut f = rest.splitn(4, '\t');
            let name = f.next().unwrap_or_default();
            let status = match f.next().unwrap_or_default() {
                "ok" => Status::Ok,
                "warn" => Status::Warn,
                _ => Status::Fail,
            };
            let detail = f.next().unwrap_or_default().trim_end().to_string();
            let fix = f.next().map(str::trim).filter(|s| !s.is_empty());
            out.checks.push(Check {
                name: name.to_string(),
                status,
                detail,
                fix: fix.map(String::from),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lines_become_checks() {
        let out = parse_script_output(
            "cutover-check begin 0.1.0\n\
             check\ttools\tok\tall there\t\n\
             check\tlock\tfail\t/app/.cutover/lock is held\tcutover unlock t\n\
             noise\n\
             check\treleases\twarn\told-site\t\n\
             cutover-check end\n",
        );
        assert!(out.began && out.ended);
        assert_eq!(out.checks.len(), 3);
        assert_eq!(out.checks[0], Check::ok("tools", "all there"));
        assert_eq!(
            out.checks[1],
            Check::fail("lock", "/app/.cutover/lock is held", "cutover unlock t")
        );
        assert_eq!(out.checks[2].status, Status::Warn);
        assert_eq!(out.checks[2].fix, None);
    }

    #[test]
    fn an_unknown_status_counts_as_a_failure() {
        let out = parse_script_output("cutover-check begin\ncheck\tx\tmaybe\tdetail\t\n");
        assert_eq!(out.checks[0].status, Status::Fail);
        assert!(!out.ended);
    }

    #[test]
    fn failures_show_their_fix_and_quiet_shows_only_failures() {
        let checks = vec![
            Check::ok("tools", "all there"),
            Check::fail("lock", "held", "cutover unlock t"),
        ];
        assert_eq!(
            render(&checks, false),
            "✓ tools: all there\n✗ lock: held\n  fix: cutover unlock t\n"
        );
        assert_eq!(
            render(&checks, true),
            "✗ lock: held\n  fix: cutover unlock t\n"
        );
    }

    #[test]
    fn multi_line_errors_become_one_line_and_keep_their_own_fix() {
        let c = Check::from_error(
            "authentication",
            "authentication as u on h failed: the server accepted none of the keys; tried:\n  \
             - key /k1: rejected\n  - key /k2: rejected\nthe server accepts: publickey\n\
             fix: authorize one of these keys",
            "a generic fix",
        );
        assert_eq!(
            c.detail,
            "authentication as u on h failed: the server accepted none of the keys; tried: key /k1: rejected; \
             key /k2: rejected; the server accepts: publickey"
        );
        assert_eq!(c.fix.as_deref(), Some("authorize one of these keys"));
        assert_eq!(
            Check::from_error("x", "plain", "generic").fix.as_deref(),
            Some("generic")
        );
    }

    #[test]
    fn php_files_in_the_live_release_are_a_note_and_nothing_else_is() {
        let id = ReleaseId::parse("20261203120000").unwrap();
        let hash = "0".repeat(32);
        let manifest = |paths: &[&str]| {
            let mut text = String::from("cutover-manifest 1\nd\t755\t-\t-\tpublic\n");
            for p in paths {
                text.push_str(&format!("f\t644\t1\t{hash}\t{p}\n"));
            }
            Manifest::parse(&text).unwrap()
        };
        let note = serving_note(
            &id,
            &manifest(&["public/a.css", "public/index.PHP", "public/x.php"]),
        )
        .expect("PHP files make a note");
        assert_eq!(note.status, Status::Warn);
        assert_eq!(note.name, "serving");
        assert!(
            note.detail
                .contains("20261203120000 holds 2 PHP files (public/index.PHP, ...)"),
            "{}",
            note.detail
        );
        assert!(note.fix.unwrap().contains("Serving from `current`"));
        assert_eq!(
            serving_note(&id, &manifest(&["public/index.html", "public/php.txt"])),
            None
        );
    }

    #[test]
    fn a_changed_host_key_keeps_both_fingerprints_in_the_detail() {
        let refusal = "HOST KEY CHANGED for [h]:2: the server offered ssh-ed25519 SHA256:new, but known_hosts has:\n  \
                       ssh-ed25519 SHA256:old (/kh:1)\nThis can be an attack. Nothing was sent.";
        let c = host_key_refused(refusal);
        assert!(c.detail.contains("SHA256:new") && c.detail.contains("SHA256:old"));
        assert_eq!(
            c.fix.as_deref(),
            Some("This can be an attack. Nothing was sent.")
        );
    }
}
