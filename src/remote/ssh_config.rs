//! `~/.ssh/config`: where a target really is and how `ssh` would reach it.
//!
//! `host` in cutover.toml may be a `Host` alias, and people keep the rest of what it takes to
//! reach a server (`HostName`, `User`, `Port`, keys, jump hosts) in their ssh config. This module
//! reads those files the way `ssh` does and turns a [`Target`] into a [`Route`]: the jump hosts to
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
//! * Lines are `Keyword args` or `Keyword=args`; keywords are case-insensitive; arguments may be
//!   double- or single-quoted; `#` starts a comment.
//! * For each setting the **first** value obtained wins (files in order, blocks in order), except
//!   `IdentityFile`, which accumulates.
//! * `Host` patterns (`*`, `?`, `!negation`) match the name as written in cutover.toml, case
//!   sensitively. `Match` supports `all`, `host` (the `HostName` so far, case-insensitive),
//!   `originalhost`, `user` and `localuser`, each negatable; a `Match` that needs anything else
//!   (`exec`, `canonical`, `final`, `localnetwork`, `tagged`, ...) is reported and its block
//!   skipped.
//! * `Include` (with `*`/`?` in the file name) reads files in place, relative to `~/.ssh` (or
//!   `/etc/ssh` for the system file); an `Include` inside an inactive block includes nothing.
//! * `HostName` expands `%h` and `%%` and is lowercased. `IdentityFile`, `UserKnownHostsFile` and
//!   `IdentityAgent` expand `~` and `%d %u %h %r %p %n %%`.
//!
//! Honoured settings: `HostName`, `User`, `Port`, `IdentityFile`, `IdentitiesOnly`,
//! `IdentityAgent`, `UserKnownHostsFile`, `StrictHostKeyChecking`, `ProxyJump`, `ConnectTimeout`,
//! `ServerAliveInterval`, `ServerAliveCountMax`. `StrictHostKeyChecking no` never turns checking
//! off here: it is checked strictly, with a warning. `ProxyCommand` is refused with an error
//! rather than silently connecting directly. Everything else is ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{home_dir, local_user_name, Host, HostKeyChecking, Target};

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

/// Where a setting was read, for messages that send the user to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)
    }
}

/// How to go through a proxy, as the first of `ProxyJump` / `ProxyCommand` set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump` value as written (`none` included).
    Jump(String),
    /// `ProxyCommand`, which cutover does not run.
    Command(String, Origin),
}

/// What the ssh config files say about one host: raw values, tokens not yet expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub identities_only: Option<bool>,
    pub identity_agent: Option<String>,
    pub user_known_hosts_files: Option<Vec<String>>,
    /// Lowercased value and where it was set.
    pub strict_host_key_checking: Option<(String, Origin)>,
    pub proxy: Option<Proxy>,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<usize>,
    /// Parts of the files cutover cannot honour for this host (printed as warnings).
    pub warnings: Vec<String>,
}

/// Who is asking: what `Host` and `Match` lines are matched against.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The host as written in cutover.toml or a `ProxyJump` hop.
    pub host: &'a str,
    /// A user given outside the ssh config (cutover.toml, `user@` in `ProxyJump`).
    pub user: Option<&'a str>,
    pub local_user: &'a str,
    pub home: &'a Path,
}

/// One file to read and the directory its relative `Include`s start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub include_base: PathBuf,
}

/// The files `ssh` would read: `$CUTOVER_SSH_CONFIG` alone, or `~/.ssh/config` then
/// `/etc/ssh/ssh_config`.
pub fn config_files() -> Result<Vec<ConfigFile>> {
    let home = home_dir();
    if let Some(path) = std::env::var_os(CONFIG_ENV) {
        if path == "none" || path.is_empty() {
            return Ok(Vec::new());
        }
        let path = expand_tilde(&path.to_string_lossy(), &home);
        if !path.is_file() {
            bail!(
                "{CONFIG_ENV} points at {}, which is not a readable file",
                path.display()
            );
        }
        return Ok(vec![ConfigFile {
            path,
            include_base: home.join(".ssh"),
        }]);
    }
    Ok(vec![
        ConfigFile {
            path: home.join(".ssh/config"),
            include_base: home.join(".ssh"),
        },
        ConfigFile {
            path: PathBuf::from("/etc/ssh/ssh_config"),
            include_base: PathBuf::from("/etc/ssh"),
        },
    ])
}

