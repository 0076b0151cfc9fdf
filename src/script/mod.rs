//! The scripts the server runs: rendered from `templates/*.sh.hbs`, and the lines they print
//! back ([`protocol`]), in one place.
//!
//! The template engine's escape function is [`crate::shell::quote`], so every `{{value}}` in a
//! template comes out as one single-quoted shell word; templates never use the raw `{{{…}}}`
//! form (a test enforces it). Paths are grouped into batches so that no command line comes near
//! ARG_MAX, while 20,000 changed files still cost a few hundred processes rather than 20,000.

use handlebars::Handlebars;
use serde::Serialize;

use crate::config::{CopyMode, Target};
use crate::layout::ReleaseId;
use crate::plan::{Base, Plan};

pub mod protocol;

pub const DEPLOY_TEMPLATE: &str = include_str!("../../templates/deploy.sh.hbs");
pub const ROLLBACK_TEMPLATE: &str = include_str!("../../templates/rollback.sh.hbs");
pub const CHECK_TEMPLATE: &str = include_str!("../../templates/check.sh.hbs");
pub const LIB_PARTIAL: &str = include_str!("../../templates/partials/lib.sh.hbs");

/// Every template, by file name (the tests check them all).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("deploy.sh.hbs", DEPLOY_TEMPLATE),
    ("rollback.sh.hbs", ROLLBACK_TEMPLATE),
    ("check.sh.hbs", CHECK_TEMPLATE),
    ("partials/lib.sh.hbs", LIB_PARTIAL),
];

/// Bytes of arguments per command. Far below every ARG_MAX in use (4096 bytes is POSIX's minimum
/// for the whole environment + arguments, real systems have 256 KiB and more).
const BATCH_BYTES: usize = 32 * 1024;

/// Does the script take the lock itself?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// The cutover client holds the lock; its info carries this token.
    HeldByClient,
    /// The script is run by hand (`--emit-script`): it takes the lock itself.
    TakenByScript,
}

/// A script as `sh` is given it: one brace group. A shell runs a compound command only once
/// it has read all of it, so a script cut short (a dropped connection) is a syntax error that
/// runs nothing; and by the time its first command runs, the whole text has been read, so
/// nothing the script starts can read the script itself from stdin.
pub fn for_stdin(script: &str) -> String {
    format!("{{\n{script}\n}}\n")
}

/// Everything the deploy template needs besides the target.
pub struct DeployScript<'a> {
    pub id: &'a ReleaseId,
    /// The release's tree digest ([`crate::source::Manifest::tree_digest`]).
    pub digest: &'a str,
    pub plan: &'a Plan,
    /// Archive parts uploaded to staging (`files.0.tar`, …).
    pub archives: usize,
    pub lock: Lock,
    pub token: &'a str,
    /// The client stays connected and answers (`upload-done`, `go`, `commit`); false for a
    /// script printed to be run by hand.
    pub talk: bool,
}

#[derive(Serialize)]
struct DeployVars<'a> {
    version: &'a str,
    target: &'a str,
    root: &'a str,
    release: String,
    previous: String,
    digest: &'a str,
    keep_releases: String,
    copy: &'a str,
    take_lock: &'a str,
    token: &'a str,
    talk: &'a str,
    barrier_timeout: String,
    archives: String,
    touched_dirs: Vec<Vec<&'a str>>,
    deletes: Vec<Vec<&'a str>>,
    new_dirs: Vec<Vec<&'a str>>,
    replaced: Vec<Vec<&'a str>>,
    shared_dirs: &'a [String],
    shared_files: &'a [String],
    before_swap: &'a [String],
    verify: &'a [String],
    after_swap: &'a [String],
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Parse the templates on a thread of their own. A command that runs a script calls this as
/// it starts: the parse (10-20 ms) then overlaps its connecting instead of delaying the first
/// script, and with it the first host's upload.
pub fn warm_up() {
    std::thread::spawn(|| {
        engine();
    });
}

/// The engine, with every template registered, built once.
fn engine() -> &'static Handlebars<'static> {
    static ENGINE: std::sync::OnceLock<Handlebars<'static>> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(crate::shell::quote);
        hb.register_partial("lib", LIB_PARTIAL)
            .expect("templates/partials/lib.sh.hbs is valid handlebars");
        hb.register_template_string("deploy", DEPLOY_TEMPLATE)
            .expect("templates/deploy.sh.hbs is valid handlebars");
        hb.register_template_string("rollback", ROLLBACK_TEMPLATE)
            .expect("templates/rollback.sh.hbs is valid handlebars");
        hb.register_template_string("check", CHECK_TEMPLATE)
            .expect("templates/check.sh.hbs is valid handlebars");
        hb
    })
}

