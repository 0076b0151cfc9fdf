//! cutover's ssh config reader against OpenSSH's: for each sample config, what
//! `cutover::remote::ssh_config::settings` resolves for a host must be what `ssh -G -F FILE HOST`
//! prints, setting by setting (hostname, user, port, identityfile, proxyjump, connecttimeout,
//! stricthostkeychecking, userknownhostsfile, identitiesonly, serveraliveinterval,
//! serveralivecountmax). A sample `ssh` refuses must be refused by cutover too.
//!
//! `ssh` expands `~` and `%d` from the password database, not from `$HOME`, so the reader is given
//! that directory here (cutover itself uses `$HOME`; README "Connecting" says so). Relative
//! `Include`s resolve under `~/.ssh`, which is the real home of the user running the tests: the
//! samples include by absolute path only, and write nothing outside their temp dir.
//!
//! `ssh -G` prints `identityfile` as written (tokens expand when the key is loaded) but
//! `userknownhostsfile` expanded, so identity files are compared after expanding `ssh`'s values
//! with `ssh`'s own hostname, user and port, and the samples with tokens also put them in
//! `UserKnownHostsFile`, which `ssh` expands itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cutover::remote::ssh_config::{settings, ConfigFile, Settings};

/// One sample: files (the first is the config given to `ssh -F`; `{d}` is the sample's
/// directory) and the host names to resolve in it.
struct Sample {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    hosts: &'static [&'static str],
}