/// Reads `files` (missing ones are skipped) and collects the settings that apply to `query`.
pub fn lookup(files: &[ConfigFile], query: &Query) -> Result<HostConfig> {
    let mut reader = Reader {
        query,
        out: HostConfig::default(),
    };
    for file in files {
        let text = match std::fs::read_to_string(&file.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => bail!("cannot read ssh config {}: {e}", file.path.display()),
        };
        let mut active = true;
        reader.read(&text, &file.path, &file.include_base, &mut active, false, 0)?;
    }
    Ok(reader.out)
}

/// Like [`lookup`], on text (for tests).
pub fn lookup_text(text: &str, query: &Query) -> Result<HostConfig> {
    let mut reader = Reader {
        query,
        out: HostConfig::default(),
    };
    let mut active = true;
    let base = query.home.join(".ssh");
    reader.read(text, Path::new("ssh_config"), &base, &mut active, false, 0)?;
    Ok(reader.out)
}

struct Reader<'a> {
    query: &'a Query<'a>,
    out: HostConfig,
}

impl Reader<'_> {
    fn read(
        &mut self,
        text: &str,
        file: &Path,
        include_base: &Path,
        active: &mut bool,
        never_match: bool,
        depth: usize,
    ) -> Result<()> {
        for (index, line) in text.lines().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                line: index + 1,
            };
            let Some((keyword, args)) =
                split_line(line).map_err(|e| anyhow!("ssh config {origin}: {e}"))?
            else {
                continue;
            };
            self.apply(
                &keyword,
                args,
                &origin,
                include_base,
                active,
                never_match,
                depth,
            )
            .map_err(|e| anyhow!("ssh config {origin}: {e:#}"))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        keyword: &str,
        args: Vec<String>,
        origin: &Origin,
        include_base: &Path,
        active: &mut bool,
        never_match: bool,
        depth: usize,
    ) -> Result<()> {
        let first = || {
            args.first()
                .cloned()
                .ok_or_else(|| anyhow!("{keyword} needs a value"))
        };
        let out = &mut self.out;
        match keyword {
            "host" => {
                *active = !never_match && host_line_matches(&args, self.query.host);
            }
            "match" => {
                let verdict = self.match_line(&args)?;
                *active = match verdict {
                    Ok(m) => !never_match && m,
                    Err(unsupported) => {
                        if !never_match {
                            self.out.warnings.push(format!(
                                "{origin}: `Match {unsupported}` is not supported by cutover; that block is ignored"
                            ));
                        }
                        false
                    }
                };
            }
            "include" => {
                if args.is_empty() {
                    bail!("Include needs a file");
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    bail!("Include nested more than {MAX_INCLUDE_DEPTH} deep");
                }
                let was_active = *active;
                for pattern in &args {
                    let pattern = expand_tilde(pattern, self.query.home);
                    let pattern = if pattern.is_absolute() {
                        pattern
                    } else {
                        include_base.join(pattern)
                    };
                    for path in glob_file_names(&pattern)? {
                        let text = std::fs::read_to_string(&path).with_context(|| {
                            format!("cannot read the included file {}", path.display())
                        })?;
                        self.read(
                            &text,
                            &path,
                            include_base,
                            active,
                            never_match || !was_active,
                            depth + 1,
                        )?;
                        *active = was_active;
                    }
                }
            }
            "hostname" => {
                let v = first()?;
                first_wins(*active, &mut out.host_name, v);
            }
            "user" => {
                let v = first()?;
                first_wins(*active, &mut out.user, v);
            }
            "port" => {
                let v = first()?;
                let port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| anyhow!("Port {v:?} is not a port number"))?;
                first_wins(*active, &mut out.port, port);
            }
            "identityfile" => {
                let v = first()?;
                if *active && !out.identity_files.contains(&v) {
                    out.identity_files.push(v);
                }
            }
            "identitiesonly" => {
                let v = parse_bool(&first()?)?;
                first_wins(*active, &mut out.identities_only, v);
            }
            "identityagent" => {
                let v = first()?;
                first_wins(*active, &mut out.identity_agent, v);
            }
            "userknownhostsfile" => {
                if args.is_empty() {
                    bail!("UserKnownHostsFile needs a file");
                }
                first_wins(*active, &mut out.user_known_hosts_files, args.clone());
            }
            "stricthostkeychecking" => {
                let v = first()?.to_ascii_lowercase();
                if !["yes", "true", "no", "false", "off", "ask", "accept-new"].contains(&v.as_str())
                {
                    bail!("StrictHostKeyChecking {v:?}: expected yes, no, ask or accept-new");
                }
                first_wins(
                    *active,
                    &mut out.strict_host_key_checking,
                    (v, origin.clone()),
                );
            }
            "proxyjump" => {
                let v = first()?;
                first_wins(*active, &mut out.proxy, Proxy::Jump(v));
            }
            "proxycommand" => {
                if args.is_empty() {
                    bail!("ProxyCommand needs a command");
                }
                first_wins(
                    *active,
                    &mut out.proxy,
                    Proxy::Command(args.join(" "), origin.clone()),
                );
            }
            "connecttimeout" => {
                let v = parse_time(&first()?)?;
                first_wins(*active, &mut out.connect_timeout, v);
            }
            "serveraliveinterval" => {
                let v = parse_time(&first()?)?;
                first_wins(*active, &mut out.server_alive_interval, v);
            }
            "serveralivecountmax" => {
                let v = first()?;
                let n = v
                    .parse::<usize>()
                    .map_err(|_| anyhow!("ServerAliveCountMax {v:?} is not a number"))?;
                first_wins(*active, &mut out.server_alive_count_max, n);
            }
            "hostkeyalias" | "knownhostscommand" if *active => {
                out.warnings.push(format!(
                    "{origin}: {keyword} is not supported by cutover; known_hosts is checked under the host name"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// `Ok(Ok(matches))`, or `Ok(Err(criterion))` for a criterion cutover cannot evaluate.
    fn match_line(&self, args: &[String]) -> Result<std::result::Result<bool, String>> {
        if args.is_empty() {
            bail!("Match needs criteria");
        }
        let q = self.query;
        let host_name = match &self.out.host_name {
            Some(h) => expand_host_name(h, q.host),
            None => q.host.to_string(),
        };
        let user = q.user.or(self.out.user.as_deref()).unwrap_or(q.local_user);
        let mut result = true;
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let lower = word.to_ascii_lowercase();
            let (negated, criterion) = match lower.strip_prefix('!') {
                Some(rest) => (true, rest.to_string()),
                None => (false, lower.clone()),
            };
            let matched = match criterion.as_str() {
                "all" => true,
                "host" | "originalhost" | "user" | "localuser" => {
                    let Some(list) = words.next() else {
                        bail!("Match {criterion} needs a pattern list");
                    };
                    match criterion.as_str() {
                        "host" => pattern_list_matches(&host_name.to_ascii_lowercase(), list, true),
                        "originalhost" => {
                            pattern_list_matches(&q.host.to_ascii_lowercase(), list, true)
                        }
                        "user" => pattern_list_matches(user, list, false),
                        _ => pattern_list_matches(q.local_user, list, false),
                    }
                }
                _ => return Ok(Err(word.clone())),
            };
            if matched == negated {
                result = false;
            }
        }
        Ok(Ok(result))
    }
}

/// A `Host` line: some pattern matches and no negated pattern does.
fn host_line_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(neg) if wildcard_match(neg, host) => return false,
            Some(_) => {}
            None => matched |= wildcard_match(p, host),
        }
    }
    matched
}