/// The deploy script for release `d.id` of `target`.
pub fn deploy_script(target: &Target, d: &DeployScript) -> String {
    let plan = d.plan;
    let previous = match &plan.base {
        Base::Empty => String::new(),
        Base::Previous(p) => p.to_string(),
    };
    let vars = DeployVars {
        version: env!("CARGO_PKG_VERSION"),
        target: &target.name,
        root: &target.path,
        release: d.id.to_string(),
        previous,
        digest: d.digest,
        keep_releases: target.keep_releases.to_string(),
        copy: match target.copy {
            CopyMode::Full => "full",
            CopyMode::Hardlink => "hardlink",
        },
        take_lock: yes_no(d.lock == Lock::TakenByScript),
        token: d.token,
        talk: yes_no(d.talk),
        barrier_timeout: target.barrier_timeout.to_string(),
        archives: d.archives.to_string(),
        touched_dirs: batches(plan.touched_dirs.iter().map(String::as_str)),
        deletes: batches(plan.deletes.iter().map(String::as_str)),
        new_dirs: batches(plan.new_dirs.iter().map(String::as_str)),
        // A first deploy unpacks into an empty directory: nothing to replace.
        replaced: match plan.base {
            Base::Empty => Vec::new(),
            Base::Previous(_) => batches(plan.uploads.iter().map(String::as_str)),
        },
        shared_dirs: &target.shared.dirs,
        shared_files: &target.shared.files,
        before_swap: &target.hooks.before_swap,
        verify: &target.hooks.verify,
        after_swap: &target.hooks.after_swap,
    };
    engine()
        .render("deploy", &vars)
        .expect("the deploy template renders with its own variables")
}

#[derive(Serialize)]
struct RollbackVars<'a> {
    version: &'a str,
    target: &'a str,
    root: &'a str,
    to: String,
    from: String,
    token: &'a str,
    talk: &'a str,
    barrier_timeout: String,
}

/// The rollback script: point `current` from release `from` (checked under the lock) to `to`.
pub fn rollback_script(
    target: &Target,
    from: &ReleaseId,
    to: &ReleaseId,
    token: &str,
    talk: bool,
) -> String {
    let vars = RollbackVars {
        version: env!("CARGO_PKG_VERSION"),
        target: &target.name,
        root: &target.path,
        to: to.to_string(),
        from: from.to_string(),
        token,
        talk: yes_no(talk),
        barrier_timeout: target.barrier_timeout.to_string(),
    };
    engine()
        .render("rollback", &vars)
        .expect("the rollback template renders with its own variables")
}

#[derive(Serialize)]
struct CheckVars<'a> {
    version: &'a str,
    target: &'a str,
    root: &'a str,
    copy: &'a str,
    upload_kib: String,
    inodes: String,
}

/// The check script (`cutover check`): inspects `target` and changes nothing under its deploy
/// path. `upload_bytes` is what the deploy planned now would upload and `inodes` how many
/// entries it would make, for the free-space check.
pub fn check_script(target: &Target, upload_bytes: u64, inodes: u64) -> String {
    let vars = CheckVars {
        version: env!("CARGO_PKG_VERSION"),
        target: &target.name,
        root: &target.path,
        copy: match target.copy {
            CopyMode::Full => "full",
            CopyMode::Hardlink => "hardlink",
        },
        upload_kib: upload_bytes.div_ceil(1024).to_string(),
        inodes: inodes.to_string(),
    };
    engine()
        .render("check", &vars)
        .expect("the check template renders with its own variables")
}

/// Group `paths` into lists whose quoted length stays under [`BATCH_BYTES`].
fn batches<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<Vec<&'a str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut size = 0;
    for p in paths {
        // quoting can grow a path by 4 bytes per quote; count generously
        let cost = p.len() + 3 + 3 * p.matches('\'').count() + 64;
        if out.is_empty() || size + cost > BATCH_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += cost;
        out.last_mut().unwrap().push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_under_the_limit() {
        let long = "x".repeat(1000);
        let paths: Vec<&str> = (0..200).map(|_| long.as_str()).collect();
        let b = batches(paths);
        assert!(b.len() > 1);
        assert!(b
            .iter()
            .all(|batch| batch.iter().map(|p| p.len() + 3).sum::<usize>() <= BATCH_BYTES));
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 200);
    }

    #[test]
    fn templates_never_interpolate_unquoted() {
        // `{{{x}}}` and `{{& x}}` bypass the escape function (the quoting helper): forbidden.
        for (name, text) in TEMPLATES {
            assert!(!text.contains("{{{"), "{name} uses raw {{{{{{…}}}}}}");
            assert!(!text.contains("{{&"), "{name} uses raw {{{{&…}}}}");
        }
    }
}
