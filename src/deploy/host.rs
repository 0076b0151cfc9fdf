//! One host's part of a deploy, stage by stage: connect, survey and lock, plan, prepare (upload
//! and build up to "ready"), then swap, commit or revert when the fleet says so.
//!
//! Who cleans up what: until the deploy script has started, the client owns the lock and the
//! staging directory and removes them on any failure ([`HostDeploy::clean_up`]). Once the script
//! runs, it owns them: whatever happens to the client, the script finishes or undoes itself
//! (it stops at its next wait when its input ends). The client still looks afterwards and
//! removes a lock that carries its own token, so a script that never got to run (a dropped
//! connection, an SFTP-only account) leaves nothing behind either.
//!
//! A host with `sftp_only = true` runs no script: each stage below hands its work to
//! [`SftpRun`] (`deploy::sftp`), which does the same with SFTP requests, and the client owns
//! the clean-up throughout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::FutureExt;

use super::report::{HostReport, Status};
use super::Options;
use crate::archive;
use crate::config::Target;
use crate::layout::{Layout, ReleaseId};
use crate::lock::{self, HeldLock, LockHeld};
use crate::output::{bytes, Output, Progress};
use crate::plan::{Base, Plan};
use crate::remote::{OpenFile, PathKind, Session, Shell, Stderr};
use crate::script::protocol::{word, Line};
use crate::script::{self, DeployScript};
use crate::source::Manifest;
use crate::survey::{Current, Survey};

use super::seen::Seen;
use super::sftp::{self as over_sftp, CalledOff, SftpRun};

/// The command name written into the lock.
const DEPLOY: &str = "cutover deploy";

/// Where a host is in the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connected,
    Locked,
    /// Built, before_swap passed: waiting for `go`.
    Ready,
    /// `current` points at the new release, not yet committed.
    Swapped,
    Done,
}

/// How far the source scan is, as the survey needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    Running,
    /// It failed: nothing may be written, and no command started.
    Failed,
    /// Done and good; with its tree digest when a deploy that changes nothing may end early
    /// (none with --force, --full, or for a dry run), and the bytes of its files.
    Done {
        digest: Option<String>,
        bytes: u64,
    },
}

/// The scan's progress, watched by every host's survey.
pub type ScanWatch = tokio::sync::watch::Receiver<Scanned>;

/// What the survey could start once the scan was done.
enum Prepared {
    /// A dry run: no lock, no shell.
    Nothing,
    ScanFailed,
    Ready(Box<ReadyToLock>),
}

/// What a survey that may lock has ready once the scan is done.
struct ReadyToLock {
    /// The shell for the script, when asked for.
    shell: Option<Result<Shell>>,
    /// The half-taken lock; None when it was not taken on speculation (the host is expected
    /// to hold the source's tree already).
    pending: Option<Result<lock::Pending>>,
}

/// How the survey ended for the lock.
enum Locking {
    /// Not asked for (a dry run, a rollback's survey).
    ReadOnly,
    /// The scan failed: no lock was taken.
    ScanFailed,
    Taken(Result<HeldLock>),
    /// Never taken: the host holds the source's tree in this release already.
    Unchanged(ReleaseId),
}

pub struct HostDeploy {
    pub target: Target,
    pub out: Output,
    pub session: Session,
    pub layout: Layout,
    shell: Option<Shell>,
    pub survey: Option<Survey>,
    /// The release that already holds the source's tree, found by
    /// [`HostDeploy::survey_while_scanning`] (then there is no survey and no lock).
    pub unchanged: Option<ReleaseId>,
    pub lock: Option<HeldLock>,
    pub plan: Option<Plan>,
    pub phase: Phase,
    pub report: HostReport,
    /// go and commit were sent together with upload-done (a fleet of one).
    pipelined: bool,
    /// The script is running and owns the clean-up.
    script_started: bool,
    /// An SFTP-only host's run (no script): opened with the lock.
    sftp: Option<SftpRun>,
    /// Half the round trip of `go` → `cutover-swapped`: how long a word takes to get there.
    one_way: Option<Duration>,
    /// When its script said it was ready to switch (a fleet's slowest host is the last).
    pub ready_at: Option<Instant>,
    /// Its script said it could not switch `current` back: it is on the new release.
    pub stuck: bool,
    /// The script is a rollback's (it builds and removes nothing).
    rolling_back: bool,
    /// The token of the lock that refused this host (see [`LockHeld::token`]).
    pub refused_by: Option<String>,
    /// What the hosts of a fleet share while they upload (None: this host deploys alone).
    pub fleet_upload: Option<std::sync::Arc<archive::FleetUpload>>,
    /// The upload, once started (see [`HostDeploy::upload_early`]); taken by `prepare`.
    upload: Option<Upload>,
}

/// An upload under way on a task of its own (see [`HostDeploy::start_upload`]): it travels
/// while the rest of the deploy goes on, in a fleet while other hosts are still surveyed.
/// Dropping it stops it; what already arrived stays in its staging directory until that is
/// removed (by the script, or by the client when it gives the lock back).
struct Upload {
    /// The release name its staging directory carries.
    name: ReleaseId,
    /// Archive parts: `files.0.tar`, ….
    parts: usize,
    /// The manifest's file, opened in the upload's first flight and written once the release
    /// is named (the manifest records its name); never sent when staging could not be made.
    manifest: tokio::sync::oneshot::Receiver<OpenFile>,
    /// The bytes sent, once every archive is written.
    sent: futures::future::RemoteHandle<Result<u64>>,
    progress: std::sync::Arc<Progress>,
}

impl HostDeploy {
    /// Connect (no command runs yet: see [`HostDeploy::start_shell`]).
    pub async fn connect(target: &Target, out: Output) -> Result<HostDeploy> {
        let session = Session::open(target, out.verbose)
            .await
            .with_context(|| target.stage("connect"))?;
        out.stage("connected");
        Ok(HostDeploy {
            report: HostReport {
                host: target.label.clone(),
                destination: target.describe_as(session.login()),
                ..HostReport::default()
            },
            layout: Layout::new(&target.path),
            target: target.clone(),
            out,
            session,
            shell: None,
            survey: None,
            unchanged: None,
            lock: None,
            plan: None,
            phase: Phase::Connected,
            pipelined: false,
            script_started: false,
            sftp: None,
            one_way: None,
            ready_at: None,
            stuck: false,
            fleet_upload: None,
            upload: None,
            rolling_back: false,
            refused_by: None,
        })
    }

    /// How many hosts of the run upload side by side.
    fn uploading_hosts(&self) -> usize {
        self.fleet_upload.as_ref().map_or(1, |f| f.hosts)
    }

    /// Start the shell that will run the deploy script, while the survey and the plan are
    /// made: sshd starts a session slowly (a login shell, then `sh`), and the shell then waits
    /// for its script. A shell never given one reads end-of-input and runs nothing.
    pub async fn start_shell(&mut self) -> Result<()> {
        if self.target.sftp_only || self.shell.is_some() {
            return Ok(());
        }
        let stderr = Stderr::new(&self.out.prefix, self.out.quiet);
        let shell = self
            .session
            .open_shell(stderr)
            .await
            .with_context(|| self.target.stage("connect"))?;
        self.shell = Some(shell);
        Ok(())
    }