/// A comma-separated pattern list as in `Match host a,b,!c`: a negated match wins.
fn pattern_list_matches(subject: &str, list: &str, lowercase: bool) -> bool {
    let mut matched = false;
    for p in list.split(',').filter(|p| !p.is_empty()) {
        let p = if lowercase {
            p.to_ascii_lowercase()
        } else {
            p.to_string()
        };
        match p.strip_prefix('!') {
            Some(neg) if wildcard_match(neg, subject) => return false,
            Some(_) => {}
            None => matched |= wildcard_match(&p, subject),
        }
    }
    matched
}

/// `*` (any run, also empty) and `?` (one character), as OpenSSH's `match_pattern`.
pub fn wildcard_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Splits a config line into its lowercased keyword and arguments; None for blank lines and
/// comments.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Ok(Some((keyword, split_args(rest)?)))
}

/// Whitespace-separated arguments; quotes group and are removed; `#` starts a comment.
fn split_args(s: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '"' || c == '\'' {
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => arg.push(x),
                        None => bail!("unterminated quote"),
                    }
                }
            } else if c == '\\' {
                match chars.next() {
                    Some(x) => arg.push(x),
                    None => arg.push('\\'),
                }
            } else {
                arg.push(c);
            }
        }
        args.push(arg);
    }
    Ok(args)
}

fn parse_bool(v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => bail!("{v:?}: expected yes or no"),
    }
}

/// OpenSSH time values: `30`, `30s`, `1m30s`, `1h`; `none` means 0.
fn parse_time(v: &str) -> Result<Duration> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(Duration::ZERO);
    }
    let bad = || anyhow!("{v:?} is not a time (e.g. 30, 30s, 2m)");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        total = total.saturating_add(number.parse::<u64>().map_err(|_| bad())?);
    } else if v.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The files matching `pattern`, whose last component may hold `*` and `?`; sorted.
