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
//! under the deploy path; this module turns those lines into the report. An `sftp_only` target
//! runs no script: its checks are SFTP requests (`sftp_only_checks`).

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::config::{Fleet, Host, Target};
use crate::layout::{Layout, ReleaseId};
use crate::output::{bytes as human_bytes, count, Output};
use crate::plan::{Base, Plan};
use crate::remote::ssh::{AuthFailure, ConnectError, Handshake, HostKeyRefusal};
use crate::remote::{local::LocalSession, Session};
use crate::script::{self, protocol};
use crate::source::{self, Manifest};
use crate::survey::Survey;

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
    /// A failure reported by an error, which may span several lines: the report keeps one
    /// line per check.
    fn from_error(name: &str, error: &str, fix: impl Into<String>) -> Check {
        Check::fail(name, flatten(error), fix)
    }
}

/// One line from a multi-line message: lines are joined (`a:` + `b` → `a: b`, else `a; b`), and
/// list bullets dropped.
fn flatten(text: &str) -> String {
    let mut detail = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.strip_prefix("- ").unwrap_or(line);
        if !detail.is_empty() {
            detail.push_str(if detail.ends_with(':') { " " } else { "; " });
        }
        detail.push_str(line);
    }
    detail
}

/// What `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    /// The host's label (its `host` entry), as deploy's report names it.
    pub host: String,
    /// Where it logged in: the user and port the connection used (the ssh config's, for an
    /// alias), as deploy's report says.
    pub destination: String,
    /// True when a deploy would work: no check failed.
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// `--json` for a fleet: one report per host.
#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub target: String,
    pub ready: bool,
    pub hosts: Vec<Report>,
}

pub async fn run(fleet: &Fleet, json: bool, out: &Output) -> Result<()> {
    let reports = futures::future::join_all(fleet.hosts.iter().map(|t| async move {
        let (checks, login) = collect(t).await;
        Report {
            target: t.name.clone(),
            host: t.label.clone(),
            destination: t.describe_as(login),
            ready: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }))
    .await;
    let single = fleet.is_single();
    if json {
        let text = if single {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&FleetReport {
                target: fleet.name.clone(),
                ready: reports.iter().all(|r| r.ready),
                hosts: reports.clone(),
            })
        };
        println!("{}", text.expect("the report serializes"));
    }
    let mut failed_hosts = Vec::new();
    for (t, report) in fleet.hosts.iter().zip(&reports) {
        let o = out.for_member(fleet.names_hosts(), &t.label);
        if !json {
            for line in render(&report.checks, out.quiet).lines() {
                if out.stdout_reserved {
                    eprintln!("{}{line}", o.prefix);
                } else {
                    println!("{}{line}", o.prefix);
                }
            }
        }
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        if failed.is_empty() {
            let notes = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Warn)
                .count();
            o.info(format_args!(
                "{}: {} checks passed{}: a deploy would work",
                t.name,
                report.checks.len() - notes,
                match notes {
                    0 => String::new(),
                    1 => ", 1 note".into(),
                    n => format!(", {n} notes"),
                }
            ));
        } else {
            failed_hosts.push(format!(
                "{}failed: {}",
                if single {
                    String::new()
                } else {
                    format!("{}: ", t.label)
                },
                failed.join(", ")
            ));
        }
    }
    if failed_hosts.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{}: a deploy would not work; {}",
            fleet.stage("check"),
            failed_hosts.join("; ")
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
        s.push_str(&format!("{mark} {}: {}\n", c.name, flatten(&c.detail)));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("  fix: {}\n", flatten(fix)));
        }
    }
    s
}