    /// Read the host's state and, unless `read_only`, take its lock in the same flights.
    pub async fn survey(&mut self, read_only: bool) -> Result<()> {
        self.survey_while_scanning(read_only, None, false).await
    }

    /// Remember on this machine that release `id`, holding the tree with `digest`, is live
    /// here: the next deploy of the same tree expects nothing to change (see `seen`). Only
    /// deploy scripts leave the digest link an SFTP-only deploy would need.
    pub fn remember_live(&self, id: &ReleaseId, digest: &str) {
        if let Some(seen) = Seen::of(&self.target).filter(|_| !self.target.sftp_only) {
            seen.write(id, digest);
        }
    }

    /// [`HostDeploy::survey`] while the source may still be scanned (`scan`): the survey's
    /// reads go out at once, but nothing is written (the lock) and no command started (the
    /// shell for the script, with `start_shell`) before the scan is done and good.
    ///
    /// With the scan's tree digest, a host that already has that tree live is told from the
    /// survey's first flight (`.cutover/current-digest`, see [`Survey::claim`]), and is then
    /// neither locked nor surveyed further: [`HostDeploy::unchanged`] names its release, and
    /// the manifest is never read. When this machine saw that tree live there last time
    /// ([`Seen`]), the first flight also looks at the release, and nothing else is sent: one
    /// flight after the handshake. Otherwise the lock is half-taken in the first flight (a
    /// deploy that builds takes it in the second), and given back in the second: two flights.
    /// An SFTP-only host (whose deploys keep no digest) is surveyed in full.
    pub async fn survey_while_scanning(
        &mut self,
        read_only: bool,
        scan: Option<ScanWatch>,
        start_shell: bool,
    ) -> Result<()> {
        let over_sftp = self.target.sftp_only && !read_only;
        if over_sftp {
            // Known from the SFTP handshake: refused before anything is locked or built.
            SftpRun::require_posix_rename(&self.session, &self.target, "connect").await?;
        }
        // An SFTP-only deploy spreads its work over several SFTP channels: they open while
        // the survey's flights travel.
        let channels = async {
            if over_sftp {
                Some(self.session.sftp_channels(over_sftp::CHANNELS).await)
            } else {
                None
            }
        };
        // Whether the live manifest is needed: known after the first flight (see
        // `Survey::read_unless`), or as soon as a claim cannot make it unneeded.
        let (manifest_unneeded, unneeded) = tokio::sync::oneshot::channel::<bool>();
        let gate = std::cell::RefCell::new(Some(manifest_unneeded));
        let tell = |unneeded: bool| {
            if let Some(tx) = gate.borrow_mut().take() {
                let _ = tx.send(unneeded);
            }
        };
        let timed = async {
            let t = Instant::now();
            let r = Survey::read_unless(&self.session, &self.layout, async {
                unneeded.await.unwrap_or(false)
            })
            .await;
            (r, t.elapsed())
        };
        // Declared shared files must be there before anything is uploaded or built: looked at
        // in the survey's first flight.
        let (session, layout) = (&self.session, &self.layout);
        // Declared shared directories too: one that is a file stops the deploy here, not
        // after the copy and the upload.
        let declared = (self.target.shared.files.iter().map(|f| (f, true)))
            .chain(self.target.shared.dirs.iter().map(|d| (d, false)));
        let shared_kinds = futures::future::join_all(declared.map(|(p, file)| {
            let path = layout.at(&format!("{}/{p}", crate::layout::SHARED));
            async move { (p.clone(), file, session.path_kind(&path).await) }
        }));
        let digest_now = || match scan.as_ref().map(|s| s.borrow().clone()) {
            Some(Scanned::Done { digest, .. }) => digest,
            _ => None,
        };
        let wants_claim = !read_only && !self.target.sftp_only && scan.is_some();
        // The release and digest this machine saw live here last: when the source still has
        // that digest, nothing is expected to change (see `seen`).
        let seen = wants_claim
            .then(|| Seen::of(&self.target).and_then(|s| s.read()))
            .flatten();
        let expected = seen.as_ref().map(|(id, _)| id);
        let claiming = async {
            if !wants_claim {
                tell(false);
                return None;
            }
            let claim = Survey::claim(session, layout, expected).await;
            // The manifest is held back only while this claim may still make it unneeded:
            // the scan is done, and its digest is the one claimed.
            let may = claim
                .as_ref()
                .is_some_and(|c| digest_now().as_deref() == Some(c.digest.as_str()));
            if !may {
                tell(false);
            }
            claim
        };
        let want_shell = start_shell && self.shell.is_none() && !self.target.sftp_only;
        let stderr = Stderr::new(&self.out.prefix, self.out.quiet);
        let preparing = async {
            if read_only {
                return Prepared::Nothing;
            }
            if let Some(mut scan) = scan.clone() {
                let done = scan.wait_for(|s| *s != Scanned::Running).await;
                if !matches!(done.as_deref(), Ok(Scanned::Done { .. })) {
                    return Prepared::ScanFailed;
                }
            }
            let shell = async {
                match want_shell {
                    true => Some(session.open_shell(stderr).await),
                    false => None,
                }
            };
            // Nothing expected to change: the lock is not half-taken on speculation (giving it
            // back would cost a flight of its own), only once the claim turns out wrong.
            let expect_unchanged = seen
                .as_ref()
                .is_some_and(|(_, digest)| digest_now().as_deref() == Some(digest.as_str()));
            if expect_unchanged {
                let shell = shell.await;
                return Prepared::Ready(Box::new(ReadyToLock {
                    shell,
                    pending: None,
                }));
            }
            let (shell, pending) = tokio::join!(shell, lock::prepare(session, layout, DEPLOY));
            Prepared::Ready(Box::new(ReadyToLock {
                shell,
                pending: Some(pending),
            }))
        };
        let locking = async {
            let (claim, prepared) = tokio::join!(claiming, preparing);
            let (shell, pending) = match prepared {
                Prepared::Nothing => {
                    tell(false);
                    return (Locking::ReadOnly, None);
                }
                Prepared::ScanFailed => {
                    tell(false);
                    return (Locking::ScanFailed, None);
                }
                Prepared::Ready(ready) => {
                    let ReadyToLock { shell, pending } = *ready;
                    match pending.transpose() {
                        Ok(pending) => (shell, pending),
                        Err(e) => {
                            tell(false);
                            return (Locking::Taken(Err(e)), shell);
                        }
                    }
                }
            };
            let take = |pending: Option<lock::Pending>| async move {
                match pending {
                    Some(pending) => pending.take(session, layout).await,
                    None => lock::acquire(session, layout, DEPLOY).await,
                }
            };
            let claim = match (claim, digest_now()) {
                (Some(claim), Some(digest)) if claim.digest == digest => claim,
                _ => {
                    tell(false);
                    return (Locking::Taken(take(pending).await), shell);
                }
            };
            let whole = async {
                match claim.whole {
                    Some(whole) => whole,
                    None => Survey::release_is_whole(session, layout, &claim.release).await,
                }
            };
            let abandoned = async {
                match pending {
                    Some(pending) => pending.abandon(session).await,
                    None => Ok(()),
                }
            };
            let (whole, abandoned) = tokio::join!(whole, abandoned);
            if whole && abandoned.is_ok() {
                tell(true);
                return (Locking::Unchanged(claim.release), shell);
            }
            // The digest named a release that is not whole (or the half-taken lock would not
            // go): survey in full, and take the lock anew.
            tell(false);
            let held = lock::acquire(session, layout, DEPLOY).await;
            (Locking::Taken(held), shell)
        };
        // An upload large enough to travel in parts over several channels has a second
        // channel ready when it starts; a tree smaller than one part never needs it.
        let spare = async {
            let Some(mut scan) = scan.clone().filter(|_| !read_only) else {
                return;
            };
            let bytes = match scan.wait_for(|s| *s != Scanned::Running).await.as_deref() {
                Ok(Scanned::Done { bytes, .. }) => *bytes,
                _ => return,
            };
            if bytes > archive::PART_BYTES && archive::max_parts(self.uploading_hosts()) > 1 {
                session.open_spare_sftp().await;
            }
        };
        let ((survey, took), (locking, shell), shared_kinds, channels, ()) =
            tokio::join!(timed, locking, shared_kinds, channels, spare);
        match shell {
            Some(Ok(shell)) => self.shell = Some(shell),
            Some(Err(e)) => {
                if let Locking::Taken(Ok(held)) = locking {
                    self.lock = Some(held);
                    self.give_back_lock().await;
                }
                return Err(e.context(self.target.stage("connect")));
            }
            None => {}
        }
        let locked = match locking {
            Locking::ReadOnly | Locking::ScanFailed => None,
            Locking::Taken(held) => Some(held),
            Locking::Unchanged(id) => {
                if let Some((f, _, _)) = shared_kinds
                    .iter()
                    .find(|(_, file, kind)| *file && matches!(kind, Ok(PathKind::Missing)))
                {
                    return Err(
                        anyhow!(self.missing_shared(f)).context(self.target.stage("survey"))
                    );
                }
                self.report.previous = Some(id.to_string());
                self.out.stage(format_args!(
                    "surveyed: release {id} holds this tree already"
                ));
                self.unchanged = Some(id);
                return Ok(());
            }
        };
        if let (crate::config::Host::Ssh { .. }, Ok(survey)) = (&self.target.host, &survey) {
            // Its flights of small requests: a fair measure of one round trip.
            self.report.rtt_ms = Some(took.as_secs_f64() * 1000.0 / f64::from(survey.flights));
        }
        let locked = match locked {
            None => None,
            Some(Ok(held)) => Some(held),
            Some(Err(e)) => return Err(self.lock_refused(e).context(self.target.stage("lock"))),
        };
        self.lock = locked;
        match channels {
            Some(Ok(channels)) => {
                self.sftp = Some(SftpRun::new(
                    channels,
                    self.layout.clone(),
                    self.out.clone(),
                ))
            }
            Some(Err(e)) => {
                self.give_back_lock().await;
                return Err(e.context(self.target.stage("connect")));
            }
            None => {}
        }
        let survey = match survey {
            Ok(s) => s,
            Err(e) => {
                self.give_back_lock().await;
                return Err(e.context(self.target.stage("survey")));
            }
        };
        let shared_problem = shared_kinds
            .iter()
            .find_map(|(p, file, kind)| self.shared_problem(p, *file, kind.as_ref().ok()?));
        let problem = shared_problem.or_else(|| survey.layout_problem(&self.layout)).or_else(|| match &survey.current {
            Current::NotALink(_) => Some(crate::error::with_hint(
                format!(
                    "{} is not a symlink. It was probably made by a tool that deploys in place",
                    self.layout.current()
                ),
                format!(
                    "move it into releases/ and replace it with a link, once (the site is down for that moment), e.g.: cd {} && mkdir -p releases && mv current releases/00000000000000-old && ln -s releases/00000000000000-old current (cutover leaves non-release names in releases/ alone)",
                    crate::shell::quote(self.layout.root())
                ),
            )),
            _ => None,
        });
        if let Some(problem) = problem {
            self.give_back_lock().await;
            return Err(anyhow!(problem).context(self.target.stage("survey")));
        }
        for note in &survey.notes {
            self.out.warn(note);
            self.report.warnings.push(note.clone());
        }
        self.report.previous = survey.live_id().map(ReleaseId::to_string);
        self.survey = Some(survey);
        if self.lock.is_some() {
            self.phase = Phase::Locked;
        }
        self.out.stage(if self.lock.is_some() {
            "surveyed and locked"
        } else {
            "surveyed (no lock: nothing is written)"
        });
        Ok(())
    }