const SAMPLES: &[Sample] = &[
    Sample {
        name: "no config at all: every default",
        files: &[("config", "")],
        hosts: &["example.com", "Mixed.Case.Example"],
    },
    Sample {
        name: "HostName, User, Port in a Host block",
        files: &[("config", "Host web\n  HostName 10.0.0.5\n  User deploy\n  Port 2222\n")],
        hosts: &["web", "other"],
    },
    Sample {
        name: "first value wins across blocks",
        files: &[(
            "config",
            "Host web\n  Port 2222\nHost *\n  Port 22\n  User fallback\n  HostName fallback.example\n",
        )],
        hosts: &["web", "db"],
    },
    Sample {
        name: "settings before any Host line apply to every host",
        files: &[("config", "User early\nPort 2022\nHost web\n  User late\n  Port 3\n")],
        hosts: &["web"],
    },
    Sample {
        name: "wildcards * and ?",
        files: &[(
            "config",
            "Host *.example.com\n  User star\nHost db?\n  User question\nHost *\n  User rest\n",
        )],
        hosts: &["a.example.com", "example.com", "db1", "db12", "x.y.example.com"],
    },
    Sample {
        name: "a negated pattern vetoes the line",
        files: &[(
            "config",
            "Host *.example.com !secret.example.com\n  User wild\nHost !nothing\n  Port 99\n",
        )],
        hosts: &["www.example.com", "secret.example.com", "nothing", "else"],
    },
    Sample {
        name: "Host patterns are case-sensitive; HostName is lowercased",
        files: &[("config", "Host MyAlias\n  HostName Box.EXAMPLE.com\n  User cased\n")],
        hosts: &["MyAlias", "myalias"],
    },
    Sample {
        name: "HostName with %h and %%",
        files: &[("config", "Host *\n  HostName %h.internal.example\n")],
        hosts: &["Web", "db"],
    },
    Sample {
        name: "Match host sees the HostName set before it",
        files: &[(
            "config",
            "Host web\n  HostName 10.0.0.5\nMatch host 10.0.0.5\n  User matched\nMatch host web\n  Port 9\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "Match originalhost and user",
        files: &[(
            "config",
            "Host web\n  User alice\nMatch originalhost web user alice\n  Port 1022\nMatch originalhost web user bob\n  Port 2022\n",
        )],
        hosts: &["web", "WEB"],
    },
    Sample {
        name: "Match localuser, negated",
        files: &[(
            "config",
            "Match !localuser nobody-here\n  User not-nobody\nMatch localuser nobody-here\n  Port 7\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "Match all, and a Match block does not leak into the Host block before it",
        files: &[(
            "config",
            "Host web\n  HostName 10.0.0.5\nMatch host other\n  Port 9\nMatch all\n  IdentitiesOnly yes\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "Match host pattern list with negation and case",
        files: &[(
            "config",
            "Match host \"*.EXAMPLE.com,!bad.example.com\"\n  User listed\n",
        )],
        hosts: &["good.example.com", "bad.example.com", "Good.Example.COM"],
    },
    Sample {
        name: "Include with a glob, files read in sorted order, in place",
        files: &[
            ("config", "Include {d}/conf.d/*.conf\nHost *\n  Port 9\n  User main\n"),
            ("conf.d/b.conf", "Host web\n  Port 2\n"),
            ("conf.d/a.conf", "Host web\n  Port 1\n  IdentityFile /keys/a\n"),
            ("conf.d/c.txt", "Host web\n  User not-included\n"),
        ],
        hosts: &["web", "db"],
    },
    Sample {
        name: "Include inside a Host block that does not match includes nothing",
        files: &[
            (
                "config",
                "Host nothere\n  Include {d}/other\nHost *\n  Port 9\n",
            ),
            ("other", "Port 8\nUser included\n"),
        ],
        hosts: &["web"],
    },
    Sample {
        name: "Include inside a matching Host block; the block's state comes back after it",
        files: &[
            ("config", "Host web\n  Include {d}/inc\n  User after-include\nHost *\n  User star\n"),
            ("inc", "Port 2200\nHost db\n  User from-db-block\n"),
        ],
        hosts: &["web", "db"],
    },
    Sample {
        name: "first value wins across files",
        files: &[
            ("config", "Include {d}/first\nHost *\n  Port 22\n  ConnectTimeout 5\n"),
            ("first", "Host web\n  Port 2222\n"),
        ],
        hosts: &["web"],
    },
    Sample {
        name: "IdentityFile accumulates across blocks and files, without duplicates",
        files: &[
            (
                "config",
                "Host web\n  IdentityFile /keys/one\n  IdentityFile /keys/two\nInclude {d}/more\nHost *\n  IdentityFile /keys/one\n  IdentityFile /keys/all\n",
            ),
            ("more", "IdentityFile /keys/included\n"),
        ],
        hosts: &["web", "db"],
    },
    Sample {
        name: "%-tokens and ~ in IdentityFile and UserKnownHostsFile",
        files: &[(
            "config",
            "Host web\n  HostName Web.Example\n  User deploy\n  Port 2222\n  \
             IdentityFile ~/.ssh/%r@%h:%p\n  IdentityFile /k/%u-%n-%d-%%\n  \
             UserKnownHostsFile ~/kh/%h_%p %d/kh/%r-%u-%n-%%\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "ProxyJump forms",
        files: &[(
            "config",
            "Host a\n  ProxyJump ops@gw:2222,ssh://u@h:22\nHost b\n  ProxyJump bastion\nHost c\n  ProxyJump ssh://jump.example/\n\
             Host d\n  ProxyJump u@[::1]:2200\nHost e\n  ProxyJump [2001:db8::1]\n",
        )],
        hosts: &["a", "b", "c", "d", "e"],
    },
    Sample {
        name: "ProxyJump none wins when it comes first",
        files: &[(
            "config",
            "Host direct\n  ProxyJump none\nHost *\n  ProxyJump bastion\n",
        )],
        hosts: &["direct", "other"],
    },
    Sample {
        name: "Key=value syntax, with and without spaces",
        files: &[(
            "config",
            "Host=web\nPort=2200\nUser = bob\nHostName =web.example\nIdentityFile= /keys/eq\nConnectTimeout=7\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "quoting",
        files: &[(
            "config",
            "Host \"web\"\n  IdentityFile \"/my keys/id\"\n  UserKnownHostsFile \"/kh/with space\" /kh/plain\n  User \"deploy\"\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "tabs, comments and case-insensitive keywords",
        files: &[(
            "config",
            "# a comment\nHOST\tweb\t# trailing comment\n\tHOSTNAME web.example\n\tpOrT 2201\n  # Port 1\n\n  identityFILE /keys/x\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "ConnectTimeout in seconds and with units",
        files: &[(
            "config",
            "Host a\n  ConnectTimeout 1m30s\nHost b\n  ConnectTimeout 20\nHost c\n  ConnectTimeout 2M\n",
        )],
        hosts: &["a", "b", "c", "d"],
    },
    Sample {
        name: "StrictHostKeyChecking variants",
        files: &[(
            "config",
            "Host yes\n  StrictHostKeyChecking yes\nHost no\n  StrictHostKeyChecking no\nHost ask\n  StrictHostKeyChecking ask\n\
             Host new\n  StrictHostKeyChecking accept-new\nHost off\n  StrictHostKeyChecking off\nHost true\n  StrictHostKeyChecking true\n\
             Host false\n  StrictHostKeyChecking false\nHost Cased\n  StrictHostKeyChecking Accept-New\n",
        )],
        hosts: &["yes", "no", "ask", "new", "off", "true", "false", "Cased", "unset"],
    },
    Sample {
        name: "UserKnownHostsFile lists, first value wins",
        files: &[(
            "config",
            "Host web\n  UserKnownHostsFile /kh/one /kh/two ~/kh/three\nHost *\n  UserKnownHostsFile /kh/never\n",
        )],
        hosts: &["web", "db"],
    },
    Sample {
        name: "UserKnownHostsFile none",
        files: &[("config", "Host web\n  UserKnownHostsFile none\n")],
        hosts: &["web"],
    },
    Sample {
        name: "IdentitiesOnly, first value wins",
        files: &[(
            "config",
            "Host web\n  IdentitiesOnly yes\nHost db\n  IdentitiesOnly no\nHost *\n  IdentitiesOnly yes\n",
        )],
        hosts: &["web", "db", "other"],
    },
    Sample {
        name: "ServerAliveInterval and ServerAliveCountMax",
        files: &[(
            "config",
            "Host a\n  ServerAliveInterval 1h5m\n  ServerAliveCountMax 5\nHost b\n  ServerAliveInterval 0\n  ServerAliveCountMax 0\n\
             Host *\n  ServerAliveInterval 30\n",
        )],
        hosts: &["a", "b", "c"],
    },
    Sample {
        name: "a trailing comment after a value",
        files: &[(
            "config",
            "Host web # the web box\n  Port 2200 # not the default\n  User deploy#not-a-comment\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "several Host patterns on one line, the first matching decides nothing alone",
        files: &[("config", "Host db web api\n  User multi\nHost web\n  User never\n")],
        hosts: &["web", "api", "cache"],
    },
    Sample {
        name: "an unmatched Match after a matched Host",
        files: &[(
            "config",
            "Host web\n  User first\nMatch user nobody\n  Port 1\nHost *\n  Port 2\n",
        )],
        hosts: &["web"],
    },
    // What OpenSSH refuses, cutover refuses too.
    Sample {
        name: "refused: UserKnownHostsFile none among other files",
        files: &[("config", "Host web\n  UserKnownHostsFile /kh/a none\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: ProxyJump with an empty hop",
        files: &[("config", "Host web\n  ProxyJump a,\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: ProxyJump with a port that is not a number",
        files: &[("config", "Host web\n  ProxyJump a:notaport\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: Port out of range",
        files: &[("config", "Host web\n  Port 70000\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: Port 0",
        files: &[("config", "Host web\n  Port 0\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: a keyword that takes one value given two",
        files: &[("config", "Host web\n  Port 22 23\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: extra values in a block that does not apply",
        files: &[("config", "Host other\n  User a b\nHost web\n  Port 2\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: Host without a pattern",
        files: &[("config", "Host\n  User x\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: a keyword without its value",
        files: &[("config", "Host web\n  User\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: an unterminated quote",
        files: &[("config", "Host web\n  User \"bob\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: StrictHostKeyChecking with an unknown value",
        files: &[("config", "Host web\n  StrictHostKeyChecking maybe\n")],
        hosts: &["web"],
    },
    Sample {
        name: "refused: a token HostName does not expand",
        files: &[("config", "Host web\n  HostName %h-%p\n")],
        hosts: &["web", "other"],
    },
    Sample {
        name: "refused: ServerAliveCountMax that is not a number",
        files: &[("config", "Host web\n  ServerAliveCountMax -1\n")],
        hosts: &["web"],
    },
    Sample {
        name: "none leaves a time unset, so a later line still sets it",
        files: &[(
            "config",
            "Host web\n  ConnectTimeout none\n  ServerAliveInterval none\nHost *\n  ConnectTimeout 5\n  ServerAliveInterval 7\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "time values: 0, upper case units, weeks and days",
        files: &[(
            "config",
            "Host a\n  ConnectTimeout 0\n  ServerAliveInterval 1W2D\nHost b\n  ServerAliveInterval 90S\n",
        )],
        hosts: &["a", "b"],
    },
    Sample {
        name: "backslashes: kept before ordinary characters, escaping quotes and spaces",
        files: &[(
            "config",
            "Host a\n  User a\\b\nHost b\n  IdentityFile /k/with\\ space\nHost c\n  User \"q\\\"uote\"\n",
        )],
        hosts: &["a", "b", "c"],
    },
    Sample {
        name: "quotes: single, double, and Key=\"value with spaces\"",
        files: &[(
            "config",
            "Host a\n  User 'single'\nHost b\n  IdentityFile=\"/k/two words\"\nHost c\n  User=\"bob\"smith\n",
        )],
        hosts: &["a", "b", "c"],
    },
    Sample {
        name: "the rest of the tokens: %C %L %l %i %k",
        files: &[(
            "config",
            "Host web\n  HostName box.example\n  User u\n  Port 2\n  IdentityFile /k/%C-%L-%l-%i-%k\n  \
             UserKnownHostsFile /kh/%C-%L-%l-%i-%k\n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "keywords and Match criteria in any case; Host with =",
        files: &[(
            "config",
            "MATCH HOST web\n  User up\nhost = db\n  User eq\n",
        )],
        hosts: &["web", "db"],
    },
    Sample {
        name: "Include of a missing file is no error",
        files: &[("config", "Include /nonexistent/file\nHost web\n  User x\n")],
        hosts: &["web"],
    },
    Sample {
        name: "IdentitiesOnly True, IdentityFile relative to nothing",
        files: &[(
            "config",
            "Host web\n  IdentitiesOnly True\n  IdentityFile keys/id\n  Port\t 2201 \n",
        )],
        hosts: &["web"],
    },
    Sample {
        name: "ProxyJump ssh:// with a port only",
        files: &[("config", "Host web\n  ProxyJump ssh://gw:2200\n")],
        hosts: &["web"],
    },
];

/// The home directory and name of the user running the tests, from the password database,
/// which is what `ssh` expands `~`, `%d` and `%u` from.
fn passwd_home_and_user() -> (PathBuf, String) {
    // SAFETY: getpwuid returns a pointer into static storage, read at once on this thread.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null(), "no passwd entry for this user");
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir)
            .to_string_lossy()
            .into_owned();
        let name = std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned();
        (PathBuf::from(dir), name)
    }
}

/// `ssh -G`'s answer: keyword → values (identityfile has several lines), or its error.
fn ssh_g(config: &Path, host: &str, home: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("ssh (openssh-client) must be installed: scripts/test installs it");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    Ok(map)
}

fn local_host_name() -> String {
    let out = Command::new("hostname").output().expect("hostname");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// OpenSSH's token expansion of a file name, with `ssh`'s resolved values. (`%C` and friends
/// are checked against `ssh`'s own expansion through a `UserKnownHostsFile` in the same sample.)
fn expand(
    value: &str,
    g: &BTreeMap<String, Vec<String>>,
    host: &str,
    home: &Path,
    local_user: &str,
) -> String {
    let one = |k: &str| g[k][0].clone();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&one("hostname")),
            Some('r') => out.push_str(&one("user")),
            Some('p') => out.push_str(&one("port")),
            Some('u') => out.push_str(local_user),
            Some('n') => out.push_str(host),
            Some('d') => out.push_str(&home.to_string_lossy()),
            Some('k') => out.push_str(host),
            Some('i') => out.push_str(&unsafe { libc::getuid() }.to_string()),
            Some('l') => out.push_str(&local_host_name()),
            Some('L') => out.push_str(local_host_name().split('.').next().unwrap()),
            Some('C') => {
                use sha1::{Digest, Sha1};
                let text = format!(
                    "{}{}{}{}",
                    local_host_name(),
                    one("hostname"),
                    one("port"),
                    one("user")
                );
                let digest = Sha1::digest(text.as_bytes());
                out.push_str(
                    &digest
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                );
            }
            Some('%') => out.push('%'),
            other => panic!("token %{other:?} in a sample"),
        }
    }
    match out.strip_prefix("~/") {
        Some(rest) => home.join(rest).to_string_lossy().into_owned(),
        None => out,
    }
}

fn secs(d: Option<std::time::Duration>, unset: &str) -> String {
    d.map_or(unset.to_string(), |d| d.as_secs().to_string())
}

/// Ours, in `ssh -G`'s words, for the keywords compared.
fn ours_as_ssh_g(s: &Settings, home: &Path) -> BTreeMap<&'static str, String> {
    let strict = match s.strict_host_key_checking.as_deref() {
        None => "ask".to_string(),
        Some("yes" | "true") => "true".into(),
        Some("no" | "false" | "off") => "false".into(),
        Some(other) => other.to_string(),
    };
    let known = match &s.user_known_hosts_files {
        None => vec![
            home.join(".ssh/known_hosts"),
            home.join(".ssh/known_hosts2"),
        ],
        // `UserKnownHostsFile none`
        Some(files) if files.is_empty() => vec![PathBuf::from("none")],
        Some(files) => files.clone(),
    };
    BTreeMap::from([
        ("hostname", s.hostname.clone()),
        ("user", s.user.clone()),
        ("port", s.port.to_string()),
        (
            "proxyjump",
            s.proxy_jump.clone().unwrap_or_else(|| "(unset)".into()),
        ),
        ("connecttimeout", secs(s.connect_timeout, "none")),
        ("stricthostkeychecking", strict),
        (
            "userknownhostsfile",
            known
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "identitiesonly",
            if s.identities_only { "yes" } else { "no" }.into(),
        ),
        ("serveraliveinterval", secs(s.server_alive_interval, "0")),
        (
            "serveralivecountmax",
            s.server_alive_count_max.unwrap_or(3).to_string(),
        ),
    ])
}

/// `ssh`'s default identity files: what `ssh -G` lists when none is configured.
const SSH_DEFAULT_IDENTITIES: [&str; 7] = [
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];

#[test]
fn cutover_reads_ssh_config_as_openssh_does() {
    if Command::new("ssh").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ssh is missing under CI: scripts/test should have installed openssh-client"
        );
        eprintln!("skipping: ssh not installed (run scripts/test)");
        return;
    }
    assert!(SAMPLES.len() >= 30, "{} samples", SAMPLES.len());
    let (home, local_user) = passwd_home_and_user();
    let mut compared = 0;
    let mut failures = Vec::new();
    for sample in SAMPLES {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, text) in sample.files {
            let path = d.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text.replace("{d}", &d.to_string_lossy())).unwrap();
        }
        let config = d.join(sample.files[0].0);
        let files = [ConfigFile {
            path: config.clone(),
            include_base: home.join(".ssh"),
        }];
        for host in sample.hosts {
            let theirs = ssh_g(&config, host, d);
            let ours = settings(&files, host, &home, &local_user);
            let what = format!("{} / {host}", sample.name);
            let (theirs, ours) = match (theirs, ours) {
                (Ok(t), Ok(o)) => (t, o),
                (Err(_), Err(_)) => {
                    compared += 1;
                    continue;
                }
                (Err(e), Ok(o)) => {
                    failures.push(format!("{what}: ssh refuses ({e}), cutover reads {o:?}"));
                    continue;
                }
                (Ok(_), Err(e)) => {
                    failures.push(format!("{what}: ssh reads it, cutover refuses: {e:#}"));
                    continue;
                }
            };
            compared += 1;
            for (key, value) in ours_as_ssh_g(&ours, &home) {
                let expected = match theirs.get(key) {
                    Some(values) => values.join(" "),
                    None => "(unset)".to_string(),
                };
                if value != expected {
                    failures.push(format!(
                        "{what}: {key}: ssh {expected:?}, cutover {value:?}"
                    ));
                }
            }
            let listed: Vec<&str> = theirs
                .get("identityfile")
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            if ours.identity_files.is_empty() {
                if listed != SSH_DEFAULT_IDENTITIES {
                    failures.push(format!(
                        "{what}: identityfile: ssh {listed:?}, cutover none configured"
                    ));
                }
            } else {
                let expected: Vec<String> = listed
                    .iter()
                    .map(|f| expand(f, &theirs, host, &home, &local_user))
                    .collect();
                let ours: Vec<String> = ours
                    .identity_files
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if ours != expected {
                    failures.push(format!(
                        "{what}: identityfile: ssh {expected:?}, cutover {ours:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} lookups differ from ssh -G:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{compared} lookups in {} samples agree with ssh -G",
        SAMPLES.len()
    );
}