fn glob_file_names(pattern: &Path) -> Result<Vec<PathBuf>> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    Ok(found)
}

fn expand_tilde(p: &str, home: &Path) -> PathBuf {
    if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(p)
    }
}

/// `HostName` with `%h` (the name as given) and `%%`, lowercased as `ssh` does.
fn expand_host_name(value: &str, original: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(original),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out.to_ascii_lowercase()
}

/// Values for `%` tokens in file names.
struct Tokens<'a> {
    home: &'a Path,
    local_user: &'a str,
    host: &'a str,
    user: &'a str,
    port: u16,
    original: &'a str,
}

impl Tokens<'_> {
    /// `~` and `%d %u %h %r %p %n %%`; any other token is an error, as in `ssh`.
    fn expand(&self, what: &str, value: &str) -> Result<PathBuf> {
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('d') => out.push_str(&self.home.to_string_lossy()),
                Some('u') => out.push_str(self.local_user),
                Some('h') => out.push_str(self.host),
                Some('r') => out.push_str(self.user),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('n') => out.push_str(self.original),
                Some('%') => out.push('%'),
                Some(t) => bail!(
                    "{what} {value:?}: the token %{t} is not supported by cutover (supported: %d %u %h %r %p %n %%)"
                ),
                None => bail!("{what} {value:?} ends with a lone %"),
            }
        }
        Ok(expand_tilde(&out, self.home))
    }
}

// --- applying the files to a target ----------------------------------------------------------

/// Where the ssh-agent is, per `IdentityAgent` (default: `SSH_AUTH_SOCK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// `SSH_AUTH_SOCK`, when set.
    Env,
    /// A socket path.
    Socket(PathBuf),
    /// `IdentityAgent none`.
    Disabled,
}

/// One SSH server to connect to and everything needed to trust it and log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name as written (cutover.toml `host`, or a `ProxyJump` hop).
    pub alias: String,
    /// Where to connect, and the name known_hosts records it under (`HostName` or the alias).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Identity files in the order to try them.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer no agent key that is not one of `identity_files`.
    pub identities_only: bool,
    pub agent: Agent,
    /// known_hosts files; the first one is where `accept-new` records a key.
    pub known_hosts: Vec<PathBuf>,
    pub host_key_checking: HostKeyChecking,
    pub connect_timeout: Duration,
    /// None: no keepalives (`ServerAliveInterval 0`).
    pub keepalive: Option<Duration>,
    pub keepalive_max: usize,
}

/// The jump hosts in order, then the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub jumps: Vec<Endpoint>,
    pub target: Endpoint,
    /// Things in the ssh config that cutover did not do as written.
    pub warnings: Vec<String>,
}

/// Settings given outside the ssh config, which win over it.
#[derive(Debug, Clone, Default)]
struct Overrides {
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    host_key_checking: Option<HostKeyChecking>,
}

/// The route to an SSH target: cutover.toml first, then the ssh config files.
pub fn route(target: &Target) -> Result<Route> {
    route_with(target, &config_files()?)
}