    /// What is wrong with declared shared path `p` on the host, if anything (see
    /// [`shared_path_problem`]), as an error message with its hint.
    fn shared_problem(&self, p: &str, file: bool, kind: &PathKind) -> Option<String> {
        let (problem, fix) = shared_path_problem(
            &self.target,
            &self.layout,
            self.session.login(),
            p,
            file,
            kind,
        )?;
        Some(crate::error::with_hint(problem, fix))
    }

    /// The message for a declared shared file (`shared_files`) that is not on the host.
    pub fn missing_shared(&self, f: &str) -> String {
        self.shared_problem(f, true, &PathKind::Missing)
            .expect("a missing shared file is a problem")
    }

    /// Plan this host's release against its own live manifest.
    pub fn plan(&mut self, new: &Manifest, full: bool) -> &Plan {
        let survey = self.survey.as_ref().expect("surveyed before planning");
        let plan = Plan::build(survey.live.as_ref().map(|(id, m)| (id, m)), new, full);
        self.report.uploaded = plan.files_to_upload();
        self.report.deleted = plan.deletes.len();
        self.report.unchanged = plan.unchanged;
        self.plan = Some(plan);
        self.plan.as_ref().expect("just set")
    }

    /// Start the upload as soon as this host is surveyed and locked (and does not hold the
    /// tree already), under the release name this host alone would give it: a fleet's one
    /// name is known only once every host is surveyed, and is nearly always the same (see
    /// `prepare`). The archives then travel while the slowest hosts are still surveyed. Not
    /// for a plan that uploads nothing, nor over SFTP alone; when it cannot start, `prepare`
    /// starts it and says why.
    pub async fn upload_early(
        &mut self,
        new: &Manifest,
        now: chrono::DateTime<chrono::Utc>,
        full: bool,
    ) {
        if self.target.sftp_only || self.lock.is_none() || self.unchanged.is_some() {
            return;
        }
        let Some(survey) = self.survey.as_ref() else {
            return;
        };
        let name = ReleaseId::next(&survey.releases, now)
            .and_then(|id| id.avoiding(&survey.taken_names()));
        let Ok(name) = name else { return };
        if self.plan(new, full).noop {
            return;
        }
        if self.start_upload(&name, new).await.is_err() {
            self.upload = None;
        }
    }