/// Run every check that can run; stop at the first connection stage that fails. Also the user
/// and port the connection logged in with, once it did.
async fn collect(target: &Target) -> (Vec<Check>, Option<(String, u16)>) {
    let mut checks = Vec::new();

    // Scanned before connecting, like a deploy: it needs no server.
    let scanned = target.clone();
    let scan = tokio::task::spawn_blocking(move || source::scan_release(&scanned))
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
            Some(s) => Session::Ssh(std::sync::Arc::new(s)),
            None => return (checks, None),
        },
    };
    let login = session.login();

    let layout = Layout::new(&target.path);
    let survey = Survey::read(&session, &layout).await;
    checks.extend(shared_checks(&session, target, &layout).await);
    let needs = match scan {
        Ok(scan) => {
            let (found, needs) = plan(&survey, target, &scan.manifest);
            checks.extend(found);
            needs
        }
        Err(e) => {
            checks.push(Check::from_error(
                "upload",
                &format!("cannot scan the source {}: {e:#}", target.source.display()),
                "fix the file named above in the source directory, or exclude it in cutover.toml",
            ));
            Needs::default()
        }
    };

    if target.sftp_only {
        checks.extend(
            sftp_only_checks(
                &session,
                target,
                &layout,
                &survey,
                needs.unpacked_bytes,
                needs.inodes,
            )
            .await,
        );
    } else {
        checks.extend(run_script(&session, target, needs).await);
    }
    session.close().await;
    (checks, login)
}