/// [`route`] with the given config files (for tests).
pub fn route_with(target: &Target, files: &[ConfigFile]) -> Result<Route> {
    let Host::Ssh { host, port, user } = &target.host else {
        bail!("target {} is local: no SSH route", target.name);
    };
    let overrides = Overrides {
        user: target.explicit.user.then(|| user.clone()),
        port: target.explicit.port.then_some(*port),
        identity_file: target.identity_file.clone(),
        known_hosts: target.known_hosts.clone(),
        host_key_checking: target
            .explicit
            .host_key_checking
            .then_some(target.host_key_checking),
    };
    // Jump hosts use their own ssh config for keys, but cutover.toml's known_hosts and
    // host_key_checking: they are the user's trust decisions for this deploy.
    let hop_overrides = Overrides {
        known_hosts: overrides.known_hosts.clone(),
        host_key_checking: overrides.host_key_checking,
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let mut seen = vec![host.clone()];
    let (jumps, target) = resolve(
        host,
        &overrides,
        &hop_overrides,
        files,
        true,
        &mut seen,
        &mut warnings,
    )?;
    let mut unique = Vec::new();
    for w in warnings {
        if !unique.contains(&w) {
            unique.push(w);
        }
    }
    Ok(Route {
        jumps,
        target,
        warnings: unique,
    })
}

/// One host and, when `follow_jumps`, the jump hosts before it.
fn resolve(
    alias: &str,
    overrides: &Overrides,
    hop_overrides: &Overrides,
    files: &[ConfigFile],
    follow_jumps: bool,
    seen: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Endpoint>, Endpoint)> {
    let home = home_dir();
    let local_user = local_user_name();
    let query = Query {
        host: alias,
        user: overrides.user.as_deref(),
        local_user: &local_user,
        home: &home,
    };
    let cfg = lookup(files, &query)?;
    warnings.extend(cfg.warnings.iter().cloned());
    let endpoint = endpoint(alias, &cfg, overrides, &home, &local_user, warnings)?;

    let mut jumps = Vec::new();
    match &cfg.proxy {
        Some(Proxy::Command(cmd, origin)) if cmd != "none" => bail!(
            "{origin}: ProxyCommand applies to {alias}, but cutover does not run proxy commands; \
             use ProxyJump (e.g. `ProxyJump bastion.example.com`) instead"
        ),
        Some(Proxy::Jump(spec)) if follow_jumps && spec != "none" => {
            let hops = parse_jump_list(spec)?;
            for (i, hop) in hops.iter().enumerate() {
                let key = hop.to_string();
                if seen.len() > MAX_JUMPS || seen.contains(&key) {
                    bail!(
                        "ProxyJump loops or goes deeper than {MAX_JUMPS} hosts (reached {key} from {})",
                        seen.join(" -> ")
                    );
                }
                seen.push(key);
                let own = Overrides {
                    user: hop.user.clone(),
                    port: hop.port,
                    ..hop_overrides.clone()
                };
                // As `ssh -J a,b`: `a` is reached the way its own config says (its own
                // ProxyJump included); `b` through `a`, whatever its config says.
                let (before, hop_endpoint) = resolve(
                    &hop.host,
                    &own,
                    hop_overrides,
                    files,
                    i == 0,
                    seen,
                    warnings,
                )?;
                jumps.extend(before);
                jumps.push(hop_endpoint);
            }
        }
        _ => {}
    }
    Ok((jumps, endpoint))
}

fn endpoint(
    alias: &str,
    cfg: &HostConfig,
    overrides: &Overrides,
    home: &Path,
    local_user: &str,
    warnings: &mut Vec<String>,
) -> Result<Endpoint> {
    let host = match &cfg.host_name {
        Some(h) => expand_host_name(h, alias),
        None => alias.to_ascii_lowercase(),
    };
    let port = overrides.port.or(cfg.port).unwrap_or(22);
    let user = overrides
        .user
        .clone()
        .or_else(|| cfg.user.clone())
        .unwrap_or_else(|| local_user.to_string());
    let tokens = Tokens {
        home,
        local_user,
        host: &host,
        user: &user,
        port,
        original: alias,
    };
    let identity_files = match &overrides.identity_file {
        Some(p) => vec![p.clone()],
        None => cfg
            .identity_files
            .iter()
            .map(|f| tokens.expand("IdentityFile", f))
            .collect::<Result<_>>()?,
    };
    let agent = match cfg.identity_agent.as_deref() {
        None | Some("SSH_AUTH_SOCK") => Agent::Env,
        Some(v) if v.eq_ignore_ascii_case("none") => Agent::Disabled,
        Some(v) => match v.strip_prefix('$') {
            Some(var) => match std::env::var_os(var) {
                Some(path) => Agent::Socket(PathBuf::from(path)),
                None => Agent::Disabled,
            },
            None => Agent::Socket(tokens.expand("IdentityAgent", v)?),
        },
    };
    let known_hosts = match (&overrides.known_hosts, &cfg.user_known_hosts_files) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(files)) => files
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case("none"))
            .map(|f| tokens.expand("UserKnownHostsFile", f))
            .collect::<Result<_>>()?,
        (None, None) => vec![
            home.join(".ssh/known_hosts"),
            home.join(".ssh/known_hosts2"),
        ],
    };
    let host_key_checking = match (overrides.host_key_checking, &cfg.strict_host_key_checking) {
        (Some(mode), _) => mode,
        (None, None) => HostKeyChecking::Strict,
        (None, Some((v, origin))) => match v.as_str() {
            "accept-new" => HostKeyChecking::AcceptNew,
            "yes" | "true" | "ask" => HostKeyChecking::Strict,
            _ => {
                warnings.push(format!(
                    "{origin}: StrictHostKeyChecking {v} for {alias} is ignored: cutover always checks host keys \
                     (strict; set host_key_checking = \"accept-new\" in cutover.toml to record new hosts)"
                ));
                HostKeyChecking::Strict
            }
        },
    };
    let connect_timeout = match cfg.connect_timeout {
        Some(t) if !t.is_zero() => t,
        _ => DEFAULT_CONNECT_TIMEOUT,
    };
    let keepalive = match cfg.server_alive_interval {
        None => Some(DEFAULT_KEEPALIVE),
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
    };
    Ok(Endpoint {
        alias: alias.to_string(),
        host,
        port,
        user,
        identity_files,
        identities_only: cfg.identities_only.unwrap_or(false),
        agent,
        known_hosts,
        host_key_checking,
        connect_timeout,
        keepalive,
        keepalive_max: cfg.server_alive_count_max.unwrap_or(3).max(1),
    })
}