    /// Start uploading the planned files (in archive parts) and open the manifest's file in
    /// `.cutover/staging/NAME`, on a task of its own (see [`Upload`]). A killed deploy's
    /// staging directory of that name goes first.
    async fn start_upload(&mut self, name: &ReleaseId, new: &Manifest) -> Result<()> {
        let stage = self.target.stage("upload");
        let layout = &self.layout;
        let staging = layout.staging(name);
        let leftover = self
            .survey
            .as_ref()
            .is_some_and(|s| s.staging.iter().any(|e| e.name == name.as_str()));
        if leftover {
            self.session
                .remove_tree(&staging)
                .await
                .with_context(|| stage.clone())?;
        }
        let plan = self.plan.as_ref().expect("planned before uploading");
        // A first deploy's archive also carries every directory, so empty ones exist too.
        let mut packed: Vec<String> = match plan.base {
            Base::Empty => new
                .entries
                .iter()
                .filter(|(_, e)| e.is_dir())
                .map(|(p, _)| p.clone())
                .collect(),
            Base::Previous(_) => Vec::new(),
        };
        packed.extend(plan.uploads.iter().cloned());
        let parts = archive::split(new, packed, archive::max_parts(self.uploading_hosts()));
        let max_in_flight = archive::in_flight_per_part(self.uploading_hosts(), parts.len());
        let files = [
            (layout.staging_manifest(name), 0o644),
            (layout.staging_archive(name, 0), 0o600),
        ];
        let source = self.target.source.clone();
        let mut archives: Vec<(String, archive::Chunks)> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let chunks = match &self.fleet_upload {
                    Some(fleet) => fleet.packs.pack(source.clone(), new, part),
                    None => archive::pack(source.clone(), new, part),
                };
                (layout.staging_archive(name, i), chunks)
            })
            .collect();
        let parts = archives.len();
        let progress = std::sync::Arc::new(Progress::new(plan.upload_bytes, &self.out));
        let (opened, manifest) = tokio::sync::oneshot::channel();
        let session = self.session.clone();
        let task = {
            let progress = progress.clone();
            async move {
                // One flight: staging made, its files opened.
                let files = session
                    .open_staging(&staging, &files)
                    .await
                    .with_context(|| stage.clone())?;
                let [manifest_file, first]: [OpenFile; 2] =
                    files.try_into().ok().expect("opened as asked");
                let _ = opened.send(manifest_file);
                let sent = if archives.is_empty() {
                    session.finish_file(first, b"").await.map(|_| 0)
                } else {
                    let (_, chunks) = archives.remove(0);
                    session
                        .upload_archives((first, chunks), archives, max_in_flight, &*progress)
                        .await
                };
                sent.with_context(|| format!("{stage}: cannot upload into {staging}"))
            }
        };
        let (task, sent) = task.remote_handle();
        tokio::spawn(task);
        self.upload = Some(Upload {
            name: name.clone(),
            parts,
            manifest,
            sent,
            progress,
        });
        Ok(())
    }

    /// Upload the changed files and the manifest into staging while the deploy script starts
    /// (and copies the previous release), then tell it the upload is done; [`until_ready`]
    /// waits for the build. With `pipelined` (a fleet of one) the `go` and `commit` words
    /// travel with `upload-done`: the script then runs to its end without waiting for the
    /// client.
    ///
    /// [`until_ready`]: HostDeploy::until_ready
    ///
    /// With `--emit-script` the script is returned instead of run.
    pub async fn prepare(
        &mut self,
        id: &ReleaseId,
        new: &Manifest,
        digest: &str,
        opts: &Options,
        pipelined: bool,
    ) -> Result<Option<String>> {
        let target = self.target.clone();
        let layout = self.layout.clone();
        let stage = |s: &str| target.stage(s);
        let plan = self.plan.clone().expect("planned before preparing");
        self.report.release = Some(id.to_string());
        self.out.stage(format_args!(
            "release {id}: {} to upload ({}){}, {} to delete, {} unchanged{}",
            plan.files_to_upload(),
            bytes(plan.upload_bytes),
            shared_links_note(&plan),
            plan.deletes.len(),
            plan.unchanged,
            match &plan.base {
                Base::Empty => " (new release from scratch)".to_string(),
                Base::Previous(p) => format!(" (based on {p})"),
            }
        ));
        if self.sftp.is_some() && !opts.emit_script {
            self.build_over_sftp(id, new, &plan).await?;
            return Ok(None);
        }
        // The upload started when this host was surveyed, under the name this host alone
        // would give the release. The fleet's name differs only when another host has a newer
        // release (a clock ahead of this one's): the upload then starts again under it.
        if let Some(early) = self.upload.take_if(|u| u.name != *id) {
            let name = early.name.clone();
            drop(early);
            self.out.stage(format_args!(
                "the fleet's release is newer than {name} (another host has a newer release): uploading again under {id}"
            ));
            self.session
                .remove_tree(&layout.staging(&name))
                .await
                .with_context(|| stage("upload"))?;
        }
        if self.upload.is_none() {
            self.start_upload(id, new).await?;
        }
        let upload = self.upload.take().expect("started");
        let staging = layout.staging(id);
        let token = self
            .lock
            .as_ref()
            .map(|l| l.token().to_string())
            .unwrap_or_default();
        let emitted_token = crate::lock::LockInfo::ours(DEPLOY).token;
        let text = script::deploy_script(
            &target,
            &DeployScript {
                id,
                digest,
                plan: &plan,
                archives: upload.parts,
                lock: if opts.emit_script {
                    script::Lock::TakenByScript
                } else {
                    script::Lock::HeldByClient
                },
                token: if opts.emit_script {
                    &emitted_token
                } else {
                    &token
                },
                talk: !opts.emit_script,
            },
        );

        let HostDeploy { session, shell, .. } = &mut *self;
        // The script goes to the waiting shell while the upload travels (its copy of the
        // previous release then overlaps the upload).
        if let Some(sh) = shell.as_mut().filter(|_| !opts.emit_script) {
            sh.send_script(&text).await.with_context(|| stage("run"))?;
        }
        let mut record = new.clone();
        record.meta.insert("release".into(), id.to_string());
        let manifest_text = record.render().into_bytes();
        let Upload {
            manifest,
            sent,
            progress,
            ..
        } = upload;
        let written = async {
            match manifest.await {
                Ok(file) => session.finish_file(file, &manifest_text).await,
                // Staging could not be made: the upload's error says why.
                Err(_) => Ok(()),
            }
        };
        let started = async {
            match shell.as_mut() {
                Some(sh) if !opts.emit_script => wait_started(sh).await,
                _ => Ok(()),
            }
        };
        let (sent, written, started) = tokio::join!(sent, written, started);
        progress.finish();
        let written =
            written.with_context(|| format!("{}: cannot upload into {staging}", stage("upload")));
        let sent = sent.and_then(|n| written.map(|()| n));
        if sent.is_err() && self.script_stopped_by_itself().await {
            // The script stopped on a check of its own (and removed staging under the upload):
            // its reason is the one to tell.
            return Err(self.script_ended("run").await);
        }
        let sent = sent?;
        self.report.bytes_sent = sent;
        self.out
            .stage(format_args!("uploaded {} into {staging}", bytes(sent)));
        if opts.emit_script {
            return Ok(Some(text));
        }
        if started.is_err() {
            return Err(self.script_ended("run").await);
        }
        self.script_started = true;

        let shell = self.shell.as_mut().expect("a shell runs the script");
        let words: &[&str] = if pipelined {
            &[word::UPLOAD_DONE, word::GO, word::COMMIT]
        } else {
            &[word::UPLOAD_DONE]
        };
        for w in words {
            shell.say(w).await.with_context(|| stage("run"))?;
        }
        self.pipelined = pipelined;
        Ok(None)
    }

    /// Has the running script ended (or does it within a moment)?
    async fn script_stopped_by_itself(&mut self) -> bool {
        if self.session.lost().await.is_some() {
            return false; // the connection failed the upload, not the script
        }
        let Some(shell) = self.shell.as_mut() else {
            return false;
        };
        if !shell.started() {
            return false;
        }
        tokio::time::timeout(Duration::from_secs(2), async {
            while shell.next_line().await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// Wait until the script has built the release and passed its before_swap hooks (an
    /// SFTP-only host is ready once prepared).
    pub async fn until_ready(&mut self) -> Result<()> {
        if self.sftp.is_some() {
            return Ok(());
        }
        loop {
            match self.next_line().await {
                Some(Line::Ready { links, .. }) => {
                    self.report.shared_links = links;
                    self.ready_at = Some(Instant::now());
                    self.phase = Phase::Ready;
                    self.out.stage("built and ready to switch");
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    let stage = if self.rolling_back { "rollback" } else { "run" };
                    return Err(self.script_ended(stage).await);
                }
            }
        }
    }

    /// Start the rollback script from `from` to `to` and wait until it is ready to switch (it
    /// takes the lock itself). Pipelined like [`HostDeploy::prepare`] for a fleet of one.
    pub async fn prepare_rollback(
        &mut self,
        from: &ReleaseId,
        to: &ReleaseId,
        pipelined: bool,
    ) -> Result<()> {
        let stage = self.target.stage("rollback");
        self.rolling_back = true;
        self.report.release = Some(to.to_string());
        self.report.previous = Some(from.to_string());
        if self.target.sftp_only {
            return self.prepare_rollback_over_sftp(from, to).await;
        }
        let token = crate::lock::LockInfo::ours("cutover rollback").token;
        let text = script::rollback_script(&self.target, from, to, &token, true);
        self.start_shell().await?;
        let shell = self.shell.as_mut().expect("just opened");
        shell.send_script(&text).await.context(stage.clone())?;
        if wait_started(shell).await.is_err() {
            return Err(self.script_ended("rollback").await);
        }
        self.script_started = true;
        if pipelined {
            for w in [word::GO, word::COMMIT] {
                shell.say(w).await.context(stage.clone())?;
            }
        }
        self.pipelined = pipelined;
        self.until_ready().await
    }

    /// Switch `current` (send `go` unless it went ahead) and wait for the verify hooks'
    /// verdict: true when they passed. An error when the script stopped first.
    pub async fn go(&mut self) -> Result<bool> {
        if self.sftp.is_some() {
            return self.swap_over_sftp().await;
        }
        if !self.pipelined {
            self.say(word::GO).await?;
        }
        let sent = Instant::now();
        let mut swapped = false;
        loop {
            match self.next_line().await {
                Some(Line::Swapped { .. }) => {
                    swapped = true;
                    self.phase = Phase::Swapped;
                    let seen = Instant::now();
                    // The host switched about halfway between the word leaving and the answer
                    // arriving: a word and an answer travel the same link. A fleet of one sent
                    // `go` long before, with its upload.
                    if !self.pipelined {
                        let round_trip = seen - sent;
                        self.one_way = Some(round_trip / 2);
                        if let crate::config::Host::Ssh { .. } = self.target.host {
                            self.report.rtt_ms = Some(round_trip.as_secs_f64() * 1000.0);
                        }
                    }
                    self.report.switched_at_ms = Some(self.ms_at(seen));
                    self.out.stage("switched");
                }
                Some(Line::Verified(ok)) => return Ok(ok),
                Some(_) => {}
                None => {
                    let _ = swapped;
                    return Err(self.script_ended("swap").await);
                }
            }
        }
    }

    /// Make the switch final (send `commit` unless it went ahead): after_swap hooks, prune,
    /// unlock. Returns the script's status (0, or 3 when a hook or the clean-up failed).
    pub async fn commit(&mut self) -> Result<u32> {
        if self.sftp.is_some() {
            return Ok(self.commit_over_sftp().await);
        }
        if !self.pipelined {
            self.say(word::COMMIT).await?;
        }
        loop {
            match self.next_line().await {
                Some(Line::Result {
                    links,
                    status,
                    warnings,
                }) => {
                    self.report.shared_links = links;
                    self.phase = Phase::Done;
                    self.report.status = Status::Live;
                    self.collect_warnings(warnings);
                    self.finished();
                    return Ok(status);
                }
                Some(_) => {}
                None => return Err(self.script_ended("commit").await),
            }
        }
    }

    /// Before the switch: tell the script to stop; it removes what it built and the lock.
    /// After it: switch back. Waits until the script has ended.
    pub async fn call_off(&mut self) {
        if self.sftp.is_some() {
            self.call_off_over_sftp().await;
        }
        if let Some(shell) = self.shell.as_mut() {
            if shell.exit_code().is_none() {
                let w = if self.phase == Phase::Swapped {
                    word::REVERT
                } else {
                    word::ABORT
                };
                if shell.started() {
                    let _ = shell.say(w).await;
                }
                shell.close_input().await;
            }
            // (also the lines of a script that ended by itself: they say whether it went back)
            let mut reverted = false;
            let _ = tokio::time::timeout(Duration::from_secs(120), async {
                while let Some(line) = shell.next_line().await {
                    reverted |= Line::parse(&line) == Line::Reverted;
                }
            })
            .await;
            if reverted {
                self.reverted();
            }
        }
        if self.phase == Phase::Swapped && self.report.status != Status::Reverted {
            // It switched and never said it switched back: it may still be on the new release.
            self.report.status = Status::Unknown;
            self.stuck = self.shell.as_ref().and_then(Shell::exit_code) == Some(Some(4));
            let why = if self.stuck {
                format!(
                    "{}: its script could not switch current back: release {} stays live there",
                    self.target.stage("revert"),
                    self.report.release.as_deref().unwrap_or("?")
                )
            } else {
                format!(
                    "{}: the end of its script was not seen; on the server the script switches back by itself when it sees its client gone",
                    self.target.stage("revert")
                )
            };
            self.report.error = Some(why);
        }
        self.finished();
        self.clean_up().await;
    }

    // --- an SFTP-only host: the same stages, carried out by deploy::sftp ----------------------

    /// Build the release up to "ready": renamed to `releases/ID`, its manifest stored.
    async fn build_over_sftp(&mut self, id: &ReleaseId, new: &Manifest, plan: &Plan) -> Result<()> {
        let mut record = new.clone();
        record.meta.insert("release".into(), id.to_string());
        let progress = Progress::new(plan.upload_bytes, &self.out);
        let HostDeploy {
            session,
            sftp,
            target,
            survey,
            ..
        } = &mut *self;
        let run = sftp
            .as_mut()
            .expect("an SFTP-only host's run starts with its survey");
        let built = session
            .guard(run.build(over_sftp::Build {
                target,
                id,
                plan,
                new,
                survey: survey.as_ref().expect("surveyed before preparing"),
                record: record.render(),
                progress: &progress,
            }))
            .await;
        progress.finish();
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                let e = match self.full_file_system(&e).await {
                    Some(full) => e.context(full),
                    None => e,
                };
                return Err(e.context(self.target.stage("build")));
            }
        };
        self.report.bytes_sent = built.bytes_sent;
        self.report.shared_links = built.links;
        self.phase = Phase::Ready;
        self.out.stage("built and ready to switch");
        Ok(())
    }

    /// When an SFTP request failed with the protocol's bare "Failure" (which is all OpenSSH's
    /// sftp-server says for a full disk, a quota or no free inodes) and the deploy path's file
    /// system has (almost) no room left: what to say about it. statvfs@openssh.com tells.
    async fn full_file_system(&self, e: &anyhow::Error) -> Option<String> {
        let failure = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<russh_sftp::client::error::Error>(),
                Some(russh_sftp::client::error::Error::Status(s))
                    if s.status_code == russh_sftp::protocol::StatusCode::Failure
            )
        });
        let crate::remote::Session::Ssh(ssh) = &self.session else {
            return None;
        };
        if !failure || !ssh.sftp.offers(crate::remote::sftp::STATVFS).await {
            return None;
        }
        let fs = ssh.sftp.statvfs(self.layout.root()).await.ok()?;
        let free = fs.blocks_avail.saturating_mul(fs.fragment_size.max(1));
        let (bytes_out, inodes_out) = (free < 1024 * 1024, fs.inodes > 0 && fs.inodes_free == 0);
        (bytes_out || inodes_out).then(|| {
            format!(
                "no space left on the file system of {} ({} free, {} free inodes): free some space there (or ask the host for a larger quota) and deploy again",
                self.layout.root(),
                bytes(free),
                fs.inodes_free
            )
        })
    }

    /// A rollback of an SFTP-only host: the lock, then the checks; ready to swap.
    async fn prepare_rollback_over_sftp(&mut self, from: &ReleaseId, to: &ReleaseId) -> Result<()> {
        let stage = self.target.stage("rollback");
        SftpRun::require_posix_rename(&self.session, &self.target, "rollback").await?;
        let lock = lock::acquire(&self.session, &self.layout, "cutover rollback")
            .await
            .map_err(|e| self.lock_refused(e).context(stage.clone()))?;
        self.lock = Some(lock);
        let channels = self.session.sftp_channels(1).await.context(stage.clone())?;
        let run = self.sftp.insert(SftpRun::new(
            channels,
            self.layout.clone(),
            self.out.clone(),
        ));
        self.session
            .guard(run.prepare_rollback(from, to))
            .await
            .context(stage)?;
        self.phase = Phase::Ready;
        Ok(())
    }

    /// `go` for an SFTP-only host: the swap, read back (no verify hooks: there are none).
    async fn swap_over_sftp(&mut self) -> Result<bool> {
        let HostDeploy { session, sftp, .. } = &mut *self;
        let run = sftp.as_mut().expect("checked by the caller");
        session
            .guard(run.swap())
            .await
            .with_context(|| self.target.stage("swap"))?;
        self.phase = Phase::Swapped;
        self.report.switched_at_ms =
            Some(crate::output::started().elapsed().as_secs_f64() * 1000.0);
        self.out.stage("switched");
        Ok(true)
    }

    /// `commit` for an SFTP-only host: prune, staging and the lock; 0, or 3 when something was
    /// left behind. The release is live whatever happens here.
    async fn commit_over_sftp(&mut self) -> u32 {
        let lock = self.lock.take();
        let HostDeploy { session, sftp, .. } = &mut *self;
        let run = sftp.as_mut().expect("checked by the caller");
        let status = match session.guard(run.commit(lock).map(Ok)).await {
            Ok(status) => status,
            Err(e) => {
                self.out.warn(format_args!(
                    "the release is live, but the clean-up after it stopped ({e:#}): if {} is left, run `{}`",
                    self.layout.lock(),
                    self.target.unlock_command()
                ));
                3
            }
        };
        let run = self.sftp.as_ref().expect("checked by the caller");
        self.report.script_warnings = run.warning_count();
        self.report.warnings.extend(run.warnings());
        self.phase = Phase::Done;
        self.report.status = Status::Live;
        status
    }

    /// `call_off` for an SFTP-only host: undo what the run made (switching back first when it
    /// had switched); staging and the lock follow in [`HostDeploy::clean_up`].
    async fn call_off_over_sftp(&mut self) {
        let HostDeploy { session, sftp, .. } = &mut *self;
        let run = sftp.as_mut().expect("checked by the caller");
        let swapped = run.may_have_swapped();
        let outcome = session
            .guard(run.call_off().map(Ok))
            .await
            .unwrap_or(if swapped {
                CalledOff::Unknown
            } else {
                CalledOff::Untouched
            });
        match outcome {
            CalledOff::Reverted => self.report.status = Status::Reverted,
            CalledOff::Unknown => self.report.status = Status::Unknown,
            CalledOff::Untouched => {}
        }
    }

    /// The error for a lock someone else holds: the holder, and what to do.
    fn lock_refused(&mut self, e: anyhow::Error) -> anyhow::Error {
        match e.downcast_ref::<LockHeld>() {
            Some(held) => {
                self.refused_by = Some(held.token.clone());
                anyhow!(crate::error::with_hint(
                    format!(
                        "{} is locked by another deploy ({})",
                        self.layout.root(),
                        held.holder
                    ),
                    format!(
                        "if no deploy is running (one was killed), run `{}`",
                        self.target.unlock_command()
                    )
                ))
            }
            None => e,
        }
    }

    /// Send a word to the running script.
    async fn say(&mut self, w: &str) -> Result<()> {
        let stage = self.target.stage("swap");
        let shell = self.shell.as_mut().expect("a shell runs the script");
        shell.say(w).await.context(stage)
    }

    async fn next_line(&mut self) -> Option<Line> {
        let shell = self.shell.as_mut()?;
        let line = shell.next_line().await?;
        let parsed = Line::parse(&line);
        if parsed == Line::Reverted {
            self.reverted();
        }
        Some(parsed)
    }

    /// The script said it switched back.
    fn reverted(&mut self) {
        self.report.status = Status::Reverted;
        self.report.reverted_at_ms = Some(self.ms_at(Instant::now()));
    }

    /// When the host did what the line seen at `seen` says, in milliseconds since the command
    /// started: one one-way trip before it was seen.
    fn ms_at(&self, seen: Instant) -> f64 {
        let at = seen - self.one_way.unwrap_or_default();
        at.saturating_duration_since(crate::output::started())
            .as_secs_f64()
            * 1000.0
    }

    /// This host's part failed: the report keeps why (without the hint) and when.
    /// Without waiting: has this host's script stopped waiting for the client on its own (no
    /// word within barrier_timeout: it ended before the swap, or switched back after it)?
    pub fn stopped_waiting(&mut self) -> bool {
        self.sftp.is_none()
            && self
                .shell
                .as_mut()
                .is_some_and(|sh| sh.ended_or_said(&[crate::script::protocol::REVERTED]))
    }

    /// The error for a host that stopped waiting at the barrier by itself.
    pub fn gave_up(&self, word: &str) -> anyhow::Error {
        anyhow!(
            "{}: the host stopped waiting for `{word}` after barrier_timeout ({} s) while other hosts were still at work: raise barrier_timeout above the longest before_swap and verify hooks of any host",
            self.target.stage("barrier"),
            self.target.barrier_timeout
        )
    }

    pub fn failed(&mut self, e: &anyhow::Error) {
        if self.report.error.is_none() {
            let text = format!("{e:#}");
            let text = match text.split_once("\nhint: ") {
                Some((message, _)) => message.to_string(),
                None => text,
            };
            self.report.error = Some(text);
        }
        self.finished();
    }

    /// This host's part is over: note when (the first time).
    fn finished(&mut self) {
        if self.report.seconds == 0.0 {
            self.report.seconds = crate::output::started().elapsed().as_secs_f64();
        }
    }

    fn collect_warnings(&mut self, count: u64) {
        let captured = self.shell.as_ref().map(Shell::warnings).unwrap_or_default();
        self.report.warnings.extend(captured);
        self.report.script_warnings = count;
    }

    /// The script ended before saying what was expected: explain how, in one error.
    async fn script_ended(&mut self, stage: &str) -> anyhow::Error {
        let stage = self.target.stage(stage);
        let name = &self.target.name;
        let id = self.report.release.clone().unwrap_or_default();
        let (script, by_hand) = if self.rolling_back {
            (
                "rollback script",
                "an SFTP-only target rolls back with SFTP requests alone",
            )
        } else {
            (
                "deploy script",
                "`cutover deploy --emit-script` prints the script to run by hand",
            )
        };
        let Some(shell) = self.shell.as_mut() else {
            return anyhow!("{stage}: no script is running");
        };
        let code = shell.wait().await;
        if shell.refused() {
            return anyhow!(crate::error::with_hint(
                format!("{stage}: the server refused to run the {script}: the account may be SFTP-only"),
                format!("`cutover check {name}` tells; set sftp_only = true for an SFTP-only account; {by_hand}")
            ));
        }
        if !shell.started() {
            let said = shell.stdout.join("\n");
            let said = said.trim();
            if let Some(nologin) = crate::remote::no_login_shell(said) {
                let user = self.session.login().map(|(u, _)| u);
                return anyhow!(crate::error::with_hint(
                    format!("{stage}: the account {nologin}; current is untouched"),
                    crate::remote::no_login_shell_fix(user.as_deref())
                ));
            }
            return anyhow!(crate::error::with_hint(
                format!(
                    "{stage}: the server ran something other than the {script} (exit {}{}): the account may be SFTP-only or have a forced command; current is untouched",
                    code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(", output {:?}", said.chars().take(200).collect::<String>())
                    }
                ),
                format!("`cutover check {name}` tells; for an SFTP-only account set sftp_only = true; {by_hand}")
            ));
        }
        if self.out.quiet {
            eprint!("{}", shell.kept_stderr());
        }
        let lost = self.session.lost().await;
        // Before the switch, nothing outside .cutover/ changed, whatever happened to the script.
        let switched = self.phase == Phase::Swapped;
        let (script, removed) = if self.rolling_back {
            ("rollback script", String::new())
        } else {
            ("deploy script", format!(" and release {id} was removed"))
        };
        match (code, self.report.status) {
            (_, Status::Reverted) => {
                anyhow!("{stage}: switched back: current points where it did before{removed}")
            }
            (Some(4), _) => {
                self.report.status = Status::Unknown;
                anyhow!(
                    "{stage}: the script could not switch current back: release {id} stays live"
                )
            }
            // What the script said first is why (a before_swap hook, a full disk): the error,
            // and the JSON report, say it rather than only the exit code.
            (Some(code), _) => match shell.first_error() {
                Some(why) => anyhow!(
                    "{stage}: {why} (the {script} exited {code}); current is untouched{removed}"
                ),
                None => anyhow!(
                    "{stage}: the {script} failed (exit {code}); current is untouched{removed}"
                ),
            },
            (None, _) => {
                if switched {
                    self.report.status = Status::Unknown;
                }
                anyhow!(crate::error::with_hint(
                    format!(
                        "{stage}: the connection ended before the {script} reported back{}",
                        lost.map(|w| format!(": the SSH connection to {} was lost ({w})", self.session.describe())).unwrap_or_default()
                    ),
                    format!("on the server the script finishes or undoes itself on its own; run `cutover releases {name}` to see which release is live")
                ))
            }
        }
    }

    /// Give the lock back, when this client holds it and no script took it over.
    pub async fn give_back_lock(&mut self) {
        // An upload started early stops, and what it wrote goes first: under the lock.
        if let Some(upload) = self.upload.take() {
            let staging = self.layout.staging(&upload.name);
            drop(upload);
            let _ = self.session.remove_tree(&staging).await;
        }
        if let Some(lock) = self.lock.take() {
            let _ = lock.release(&self.session, &self.layout).await;
        }
    }

    /// After a failure before the switch: make sure neither this deploy's staging nor its lock
    /// stays behind. A script that runs owns them: it removes both when it stops (its input
    /// ends when the connection does). A script that never got to run leaves them to the
    /// client, which removes them — over a new connection when the old one is gone — but only
    /// while the lock still carries this client's token.
    pub async fn clean_up(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        // (an upload started early and never taken by `prepare` stops here)
        let early = self.upload.take().map(|u| u.name.clone());
        let staging = early
            .or_else(|| self.report.release.as_deref().and_then(ReleaseId::parse))
            .map(|id| self.layout.staging(&id));
        // An SFTP-only run's temporaries (its partial release, probe, swap link): removed with
        // staging when the connection is lost before it could remove them itself.
        let built = self
            .sftp
            .as_ref()
            .map(SftpRun::temporaries)
            .unwrap_or_default();
        let script_runs = self.shell.as_ref().is_some_and(Shell::started);
        self.script_started |= script_runs;
        let lost = self.session.lost().await.is_some();
        let mut notes = Vec::new();
        if script_runs && lost {
            self.out.warn(
                "the deploy script on the server sees the connection end: it stops, removes what it built and its staging, and releases the lock",
            );
            return;
        }
        let mut done = if lost {
            false
        } else {
            try_clean(
                &self.session,
                &self.layout,
                &lock,
                staging.as_deref(),
                &built,
                &mut notes,
            )
            .await
        };
        if !done && lost {
            // The connection is what failed: once more over a new one.
            if let Ok(Ok(fresh)) =
                tokio::time::timeout(Duration::from_secs(15), Session::open(&self.target, false))
                    .await
            {
                notes.push("reconnected".into());
                done = try_clean(
                    &fresh,
                    &self.layout,
                    &lock,
                    staging.as_deref(),
                    &built,
                    &mut notes,
                )
                .await;
                fresh.close().await;
            }
        }
        let released_by_script = notes.iter().any(|n| n.contains("already released"));
        if done
            && (notes.is_empty() || released_by_script)
            && script_runs
            && self.report.status == Status::Unknown
        {
            notes.clear();
            notes.push("the deploy script released the lock".into());
        } else if done && (notes.is_empty() || released_by_script) && script_runs {
            notes.clear();
            // The script cleaned up after itself: say so, once checked.
            let gone = match &staging {
                Some(s) => matches!(self.session.path_kind(s).await, Ok(PathKind::Missing)),
                None => true,
            };
            if gone {
                notes.push(format!(
                    "the deploy script removed what it built and {}, and released the lock",
                    staging.as_deref().unwrap_or("its staging")
                ));
            }
        }
        if !done {
            notes.push(format!(
                "could NOT release the lock {}: run `{}`",
                self.layout.lock(),
                self.target.unlock_command()
            ));
        }
        if !notes.is_empty() {
            self.out
                .warn(format_args!("deploy abandoned: {}", notes.join(", ")));
        }
    }

    /// Print what the script owes the user when the client stops waiting (Ctrl-C twice).
    pub fn has_script(&self) -> bool {
        self.script_started
    }

    pub async fn close(self) {
        let HostDeploy { session, shell, .. } = self;
        if let Some(mut shell) = shell {
            // A shell that never got its script reads end-of-input and runs nothing.
            shell.close_input().await;
        }
        session.close().await;
    }
}