/// The SSH stages, each one check: connect, host key, authentication, SFTP. None when one failed.
async fn connect(
    target: &Target,
    checks: &mut Vec<Check>,
) -> Option<crate::remote::ssh::SshSession> {
    let mut handshake = match Handshake::start(target).await {
        Ok(h) => h,
        Err(ConnectError::HostKey(refusal)) if !refusal.peer().jump => {
            checks.push(Check::ok(
                "connect",
                format!("{} answered over TCP and SSH", refusal.peer()),
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
    checks.push(Check::ok(
        "host key",
        match &handshake.recorded_new_key {
            Some(file) => format!(
                "{} was not known; its key was recorded in {} (host_key_checking = \"accept-new\")",
                handshake.name,
                file.display()
            ),
            None => format!(
                "the key {} offered is trusted (known_hosts)",
                handshake.name
            ),
        },
    ));

    match handshake.authenticate(target).await {
        Ok(method) => checks.push(Check::ok(
            "authentication",
            format!("logged in with the {method}"),
        )),
        Err(e) => {
            checks.push(match e.downcast_ref::<AuthFailure>() {
                Some(failure) => {
                    Check::from_error("authentication", &failure.to_string(), failure.hint())
                }
                None => Check::from_error(
                    "authentication",
                    &format!("{e:#}"),
                    format!(
                        "set targets.{}.identity_file to a key the server accepts",
                        target.name
                    ),
                ),
            });
            return None;
        }
    }

    // (The session's SFTP start is waited for: a subsystem the server refuses, or one whose
    // stream a talkative login shell spoils, fails here and not in a later check.)
    let session = match handshake.into_session().await {
        Ok(session) => match session.sftp.ready().await {
            Ok(()) => Ok(session),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match session {
        Ok(session) => {
            checks.push(Check::ok("sftp", "the SFTP subsystem is available"));
            Some(session)
        }
        Err(e) if format!("{e:#}").contains(crate::remote::sftp::NOISY_LOGIN) => {
            checks.push(Check::from_error(
                "sftp",
                &format!("{e:#}"),
                "make the login shell's startup files print nothing for a non-interactive session (see the message), or use `Subsystem sftp internal-sftp`",
            ));
            None
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

/// The declared shared paths (`shared_files`, `shared_dirs`) as a deploy's survey sees them:
/// a missing shared file, a shared file that is a directory and a shared directory that is a
/// file each stop a deploy, so each fails here, with the commands that fix it. None declared:
/// no check.
async fn shared_checks(session: &Session, target: &Target, layout: &Layout) -> Vec<Check> {
    let declared: Vec<(&String, bool)> = (target.shared.files.iter().map(|f| (f, true)))
        .chain(target.shared.dirs.iter().map(|d| (d, false)))
        .collect();
    if declared.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (p, file) in &declared {
        let path = layout.at(&format!("{}/{p}", crate::layout::SHARED));
        match session.path_kind(&path).await {
            Ok(kind) => {
                if let Some((problem, fix)) = crate::deploy::host::shared_path_problem(
                    target,
                    layout,
                    session.login(),
                    p,
                    *file,
                    &kind,
                ) {
                    problems.push(problem);
                    fixes.push(fix);
                }
            }
            Err(e) => problems.push(format!("cannot look at {path}: {e:#}")),
        }
    }
    if problems.is_empty() {
        return vec![Check::ok(
            "shared",
            format!(
                "declared shared paths in place: {} (a missing shared directory is created by the deploy)",
                [
                    (target.shared.files.len(), "file", "files"),
                    (target.shared.dirs.len(), "directory", "directories")
                ]
                .iter()
                .filter(|(n, _, _)| *n > 0)
                .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
                .collect::<Vec<_>>()
                .join(", ")
            ),
        )];
    }
    vec![Check::fail(
        "shared",
        problems.join("; "),
        if fixes.is_empty() {
            "see the message".to_string()
        } else {
            fixes.join("; ")
        },
    )]
}

/// Reach failed: say which way (the message names it) and what to look at for that kind. The
/// target's own failures point at its cutover.toml keys; a jump host's at the ssh config.
fn unreachable_check(e: &ConnectError, target: &Target) -> Check {
    let Host::Ssh { host, port, .. } = &target.host else {
        unreachable!("only SSH targets connect")
    };
    let key = |k: &str| format!("targets.{}.{k}", target.name);
    let jump = e.peer().is_some_and(|p| p.jump);
    let fix = match e {
        _ if jump => format!(
            "check the jump host (ProxyJump in ~/.ssh/config): {}",
            e.hint().unwrap_or_else(|| "its address, its host key and the keys it accepts".into())
        ),
        ConnectError::Dns { .. } => format!(
            "check the name in {} (a typo?) and this machine's DNS (getent hosts {})",
            key("host"),
            crate::shell::quote(host)
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
        ConnectError::Config { .. } => {
            "fix the ssh config where the message says (cutover reads ~/.ssh/config, or $CUTOVER_SSH_CONFIG)".into()
        }
        ConnectError::HostKey(_)
        | ConnectError::Auth(_)
        | ConnectError::Forward { .. }
        | ConnectError::Other { .. } => e.hint().unwrap_or_default(),
    };
    Check::from_error("connect", &e.to_string(), fix)
}

/// A refused host key: unknown, changed or revoked; what happened, and the fix.
fn host_key_refused(refusal: &HostKeyRefusal) -> Check {
    Check::from_error("host key", &refusal.to_string(), refusal.hint())
}

/// What a deploy planned now would write: the room its upload takes on the server (staged and
/// unpacked: see [`upload_room`]; files as they land, for an SFTP-only deploy), and entries
/// (inodes) made.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    upload_bytes: u64,
    /// Of `upload_bytes`, what the files take unpacked (all an SFTP-only deploy writes).
    unpacked_bytes: u64,
    inodes: u64,
}

/// Room on disk for an upload: its tar archive in staging (a 512-byte header per entry, each
/// file padded to 512 bytes) plus the files unpacked (each file in 4 KiB blocks, each directory
/// a block), as (archive, unpacked). By the bytes of the files alone, 3,000 tiny files came to
/// 43 KiB, when the archive alone was 3 MiB.
fn upload_room(plan: &Plan, new: &crate::source::Manifest) -> (u64, u64) {
    const BLOCK: u64 = 4096;
    let round = |n: u64, to: u64| n.div_ceil(to) * to;
    let (mut archive, mut unpacked) = (1024u64, 0u64);
    let dirs: Vec<&String> = match plan.base {
        Base::Empty => new
            .entries
            .iter()
            .filter(|(_, e)| e.is_dir())
            .map(|(p, _)| p)
            .collect(),
        Base::Previous(_) => plan.new_dirs.iter().collect(),
    };
    archive += 512 * dirs.len() as u64;
    unpacked += BLOCK * dirs.len() as u64;
    for p in &plan.uploads {
        archive += 512;
        if let Some(crate::source::Entry {
            kind: crate::source::Kind::File { size, .. },
            ..
        }) = new.entries.get(p)
        {
            archive += round(*size, 512);
            unpacked += round(*size, BLOCK);
        }
    }
    (archive, unpacked)
}

/// Plan the deploy as `cutover deploy --dry-run` would (read-only, no lock) for its upload size
/// and the entries it makes: a copy of the live release (all of its entries, or only its
/// directories with copy = "hardlink"), the uploaded files and new directories, the archive and
/// the manifest.
fn plan(
    survey: &Result<Survey>,
    target: &Target,
    new: &crate::source::Manifest,
) -> (Vec<Check>, Needs) {
    let (checks, (archive_bytes, unpacked_bytes)) = plan_upload(survey, target, new);
    let live = survey.as_ref().ok().and_then(|s| s.live.as_ref());
    let made = match live {
        Some((_, live)) => {
            let copied = match target.copy {
                crate::config::CopyMode::Full => live.entries.len(),
                crate::config::CopyMode::Hardlink => {
                    live.entries.values().filter(|e| e.is_dir()).count()
                }
            };
            let changed = new
                .entries
                .iter()
                .filter(|(path, e)| live.entries.get(*path) != Some(*e))
                .count();
            copied + changed
        }
        None => new.entries.len(),
    };
    let inodes = made as u64 + 2;
    (
        checks,
        Needs {
            upload_bytes: archive_bytes + unpacked_bytes,
            unpacked_bytes,
            inodes,
        },
    )
}

fn plan_upload(
    survey: &Result<Survey>,
    target: &Target,
    new: &crate::source::Manifest,
) -> (Vec<Check>, (u64, u64)) {
    // A `current` that is not a symlink makes the planner refuse; the script reports it with the
    // migration steps, and after the migration the first deploy uploads everything.
    let plan = match survey {
        Err(e) => {
            return (
                vec![Check::from_error(
                    "upload",
                    &format!("cannot plan the deploy: {e:#}"),
                    format!("as the message says; `cutover deploy --dry-run {}` plans the same way and shows the same error", target.name),
                )],
                upload_room(&Plan::build(None, new, false), new),
            )
        }
        Ok(survey) => {
            let mut notes = Vec::new();
            for note in &survey.notes {
                notes.push(Check {
                    name: "releases".into(),
                    status: Status::Warn,
                    detail: note.clone(),
                    fix: None,
                });
            }
            let plan = Plan::build(survey.live.as_ref().map(|(id, m)| (id, m)), new, false);
            if let Some(note) = survey
                .live
                .as_ref()
                .and_then(|(id, live)| serving_note(id, live))
            {
                notes.push(note);
            }
            (plan, notes)
        }
    };
    let (plan, notes) = plan;
    let what = format!(
        "{}, {}",
        count(plan.files_to_upload(), "file"),
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
    let mut checks = vec![Check::ok("upload", detail)];
    checks.extend(notes);
    (checks, upload_room(&plan, new))
}

/// A note when the live release holds PHP files. PHP-FPM given paths through `current` (nginx's
/// usual `$document_root`, Apache) keeps answering with the previous release after a swap: opcache
/// holds the script it compiled under that name. Which server is in front cannot be seen from
/// here, so it is a note with the remedies, not a failure.
fn serving_note(id: &ReleaseId, live: &Manifest) -> Option<Check> {
    let php: Vec<&String> = live
        .entries
        .iter()
        .filter(|(_, e)| matches!(e.kind, crate::source::Kind::File { .. }))
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
async fn run_script(session: &Session, target: &Target, needs: Needs) -> Vec<Check> {
    let text = script::check_script(target, needs.upload_bytes, needs.inodes);
    let (ssh, server) = match session {
        Session::Ssh(s) => (true, s.description.clone()),
        Session::Local(_) => (false, "this machine".to_string()),
    };
    let mut checks = Vec::new();
    let sftp_only_fix = format!(
        "set `sftp_only = true` in [targets.{0}]: cutover then deploys with SFTP requests alone (no hooks); or deploy \
         with `cutover deploy --emit-script {0}`, which uploads over SFTP and prints the script, to be run on the \
         server with sh by an account that may run commands; or let this account run commands (remove its \
         `ForceCommand internal-sftp` from sshd_config)",
        target.name
    );
    let exit = match session.run_script(&text, true).await {
        Ok(exit) if exit.refused => {
            checks.push(Check::fail(
                "exec",
                format!("{server} refused to run a command: the account may be SFTP-only"),
                sftp_only_fix,
            ));
            return checks;
        }
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
        let check = if let Some(nologin) = crate::remote::no_login_shell(said) {
            Check::fail(
                "exec",
                format!(
                    "the account on {server} {nologin} (exit {})",
                    describe_code(exit.code)
                ),
                crate::remote::no_login_shell_fix(session.login().map(|(u, _)| u).as_deref()),
            )
        } else if said.contains("sftp connections only") {
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

/// An SFTP-only target (`sftp_only = true`) runs no script: what a deploy needs is asked over
/// SFTP. The extensions the server offers; the order it reads SYMLINK's paths in, probed in a
/// scratch directory (under `.cutover/` when it exists, else where the deploy path would be
/// made) that is removed again; the layout, the lock and leftovers as the survey sees them; and
/// the free space (statvfs@openssh.com).
async fn sftp_only_checks(
    session: &Session,
    target: &Target,
    layout: &Layout,
    survey: &Result<Survey>,
    upload_bytes: u64,
    inodes_needed: u64,
) -> Vec<Check> {
    use crate::remote::sftp::{
        COPY_DATA, HARDLINK, POSIX_RENAME, READ_ONLY, READ_ONLY_FIX, STATVFS,
    };
    let Session::Ssh(ssh) = session else {
        unreachable!("the config refuses sftp_only for a local target")
    };
    let sftp = &ssh.sftp;
    if let Err(e) = sftp.ready().await {
        return vec![Check::fail(
            "sftp",
            format!("{e:#}"),
            "enable the sftp subsystem for this account in sshd_config (Subsystem sftp, or ForceCommand internal-sftp)",
        )];
    }
    let mut checks = vec![Check::ok(
        "mode",
        "sftp_only = true: a deploy is made with SFTP requests alone, no command runs on the server (and there are no hooks)",
    )];
    checks.push(if sftp.offers(POSIX_RENAME).await {
        Check::ok(
            "posix-rename",
            format!("{POSIX_RENAME}: current is replaced by one rename(2) of a new link"),
        )
    } else if sftp.read_only().await {
        Check::fail(
            "posix-rename",
            format!("{READ_ONLY}: a deploy cannot write here"),
            READ_ONLY_FIX,
        )
    } else {
        Check::fail(
            "posix-rename",
            format!(
                "the server does not offer {POSIX_RENAME}: current cannot be replaced atomically, so a deploy is refused \
                 (cutover never removes current to make it again)"
            ),
            format!(
                "enable it in the server's sftp-server (OpenSSH 4.9 or later offers it unless `-P posix-rename` switches \
                 it off), or let the account run commands and set sftp_only = false for target {}",
                target.name
            ),
        )
    });
    let hardlink = sftp.offers(HARDLINK).await;
    checks.push(if hardlink {
        Check::ok(
            "hardlink",
            format!("{HARDLINK}: unchanged files are hard-linked from the previous release"),
        )
    } else {
        Check {
            name: "hardlink".into(),
            status: Status::Warn,
            detail: format!(
                "the server does not offer {HARDLINK}: unchanged files are copied on the server (copy-data), or \
                 uploaded again"
            ),
            fix: None,
        }
    });
    checks.push(if sftp.offers(COPY_DATA).await {
        Check::ok(
            "copy-data",
            format!("{COPY_DATA}: a file that cannot be hard-linked is copied on the server"),
        )
    } else {
        Check {
            name: "copy-data".into(),
            status: Status::Warn,
            detail: format!(
                "the server does not offer {COPY_DATA} (OpenSSH 9.0 or later does){}",
                if hardlink {
                    ": a file that cannot be hard-linked is uploaded again"
                } else {
                    ": unchanged files are uploaded again, and files the application wrote at runtime are downloaded \
                     and uploaded again"
                }
            ),
            fix: None,
        }
    });

    // Where to probe: .cutover/ when it exists, else the deploy path, else the directory
    // the first deploy would create it in.
    let mut places = vec![layout.state(), layout.root().to_string()];
    places.extend(
        crate::layout::ancestors(layout.root())
            .into_iter()
            .rev()
            .skip(1),
    );
    places.push("/".into());
    let mut scratch_in = None;
    for dir in &places {
        match sftp.path_kind(dir).await {
            Ok(crate::remote::PathKind::Dir) => {
                scratch_in = Some(dir.clone());
                break;
            }
            Ok(crate::remote::PathKind::Missing) => continue,
            Ok(_) => {
                checks.push(Check::fail(
                    "deploy path",
                    format!("{dir} is not a directory: the deploy path {} cannot be made there", layout.root()),
                    "set the target's path to a directory the account can write, or move that file away",
                ));
                break;
            }
            Err(e) => {
                checks.push(Check::from_error(
                    "deploy path",
                    &format!("cannot look at {dir}: {e:#}"),
                    "let the account reach the deploy path (check its permissions, or the chroot it is locked into)",
                ));
                break;
            }
        }
    }
    let Some(dir) = scratch_in else { return checks };
    checks.push(if dir == layout.root() || dir == layout.state() {
        Check::ok("deploy path", format!("{} exists", layout.root()))
    } else {
        Check::ok(
            "deploy path",
            format!(
                "{} does not exist yet: the first deploy creates it in {dir}",
                layout.root()
            ),
        )
    });
    let name = format!("probe.check-{}", &crate::lock::new_token()[..8]);
    let scratch = if dir == layout.state() {
        format!("{dir}/{name}")
    } else {
        format!("{}/.cutover-{name}", dir.trim_end_matches('/'))
    };
    checks.push(match sftp.probe_symlink_order(&scratch).await {
        Ok(crate::remote::sftp::SymlinkOrder::TargetFirst) => Check::ok(
            "symlink",
            format!(
                "probed in {scratch} (removed): SYMLINK takes the link's target first, as OpenSSH's sftp-server does; \
                 links are made relative (releases/ID, ../../shared/PATH)"
            ),
        ),
        Ok(crate::remote::sftp::SymlinkOrder::LinkFirst) => Check::ok(
            "symlink",
            format!(
                "probed in {scratch} (removed): SYMLINK takes the link's path first, as the SFTP draft says (not \
                 OpenSSH's order); cutover sends it that way"
            ),
        ),
        Err(e) => Check::from_error(
            "symlink",
            &format!("could not make a symbolic link in a scratch directory {scratch}: {e:#}"),
            format!("let the account write to {dir}"),
        ),
    });

    match survey {
        Ok(survey) => checks.extend(layout_checks(survey, layout, target, session).await),
        Err(e) => checks.push(Check::from_error(
            "layout",
            &format!("cannot read the deploy path: {e:#}"),
            "as the message says",
        )),
    }

    checks.push(if !sftp.offers(STATVFS).await {
        Check {
            name: "free space".into(),
            status: Status::Warn,
            detail: format!("cannot tell: the server does not offer {STATVFS}"),
            fix: None,
        }
    } else {
        match sftp.statvfs(&dir).await {
            Ok(fs) => {
                let avail = fs.blocks_avail.saturating_mul(fs.fragment_size.max(1));
                // Hard links cost no space; without them every unchanged file is a copy.
                let live = match (survey, hardlink) {
                    (Ok(s), false) => s.live.as_ref().map_or(0, |(_, m)| m.total_bytes()),
                    _ => 0,
                };
                let need = upload_bytes + live;
                let parts = if live > 0 {
                    format!("upload {} + copies of the live release {}", human_bytes(upload_bytes), human_bytes(live))
                } else {
                    format!("upload {}", human_bytes(upload_bytes))
                };
                let detail = format!(
                    "{} free where {} is; a deploy needs about {} ({parts})",
                    human_bytes(avail),
                    layout.root(),
                    human_bytes(need)
                );
                // Entries too, as the check script does: a file system with a fixed table of
                // them can run out while bytes are left (0 inodes: none kept, nothing to check).
                if fs.inodes > 0 && fs.inodes_avail < inodes_needed {
                    Check::fail(
                        "free space",
                        format!(
                            "only {} inodes (files and directories) free where {} is, though {} are; a deploy makes about {inodes_needed} entries",
                            fs.inodes_avail,
                            layout.root(),
                            human_bytes(avail)
                        ),
                        "free some entries on the server's file system (old releases go with a smaller keep_releases), or ask the host for more",
                    )
                } else if avail >= need {
                    Check::ok("free space", detail)
                } else {
                    Check::fail("free space", detail, "free some space on the server's file system (old releases go with a smaller keep_releases)")
                }
            }
            Err(e) => Check {
                name: "free space".into(),
                status: Status::Warn,
                detail: format!("cannot tell: {e:#}"),
                fix: None,
            },
        }
    });
    checks
}

/// What the survey says about the deploy path, for an SFTP-only target (the check script says
/// the same for the others): `current`, the layout, the lock, leftovers, foreign names.
async fn layout_checks(
    survey: &Survey,
    layout: &Layout,
    target: &Target,
    session: &Session,
) -> Vec<Check> {
    use crate::survey::Current;
    let mut checks = Vec::new();
    if let Some(problem) = survey.layout_problem(layout) {
        checks.push(Check::fail(
            "layout",
            problem,
            "as the message says: cutover never follows links it did not make",
        ));
    }
    checks.push(match &survey.current {
        Current::Missing => Check::ok("current", "no current yet: the first deploy creates it"),
        Current::Link { target: link, .. } if survey.live.is_some() => {
            Check::ok("current", format!("current -> {link}"))
        }
        Current::Link { target: link, .. } => Check {
            name: "current".into(),
            status: Status::Warn,
            detail: format!(
                "current -> {link} is not a cutover release: the next deploy uploads everything and replaces the link"
            ),
            fix: None,
        },
        Current::NotALink(kind) => Check::fail(
            "current",
            format!(
                "{} is {}, not a symlink (left by a tool that deploys in place): it cannot be replaced atomically",
                layout.current(),
                if *kind == crate::remote::PathKind::Dir { "a real directory" } else { "not a symlink" }
            ),
            format!(
                "move it into releases/ and replace it by a link, once (with an account that may run commands, or \
                 with sftp: rename current releases/00000000000000-old, then ln -s releases/00000000000000-old current) in {}",
                layout.root()
            ),
        ),
    });
    if survey.locked {
        let holder = crate::lock::describe_holder(session, layout).await;
        checks.push(Check::fail(
            "lock",
            format!("{} is {holder}", layout.lock()),
            format!(
                "if no deploy is running (one was killed), run `{}`",
                target.unlock_command()
            ),
        ));
    } else {
        checks.push(Check::ok("lock", "no deploy is running (no lock)"));
    }
    let left: Vec<String> = survey
        .partials
        .iter()
        .map(|p| format!("releases/{p}"))
        .chain(
            survey
                .staging
                .iter()
                .map(|e| format!(".cutover/staging/{}", e.name)),
        )
        .collect();
    checks.push(if left.is_empty() {
        Check::ok(
            "leftovers",
            "no partial releases or staging left by interrupted deploys",
        )
    } else {
        Check {
            name: "leftovers".into(),
            status: Status::Warn,
            detail: format!("left by an interrupted deploy: {}", left.join(", ")),
            fix: Some("nothing to do: the next deploy removes them".into()),
        }
    });
    checks.push(if !survey.foreign.is_empty() {
        Check {
            name: "releases".into(),
            status: Status::Warn,
            detail: format!(
                "not cutover releases (a real directory with a 14-digit name and a manifest), left alone: {}",
                survey.foreign.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            fix: None,
        }
    } else if let Some(newest) = survey.releases.last() {
        Check::ok("releases", format!("{}, the newest {newest}", count(survey.releases.len(), "release")))
    } else {
        Check::ok("releases", "no releases yet")
    });
    checks
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

/// The check script's findings (see [`protocol::parse_check`]) as checks; an unknown status
/// counts as a failure.
fn parse_script_output(stdout: &str) -> ScriptOutput {
    let parsed = protocol::parse_check(stdout);
    ScriptOutput {
        began: parsed.began,
        ended: parsed.ended,
        checks: parsed
            .findings
            .into_iter()
            .map(|f| Check {
                name: f.name,
                status: match f.status.as_str() {
                    "ok" => Status::Ok,
                    "warn" => Status::Warn,
                    _ => Status::Fail,
                },
                detail: f.detail,
                fix: f.fix,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_an_upload_counts_tar_headers_and_blocks() {
        let mut new = crate::source::Manifest::default();
        for i in 0..3000 {
            new.entries.insert(
                format!("f{i}"),
                crate::source::Entry {
                    kind: crate::source::Kind::File { size: 15, hash: 1 },
                    mode: 0o644,
                },
            );
        }
        let plan = Plan::build(None, &new, false);
        let (archive, unpacked) = upload_room(&plan, &new);
        // a header and one padded block each, the end of archive; a 4 KiB block each
        assert_eq!(archive, 3000 * 1024 + 1024);
        assert_eq!(unpacked, 3000 * 4096);
    }

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
    fn multi_line_errors_become_one_line() {
        let c = Check::from_error(
            "authentication",
            "authentication as u on h failed: the server accepted none of the keys; tried:\n  \
             - key /k1: rejected\n  - key /k2: rejected\nthe server accepts: publickey",
            "authorize one of these keys",
        );
        assert_eq!(
            c.detail,
            "authentication as u on h failed: the server accepted none of the keys; tried: key /k1: rejected; \
             key /k2: rejected; the server accepts: publickey"
        );
        assert_eq!(c.fix.as_deref(), Some("authorize one of these keys"));
    }

    #[test]
    fn a_changed_host_key_keeps_both_fingerprints_and_says_how_to_remove_the_old_one() {
        use crate::remote::known_hosts::{KnownKey, Source};
        use crate::remote::ssh::{OfferedKey, Peer};
        let refusal = HostKeyRefusal::Changed {
            peer: Peer {
                host: "h".into(),
                port: 2,
                jump: false,
            },
            offered: OfferedKey {
                algorithm: "ssh-ed25519".into(),
                fingerprint: "SHA256:new".into(),
            },
            known: vec![KnownKey {
                source: Source::File("/kh".into()),
                line: 1,
                fingerprint: "SHA256:old".into(),
                algorithm: "ssh-ed25519".into(),
            }],
        };
        let c = host_key_refused(&refusal);
        assert!(c.detail.contains("SHA256:new") && c.detail.contains("SHA256:old"));
        assert!(!c.detail.contains('\n'), "{}", c.detail);
        assert!(
            c.fix
                .as_deref()
                .is_some_and(|f| f.contains("ssh-keygen -R '[h]:2' -f '/kh'")),
            "{:?}",
            c.fix
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
}
