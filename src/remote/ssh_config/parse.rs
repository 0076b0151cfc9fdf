//! Reading ssh config files: lines, blocks, `Include`, and which values apply to one host.
//!
//! The output is a [`HostConfig`] of raw values, as written and not yet expanded: `%` tokens
//! need the final user, host and port, which only exist once every file has been read, and
//! cutover.toml may still override some of them (that is [`super::route()`]'s job). Keeping the
//! two apart is what lets the reader follow OpenSSH's reader rule by rule (first value wins, blocks
//! switched on and off by `Host`/`Match`, `Include` read in place) without knowing about targets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::{CONFIG_ENV, MAX_INCLUDE_DEPTH};
use crate::config::home_dir;
use crate::remote::pattern;

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
    /// `CertificateFile`: user certificates, which accumulate as `IdentityFile`s do.
    pub certificate_files: Vec<String>,
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
        // Keywords that take one value refuse more, as `ssh` does ("extra arguments at end of
        // line"): `Port 22 23` is a mistake, not 22.
        let first = || match args.as_slice() {
            [] => Err(anyhow!("{keyword} needs a value")),
            [one] => Ok(one.clone()),
            [_, extra, ..] => Err(anyhow!(
                "{keyword} takes one value; {extra:?} is one too many"
            )),
        };
        let out = &mut self.out;
        match keyword {
            "host" => {
                if args.is_empty() {
                    bail!("Host needs at least one pattern");
                }
                *active = !never_match
                    && pattern::list_matches(
                        args.iter().map(String::as_str),
                        self.query.host,
                        false,
                    );
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
            "certificatefile" => {
                let v = first()?;
                if *active && !out.certificate_files.contains(&v) {
                    out.certificate_files.push(v);
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
                if args.len() > 1 && args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
                    bail!("UserKnownHostsFile none must appear alone");
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
                if let Some(v) = parse_time(&first()?)? {
                    first_wins(*active, &mut out.connect_timeout, v);
                }
            }
            "serveraliveinterval" => {
                if let Some(v) = parse_time(&first()?)? {
                    first_wins(*active, &mut out.server_alive_interval, v);
                }
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
                        "host" => pattern::list_matches(
                            list.split(','),
                            &host_name.to_ascii_lowercase(),
                            true,
                        ),
                        "originalhost" => pattern::list_matches(
                            list.split(','),
                            &q.host.to_ascii_lowercase(),
                            true,
                        ),
                        "user" => pattern::list_matches(list.split(','), user, false),
                        _ => pattern::list_matches(list.split(','), q.local_user, false),
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

/// Arguments as OpenSSH's `argv_split` makes them: separated by spaces and tabs; `"` or `'`
/// quotes group (and are removed); a backslash escapes a quote, a backslash or (outside quotes)
/// a space, and is kept as it is before anything else (`a\b` stays `a\b`); `#` at the start of
/// an argument ends the line.
fn split_args(s: &str) -> Result<Vec<String>> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' || chars[i] == '\t' {
            i += 1;
            continue;
        }
        if chars[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match (c, quote) {
                ('\\', _)
                    if matches!(next, Some('\'' | '"' | '\\'))
                        || (quote.is_none() && next == Some(' ')) =>
                {
                    i += 1;
                    arg.push(chars[i]);
                }
                (' ' | '\t', None) => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, _) => arg.push(c),
            }
            i += 1;
        }
        if quote.is_some() {
            bail!("unterminated quote");
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

/// OpenSSH time values: `30`, `30s`, `1m30s`, `1h`; `none` is None, which leaves the setting
/// unset (a later line may still set it, as in `ssh`).
fn parse_time(v: &str) -> Result<Option<Duration>> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
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
    Ok(Some(Duration::from_secs(total)))
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
            .filter(|e| pattern::wildcard(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    Ok(found)
}

pub(super) fn expand_tilde(p: &str, home: &Path) -> PathBuf {
    if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(p)
    }
}

/// `HostName` with `%h` (the name as given) and `%%`, lowercased as `ssh` does.
pub(super) fn expand_host_name(value: &str, original: &str) -> String {
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

/// OpenSSH keeps the first value it reads for a keyword: later (more general) blocks only fill
/// what earlier ones left unset.
pub(super) fn first_wins<T>(active: bool, slot: &mut Option<T>, value: T) {
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
    fn time_values() {
        assert_eq!(parse_time("10").unwrap(), Some(Duration::from_secs(10)));
        assert_eq!(parse_time("1h5m").unwrap(), Some(Duration::from_secs(3900)));
        assert_eq!(parse_time("none").unwrap(), None);
        assert!(parse_time("ten").is_err());
        assert!(parse_time("").is_err());
    }
}