/// Read the shell's lines until the script's first: it runs, and has read all of itself.
async fn wait_started(shell: &mut Shell) -> Result<()> {
    while !shell.started() {
        if shell.next_line().await.is_none() {
            return Err(anyhow!("the script did not start"));
        }
    }
    Ok(())
}

/// Remove staging, what an SFTP-only run `built`, and the lock, when the lock is still ours;
/// true when nothing of ours is left.
async fn try_clean(
    session: &Session,
    layout: &Layout,
    lock: &HeldLock,
    staging: Option<&str>,
    built: &[String],
    notes: &mut Vec<String>,
) -> bool {
    match lock::read(session, layout).await {
        Ok(Some(info)) if info.token == lock.token() => {
            for path in built {
                match session.remove_tree(path).await {
                    Ok(()) => notes.push(format!("removed {path}")),
                    Err(_) => notes.push(format!("left {path} (the next deploy removes it)")),
                }
            }
            if let Some(staging) = staging {
                match session.remove_tree(staging).await {
                    Ok(()) => notes.push(format!("removed {staging}")),
                    Err(_) => notes.push(format!("left {staging} (the next deploy removes it)")),
                }
            }
            match lock::remove(session, layout).await {
                Ok(()) => {
                    notes.push("released the lock".into());
                    true
                }
                Err(_) => false,
            }
        }
        // Not ours (released by the script, or taken by someone else since): nothing to do.
        Ok(_) => {
            notes.push("the lock was already released (by the deploy script)".into());
            true
        }
        Err(_) => false,
    }
}

