//! Exit codes and the error kinds that choose them.
//!
//! Most failures are plain `anyhow` errors with context (what, target, stage, path) and end the
//! process with exit 1: the deploy failed and `current` is untouched. Three kinds are marked so
//! `main` can pick another code: a [`UsageError`] (bad flags, config or names: exit 2), a
//! [`LiveWithWarnings`] (the new release is live but an after_swap hook or cleanup failed: exit
//! 3) and a [`FleetSplit`] (some hosts of a fleet are on the new release, some are not: exit 4).
//!
//! A message may end with a line `hint: …` saying what to do ([`with_hint`]); it is printed
//! apart, after the causes (see `output::print_error`).

use std::fmt;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_LIVE_WITH_WARNINGS: i32 = 3;
pub const EXIT_SPLIT: i32 = 4;

/// Bad command line, config file or input: nothing was attempted. Exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// The new release is live, but something after the swap failed. Exit 3.
#[derive(Debug)]
pub struct LiveWithWarnings(pub String);

impl fmt::Display for LiveWithWarnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LiveWithWarnings {}

/// Some hosts of a fleet run the new release and some do not. Exit 4.
#[derive(Debug)]
pub struct FleetSplit(pub String);

impl fmt::Display for FleetSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FleetSplit {}

/// `message`, with what to do about it printed apart as `hint: …`.
pub fn with_hint(message: impl fmt::Display, hint: impl fmt::Display) -> String {
    format!("{message}\nhint: {hint}")
}

/// Shorthand for returning a [`UsageError`].
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The exit code an error chain asks for.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return EXIT_USAGE;
        }
        if cause.is::<LiveWithWarnings>() {
            return EXIT_LIVE_WITH_WARNINGS;
        }
        if cause.is::<FleetSplit>() {
            return EXIT_SPLIT;
        }
    }
    EXIT_FAILED
}
