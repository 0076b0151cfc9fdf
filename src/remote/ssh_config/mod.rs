//! `~/.ssh/config`: where a target really is and how `ssh` would reach it.
//!
//! `host` in cutover.toml may be a `Host` alias, and people keep the rest of what it takes to
//! reach a server (`HostName`, `User`, `Port`, keys, jump hosts) in their ssh config. This module
//! reads those files the way `ssh` does and turns a [`Target`](crate::config::Target) into a [`Route`]: the jump hosts to
//! go through and the final endpoint, each with its address, user, keys, known_hosts files and
//! host key policy. Values written in cutover.toml win over the ssh config.
//!
//! The files: `$CUTOVER_SSH_CONFIG` alone when it is set (like `ssh -F`; `none` reads nothing),
//! otherwise `~/.ssh/config` and then `/etc/ssh/ssh_config`.
//!
//! Why our own reader rather than a crate: `russh-config` 0.58 knows no `IdentitiesOnly`,
//! `ConnectTimeout`, `ServerAliveInterval` or `Include`, reads `StrictHostKeyChecking accept-new`
//! as a plain yes, splits keywords on one space only (no tabs, no `Key=value`) and ignores `Match`
//! lines, so the settings of a `Match` block leak into the `Host` block before it. `ssh2-config`
//! 0.9 handles more syntax but has the same `Match` leak, matches `Host` patterns case-sensitively
//! only by accident of its glob crate, and keeps `IdentitiesOnly`, `UserKnownHostsFile` and
//! `StrictHostKeyChecking` only as unparsed strings. Either way we would have re-implemented the
//! semantics that matter on top; the syntax is the small part. What follows OpenSSH 9's
//! `readconf.c`, checked against `ssh -G`:
//!
//! * Lines are `Keyword args` or `Keyword=args`; keywords are case-insensitive; arguments are
//!   split as `argv_split` does (quotes, backslash escapes, `#` comments), and a keyword that
//!   takes one value refuses more.
//! * For each setting the **first** value obtained wins (files in order, blocks in order), except
//!   `IdentityFile` and `CertificateFile`, which accumulate.
//! * `Host` patterns (`*`, `?`, `!negation`) match the name as written in cutover.toml, case
//!   sensitively. `Match` supports `all`, `host` (the `HostName` so far, case-insensitive),
//!   `originalhost`, `user` and `localuser`, each negatable; a `Match` that needs anything else
//!   (`exec`, `canonical`, `final`, `localnetwork`, `tagged`, ...) is reported and its block
//!   skipped.
//! * `Include` (with `*`/`?` in the file name) reads files in place, relative to `~/.ssh` (or
//!   `/etc/ssh` for the system file); an `Include` inside an inactive block includes nothing.
//! * `HostName` expands `%h` and `%%` and is lowercased. `IdentityFile`, `CertificateFile`,
//!   `UserKnownHostsFile` and `IdentityAgent` expand `~` and `%C %d %h %i %k %L %l %n %p %r %u %%`; `HostName` refuses
//!   any token but `%h` and `%%`, as `ssh` does.
//!
//! Honoured settings: `HostName`, `User`, `Port`, `IdentityFile`, `CertificateFile`, `IdentitiesOnly`,
//! `IdentityAgent`, `UserKnownHostsFile`, `StrictHostKeyChecking`, `ProxyJump`, `ConnectTimeout`,
//! `ServerAliveInterval`, `ServerAliveCountMax`. `StrictHostKeyChecking no` never turns checking
//! off here: it is checked strictly, with a warning. `ProxyCommand` is refused with an error
//! rather than silently connecting directly. Everything else is ignored, also keywords `ssh` would
//! not know: README "Connecting" lists where cutover differs from `ssh` on purpose, and
//! `tests/ssh_config_vs_openssh.rs` checks the rest against `ssh -G`.

mod parse;
mod route;

use std::time::Duration;

pub use parse::{config_files, lookup, lookup_text, ConfigFile, HostConfig, Origin, Proxy, Query};
pub use route::{route, route_with, same_place, settings, Agent, Endpoint, Route, Settings};

/// Environment variable naming the ssh config file to read instead of the usual ones.
pub const CONFIG_ENV: &str = "CUTOVER_SSH_CONFIG";

/// OpenSSH's default for `ConnectTimeout` is the system's TCP timeout, often minutes; ours.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Keepalives when the config says nothing: a dead connection is noticed within a minute.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// OpenSSH's limit on nested `Include`s.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Jump hosts may themselves be reached through jump hosts; this bounds (and breaks) loops.
const MAX_JUMPS: usize = 8;