/// What is wrong with declared shared path `p` (a file when `file`, else a directory) being
/// `kind` in shared/ on the target, and the fix, if anything: a missing file (the fix: the
/// commands that put it there), a file that is a directory, a directory that is a file. A link
/// is taken as what it leads to; a missing directory is made by the deploy. (The deploy's survey
/// stops on these; check reports them.)
pub fn shared_path_problem(
    target: &Target,
    layout: &crate::layout::Layout,
    login: Option<(String, u16)>,
    p: &str,
    file: bool,
    kind: &PathKind,
) -> Option<(String, String)> {
    let path = layout.at(&format!("{}/{p}", crate::layout::SHARED));
    match (file, kind) {
        (true, PathKind::Missing) => Some((
            format!("the shared file {path} is missing (shared_files): a release would link to nothing"),
            format!(
                "put it there, e.g. {}, and deploy again",
                put_shared_file(target, layout, login, p)
            ),
        )),
        (true, PathKind::Dir) => Some((
            format!("the shared file {path} is a directory, but shared_files declares a file: every release would link to that directory"),
            format!("move it away (or declare {p:?} in shared_dirs instead), and deploy again"),
        )),
        (false, PathKind::File | PathKind::Other) => Some((
            format!("the shared directory {path} is not a directory, but shared_dirs declares one"),
            format!("move it away (or declare {p:?} in shared_files instead), and deploy again"),
        )),
        _ => None,
    }
}

