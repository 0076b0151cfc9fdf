//! How cutover talks to the person (or CI job) running it.
//!
//! Results go to stdout; progress, warnings and errors to stderr. With `--json` (and with
//! `--emit-script`, whose stdout is the script) stdout carries one document only and everything
//! else goes to stderr. In a fleet every line about one host starts with `[host] `. Colour only
//! on a terminal, and never with `NO_COLOR` set.

use std::fmt::Display;
use std::io::IsTerminal;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to say, and where.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub quiet: bool,
    pub verbose: bool,
    /// stdout is reserved for one document (`--json`) or the script (`--emit-script`).
    pub stdout_reserved: bool,
    /// Put before every line: `[web1] ` for one host of a fleet, empty otherwise.
    pub prefix: String,
}

impl Output {
    /// The same settings, every line prefixed with `[label] `.
    pub fn for_host(&self, label: &str) -> Output {
        Output {
            prefix: format!("[{label}] "),
            ..self.clone()
        }
    }

    /// For host `label` of a target: its lines prefixed when the target's lines name their
    /// host (see `Fleet::names_hosts`), as they are otherwise.
    pub fn for_member(&self, names_hosts: bool, label: &str) -> Output {
        if names_hosts {
            self.for_host(label)
        } else {
            self.clone()
        }
    }

    pub fn info(&self, msg: impl Display) {
        if !self.quiet {
            eprintln!("{}cutover: {msg}", self.prefix);
        }
    }
    pub fn verbose(&self, msg: impl Display) {
        if self.verbose && !self.quiet {
            eprintln!("{}cutover: {msg}", self.prefix);
        }
    }
    /// A verbose line stamped with the time since the command started: where a deploy's
    /// seconds go, stage by stage.
    pub fn stage(&self, msg: impl Display) {
        if self.verbose && !self.quiet {
            eprintln!(
                "{}cutover: [{:6.3} s] {msg}",
                self.prefix,
                started().elapsed().as_secs_f64()
            );
        }
    }
    pub fn warn(&self, msg: impl Display) {
        eprintln!(
            "{}cutover: {}: {msg}",
            self.prefix,
            paint("warning", Colour::Yellow)
        );
    }
    /// A result line: stdout, unless stdout is reserved.
    pub fn summary(&self, msg: impl Display) {
        if self.quiet {
            return;
        }
        if self.stdout_reserved {
            eprintln!("{}cutover: {msg}", self.prefix);
        } else {
            println!("{}{msg}", self.prefix);
        }
    }
}

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When the command started (the first call wins: `main` calls it first).
pub fn started() -> std::time::Instant {
    *STARTED.get_or_init(std::time::Instant::now)
}

/// `545 B`, `1.43 MiB`.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// "1 file", "3 files".
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[derive(Clone, Copy)]
pub enum Colour {
    Red,
    Yellow,
    Green,
}

/// `text` in colour when stderr is a terminal and `NO_COLOR` is not set.
pub fn paint(text: &str, colour: Colour) -> String {
    let on = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if !on {
        return text.to_string();
    }
    let code = match colour {
        Colour::Red => 31,
        Colour::Yellow => 33,
        Colour::Green => 32,
    };
    format!("\x1b[1;{code}m{text}\x1b[0m")
}

/// An error the way uv and cargo print one: `error:` and the message, each cause on its own
/// line, then, after a blank line, the hint when the error carries one.
pub fn print_error(err: &anyhow::Error) {
    let mut chain = err.chain();
    let Some(top) = chain.next() else { return };
    let (message, mut hint) = split_hint(&top.to_string());
    eprintln!("{}: {message}", paint("error", Colour::Red));
    for cause in chain {
        let (text, own) = split_hint(&cause.to_string());
        if hint.is_none() {
            hint = own;
        }
        for line in text.lines() {
            eprintln!("  {} {line}", paint("caused by:", Colour::Red));
        }
    }
    let hint = hint.or_else(|| crate::remote::ssh::hint(err));
    if let Some(hint) = hint {
        eprintln!();
        eprintln!("{}: {hint}", paint("hint", Colour::Green));
    }
}

/// A message may end with a line `hint: …` (see [`crate::error::with_hint`]): split it off.
fn split_hint(text: &str) -> (String, Option<String>) {
    match text.rsplit_once("\nhint: ") {
        Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
        None => (text.to_string(), None),
    }
}

/// Upload progress: a bar on stderr when it is a terminal, nothing otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u64, out: &Output) -> Progress {
        if out.quiet || total == 0 || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix}uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(out.prefix.clone());
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