/// One hop of a `ProxyJump` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JumpHop {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl std::fmt::Display for JumpHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `[user@]host[:port]` or `ssh://[user@]host[:port]`, comma-separated; IPv6 as `[::1]:22`.
fn parse_jump_list(spec: &str) -> Result<Vec<JumpHop>> {
    spec.split(',')
        .map(|hop| {
            let hop = hop.trim();
            let bad = || anyhow!("ProxyJump {spec:?}: cannot read the hop {hop:?}");
            let rest = hop.strip_prefix("ssh://").unwrap_or(hop);
            let rest = rest.trim_end_matches('/');
            let (user, rest) = match rest.rsplit_once('@') {
                Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
                Some(_) => return Err(bad()),
                None => (None, rest),
            };
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                let (h, after) = v6.split_once(']').ok_or_else(bad)?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if after.is_empty() => None,
                    None => return Err(bad()),
                };
                (h.to_string(), port)
            } else {
                match rest.split_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (rest.to_string(), None),
                }
            };
            let port = match port {
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
                None => None,
            };
            if host.is_empty() || host.starts_with('-') {
                return Err(bad());
            }
            Ok(JumpHop { user, host, port })
        })
        .collect()
}

/// OpenSSH keeps the first value it reads for a keyword: later (more general) blocks only fill
/// what earlier ones left unset.
fn first_wins<T>(active: bool, slot: &mut Option<T>, value: T) {
    if active && slot.is_none() {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<'a>(host: &'a str, home: &'a Path) -> Query<'a> {
        Query {
            host,
            user: None,
            local_user: "me",
            home,
        }
    }

    fn look(text: &str, host: &str) -> HostConfig {
        lookup_text(text, &query(host, Path::new("/home/me"))).unwrap()
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let c = look(
            "Host web\n  HostName 10.0.0.5\n  Port 2222\n  IdentityFile ~/.ssh/web\n\
             Host *\n  Port 22\n  User fallback\n  IdentityFile ~/.ssh/all\n",
            "web",
        );
        assert_eq!(c.host_name.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.user.as_deref(), Some("fallback"));
        assert_eq!(c.identity_files, vec!["~/.ssh/web", "~/.ssh/all"]);
    }

    #[test]
    fn settings_before_any_host_line_apply_to_every_host() {
        let c = look("User early\nHost web\n  User late\n", "web");
        assert_eq!(c.user.as_deref(), Some("early"));
    }

    #[test]
    fn host_patterns_wildcards_and_negation() {
        let text = "Host *.example.com !secret.example.com\n  User wild\nHost db?\n  User q\n";
        assert_eq!(look(text, "a.example.com").user.as_deref(), Some("wild"));
        assert_eq!(look(text, "secret.example.com").user, None);
        assert_eq!(look(text, "db1").user.as_deref(), Some("q"));
        assert_eq!(look(text, "db12").user, None);
        // a negated pattern alone never selects a block
        assert_eq!(look("Host !x\n  User n\n", "y").user, None);
    }

    #[test]
    fn host_patterns_are_case_sensitive_like_ssh() {
        let text = "Host MyAlias\n  HostName 1.2.3.4\n";
        assert_eq!(look(text, "MyAlias").host_name.as_deref(), Some("1.2.3.4"));
        assert_eq!(look(text, "myalias").host_name, None);
    }

    #[test]
    fn syntax_equals_tabs_quotes_and_comments() {
        let c = look(
            "Host\tweb # the web box\n\tPort=2200\n  User = \"deploy user\"\n  IdentityFile '~/my keys/id'\n  # Port 1\n",
            "web",
        );
        assert_eq!(c.port, Some(2200));
        assert_eq!(c.user.as_deref(), Some("deploy user"));
        assert_eq!(c.identity_files, vec!["~/my keys/id"]);
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let c = look("HOST web\n  hostname H\n  PORT 1\n", "web");
        assert_eq!((c.host_name.as_deref(), c.port), (Some("H"), Some(1)));
    }

    #[test]
    fn match_blocks_do_not_leak_into_the_host_block_before_them() {
        let text = "Host web\n  HostName 10.0.0.5\nMatch host 10.0.0.5\n  User matched\nMatch host other\n  Port 9\n";
        let c = look(text, "web");
        assert_eq!(c.user.as_deref(), Some("matched"));
        assert_eq!(c.port, None);
    }

    #[test]
    fn match_criteria() {
        let text = "Match originalhost web user me\n  Port 1\nMatch !localuser me\n  User other\nMatch all\n  IdentitiesOnly yes\n";
        let c = look(text, "web");
        assert_eq!(c.port, Some(1));
        assert_eq!(c.user, None);
        assert_eq!(c.identities_only, Some(true));
    }

    #[test]
    fn unsupported_match_is_skipped_with_a_warning() {
        let c = look("Match exec \"true\"\n  User x\n", "web");
        assert_eq!(c.user, None);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("Match exec"), "{:?}", c.warnings);
    }

    #[test]
    fn strict_host_key_checking_and_timeouts() {
        let c = look(
            "Host *\n  StrictHostKeyChecking Accept-New\n  ConnectTimeout 1m30s\n  ServerAliveInterval 5\n  ServerAliveCountMax 2\n",
            "x",
        );
        assert_eq!(c.strict_host_key_checking.unwrap().0, "accept-new");
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.server_alive_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.server_alive_count_max, Some(2));
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = lookup_text("Host x\n  Port http\n", &query("x", Path::new("/h")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("http"), "{e}");
        let e = lookup_text(
            "StrictHostKeyChecking maybe\n",
            &query("x", Path::new("/h")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn include_reads_files_in_place_and_only_in_active_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        std::fs::write(ssh.join("conf.d/a.conf"), "Host web\n  User from-a\n").unwrap();
        std::fs::write(ssh.join("conf.d/b.conf"), "Host *\n  Port 7\n").unwrap();
        std::fs::write(ssh.join("other"), "Port 8\n").unwrap();
        let text = "Include conf.d/*.conf\nHost nothere\n  Include other\nHost *\n  Port 9\n";
        let c = lookup_text(text, &query("web", dir.path())).unwrap();
        assert_eq!(c.user.as_deref(), Some("from-a"));
        assert_eq!(c.port, Some(7));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*.example.com", "x.y.example.com"));
        assert!(!wildcard_match("*.example.com", "example.com"));
    }

    #[test]
    fn jump_lists() {
        let hops = parse_jump_list("bastion, ops@gw:2222,ssh://u@[::1]:22,ssh://plain").unwrap();
        assert_eq!(
            hops,
            vec![
                JumpHop {
                    user: None,
                    host: "bastion".into(),
                    port: None
                },
                JumpHop {
                    user: Some("ops".into()),
                    host: "gw".into(),
                    port: Some(2222)
                },
                JumpHop {
                    user: Some("u".into()),
                    host: "::1".into(),
                    port: Some(22)
                },
                JumpHop {
                    user: None,
                    host: "plain".into(),
                    port: None
                },
            ]
        );
        assert!(parse_jump_list("a:notaport").is_err());
        assert!(parse_jump_list("@host").is_err());
    }

    #[test]
    fn time_values() {
        assert_eq!(parse_time("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_time("1h5m").unwrap(), Duration::from_secs(3900));
        assert_eq!(parse_time("none").unwrap(), Duration::ZERO);
        assert!(parse_time("ten").is_err());
        assert!(parse_time("").is_err());
    }

    // --- routes ---------------------------------------------------------------------------

    fn target(toml_target: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.toml");
        std::fs::write(
            &file,
            format!("[targets.t]\npath = '/srv/app'\n{toml_target}"),
        )
        .unwrap();
        let t = crate::config::Config::load(&file)
            .unwrap()
            .target(None)
            .unwrap()
            .hosts
            .remove(0);
        std::mem::forget(dir);
        t
    }

    fn route_for(toml_target: &str, ssh_config: &str) -> Result<Route> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, ssh_config).unwrap();
        let files = [ConfigFile {
            path,
            include_base: dir.path().to_path_buf(),
        }];
        route_with(&target(toml_target), &files)
    }

    const CONFIG: &str = "\
Host web
  HostName Web.Internal
  User deploy
  Port 2222
  IdentityFile /keys/%r@%h:%p
  IdentityFile /keys/second
  IdentitiesOnly yes
  UserKnownHostsFile /kh/one /kh/two
  StrictHostKeyChecking accept-new
  ConnectTimeout 3
  ServerAliveInterval 0
  ProxyJump ops@bastion:2200,inner
Host bastion
  HostName 10.0.0.1
  IdentityFile /keys/bastion
  ProxyJump outer
Host inner
  ProxyJump ignored-because-not-first
Host outer
  StrictHostKeyChecking no
";

    #[test]
    fn alias_is_resolved_through_the_ssh_config() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let t = &r.target;
        assert_eq!(t.host, "web.internal");
        assert_eq!((t.port, t.user.as_str()), (2222, "deploy"));
        assert_eq!(
            t.identity_files,
            vec![
                PathBuf::from("/keys/deploy@web.internal:2222"),
                PathBuf::from("/keys/second")
            ]
        );
        assert!(t.identities_only);
        assert_eq!(
            t.known_hosts,
            vec![PathBuf::from("/kh/one"), PathBuf::from("/kh/two")]
        );
        assert_eq!(t.host_key_checking, HostKeyChecking::AcceptNew);
        assert_eq!(t.connect_timeout, Duration::from_secs(3));
        assert_eq!(t.keepalive, None);
    }

    #[test]
    fn cutover_toml_wins_over_the_ssh_config() {
        let r = route_for(
            "host = 'web'\nport = 22\nuser = 'root'\nidentity_file = '/mine'\nknown_hosts = '/kh/mine'\nhost_key_checking = 'strict'\n",
            CONFIG,
        )
        .unwrap();
        let t = &r.target;
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        assert_eq!(t.identity_files, vec![PathBuf::from("/mine")]);
        assert_eq!(t.known_hosts, vec![PathBuf::from("/kh/mine")]);
        assert_eq!(t.host_key_checking, HostKeyChecking::Strict);
        // the jump hosts are checked with cutover.toml's known_hosts too
        assert!(r
            .jumps
            .iter()
            .all(|j| j.known_hosts == vec![PathBuf::from("/kh/mine")]
                && j.host_key_checking == HostKeyChecking::Strict));
    }

    #[test]
    fn proxy_jump_hops_in_order_with_the_first_hops_own_jumps() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let hops: Vec<(&str, u16, &str)> = r
            .jumps
            .iter()
            .map(|j| (j.host.as_str(), j.port, j.user.as_str()))
            .collect();
        let me = local_user_name();
        assert_eq!(
            hops,
            vec![
                ("outer", 22, me.as_str()),
                ("10.0.0.1", 2200, "ops"),
                ("inner", 22, me.as_str())
            ]
        );
        assert_eq!(
            r.jumps[1].identity_files,
            vec![PathBuf::from("/keys/bastion")]
        );
    }

    #[test]
    fn strict_host_key_checking_no_is_strict_with_a_warning() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let outer = &r.jumps[0];
        assert_eq!(outer.host_key_checking, HostKeyChecking::Strict);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("StrictHostKeyChecking no") && w.contains("outer")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn plain_host_without_config_gets_the_defaults() {
        let r = route_for("host = 'example.com'\n", "").unwrap();
        let t = &r.target;
        assert!(r.jumps.is_empty());
        assert_eq!((t.host.as_str(), t.port), ("example.com", 22));
        assert_eq!(t.user, local_user_name());
        assert!(t.identity_files.is_empty());
        assert_eq!(t.agent, Agent::Env);
        assert_eq!(t.host_key_checking, HostKeyChecking::Strict);
        assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(t.keepalive, Some(DEFAULT_KEEPALIVE));
        assert_eq!(t.known_hosts[0], home_dir().join(".ssh/known_hosts"));
    }

    #[test]
    fn proxy_command_is_refused() {
        let e = route_for(
            "host = 'x'\n",
            "Host x\n  ProxyCommand nc -X connect %h %p\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ProxyCommand") && e.contains("ProxyJump"), "{e}");
        // `none` is fine
        route_for("host = 'x'\n", "Host x\n  ProxyCommand none\n").unwrap();
    }

    #[test]
    fn proxy_jump_loops_are_refused() {
        let e = route_for(
            "host = 'a'\n",
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("loop"), "{e}");
    }

    #[test]
    fn unsupported_tokens_are_errors() {
        let e = route_for("host = 'x'\n", "Host x\n  IdentityFile ~/.ssh/%C\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%C"), "{e}");
    }

    #[test]
    fn identity_agent_none_disables_the_agent() {
        let r = route_for("host = 'x'\n", "Host x\n  IdentityAgent none\n").unwrap();
        assert_eq!(r.target.agent, Agent::Disabled);
    }
}