/// The commands that copy this machine's `f` (relative to the source) to the declared shared
/// file on the target: `mkdir -p` of its directory first (the first deploy has made no
/// shared/ yet), then `cp`, or `ssh` and `scp` with the login the connection used.
pub fn put_shared_file(
    target: &Target,
    layout: &crate::layout::Layout,
    login: Option<(String, u16)>,
    f: &str,
) -> String {
    use crate::shell::quote;
    let path = layout.at(&format!("{}/{f}", crate::layout::SHARED));
    let dir = match path.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => dir.to_string(),
        _ => "/".to_string(),
    };
    match &target.host {
        crate::config::Host::Local => {
            format!(
                "mkdir -p {} && cp {} {}",
                quote(&dir),
                quote(f),
                quote(&path)
            )
        }
        crate::config::Host::Ssh { host, port, user } if target.sftp_only => {
            // An SFTP-only account runs no `mkdir`: an sftp batch makes each level (`-`: one
            // that exists is no error) and puts the file.
            let (user, port) = login.unwrap_or((user.clone(), *port));
            let shared = layout.at(crate::layout::SHARED);
            let mut lines: Vec<String> = vec![format!("-mkdir {}", sftp_word(&shared))];
            let mut level = shared.clone();
            for component in f.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                level = format!("{level}/{component}");
                lines.push(format!("-mkdir {}", sftp_word(&level)));
            }
            lines.push(format!("put {} {}", sftp_word(f), sftp_word(&path)));
            let port = match port {
                22 => String::new(),
                p => format!(" -P {p}"),
            };
            format!(
                "printf '%s\\n' {} | sftp -b -{port} {}",
                lines.iter().map(|l| quote(l)).collect::<Vec<_>>().join(" "),
                quote(&format!("{user}@{host}"))
            )
        }
        crate::config::Host::Ssh { host, port, user } => {
            let (user, port) = login.unwrap_or((user.clone(), *port));
            let at = format!("{user}@{host}");
            let (ssh_port, scp_port) = match port {
                22 => (String::new(), String::new()),
                p => (format!(" -p {p}"), format!(" -P {p}")),
            };
            // ssh hands its command to the remote shell: quoted once for it, once for ours
            let remote = quote(&format!("mkdir -p {}", quote(&dir)));
            format!(
                "ssh{ssh_port} {} {remote} && scp{scp_port} {} {}",
                quote(&at),
                quote(f),
                quote(&format!("{at}:{path}"))
            )
        }
    }
}

/// `, N links to shared/` for a plan that makes any (nothing otherwise).
pub fn shared_links_note(plan: &Plan) -> String {
    match plan.shared_links.len() {
        0 => String::new(),
        1 => ", 1 link to shared/".to_string(),
        n => format!(", {n} links to shared/"),
    }
}

/// `path` as one word of an sftp batch line: double-quoted, with `"` and `\` escaped.
fn sftp_word(path: &str) -> String {
    format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
}
