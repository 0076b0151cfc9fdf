//! One module per command. `mod.rs` holds what they share: how they talk to the user.

pub mod check;
pub mod deploy;
pub mod init;
pub mod lock;
pub mod releases;
pub mod rollback;

use std::fmt::Display;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to say. Results go to stdout (except with --emit-script, where stdout is only the
/// script); progress, warnings and errors go to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub quiet: bool,
    pub verbose: bool,
    /// stdout is reserved for the script (--emit-script): the summary goes to stderr too.
    pub stdout_reserved: bool,
}

impl Output {
    pub fn info(&self, msg: impl Display) {
        if !self.quiet {
            eprintln!("cutover: {msg}");
        }
    }
    pub fn verbose(&self, msg: impl Display) {
        if self.verbose && !self.quiet {
            eprintln!("cutover: {msg}");
        }
    }
    /// A verbose line stamped with the time since the command started: where a deploy's
    /// seconds go, stage by stage.
    pub fn stage(&self, msg: impl Display) {
        if self.verbose && !self.quiet {
            eprintln!(
                "cutover: [{:6.3} s] {msg}",
                started().elapsed().as_secs_f64()
            );
        }
    }
    pub fn warn(&self, msg: &str) {
        eprintln!("cutover: warning: {msg}");
    }
    pub fn summary(&self, msg: &str) {
        if self.quiet {
            return;
        }
        if self.stdout_reserved {
            eprintln!("cutover: {msg}");
        } else {
            println!("{msg}");
        }
    }
}

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When the command started (the first call wins: `main` calls it first).
pub fn started() -> std::time::Instant {
    *STARTED.get_or_init(std::time::Instant::now)
}

/// Upload progress: a bar on stderr when it is a terminal, nothing otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u64, out: Output) -> Progress {
        if out.quiet || total == 0 || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        Progress { bar: Some(bar) }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl crate::remote::Progress for Progress {
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
