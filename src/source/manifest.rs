//! The manifest: one line per path of a release, stored as `.cutover/manifests/<ID>`.
//!
//! ```text
//! cutover-manifest 1
//! d → 755 → - → - → assets
//! f → 644 → 5120 → 7c1e0f5c2b9d4a1e8f3b6d0a9c8e7f61 → assets/app.css
//! f → 755 → 88 → 0d5f… → bin/console
//! l → 777 → - → - → latest → releases/current.txt
//! ```
//!
//! Fields are separated by one TAB (shown as → above): kind (`f` file, `d` directory, `l` symlink), mode (octal
//! permission bits), size in bytes (`-` unless a file), xxh3-128 of the content as 32 lowercase hex
//! digits (`-` unless a file), the path relative to the release root, and for symlinks the link
//! target. Lines are sorted by path (byte order) and every parent directory has its own `d` line.
//! Paths and targets are UTF-8; `\` escapes `\\`, TAB (`\t`), newline (`\n`), CR (`\r`) and
//! other control characters (`\xHH`), so any name fits on one line.
//!
//! Lines starting with `#` before the entries record the release itself, one `#KEY<TAB>VALUE`
//! each (escaped like paths): who deployed it, when, with which cutover, from which git commit
//! (see [`Manifest::meta`]).
//!
//! A manifest read from a server is untrusted input: someone with write access to the deploy path
//! could plant one. [`Manifest::parse`] refuses absolute paths, `..`, `.` and empty components,
//! NUL, components over 255 bytes and paths over 4,096, a missing parent directory and any
//! malformed line, so the plan built from it can only ever name paths inside the new release.
//! Its errors give line numbers, never the file's content: a manifest planted as a link to
//! another file must not leak that file into a message.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

pub const HEADER: &str = "cutover-manifest 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, hash: u128 },
    Dir,
    Symlink { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (at most 0o777: set-id and sticky bits are never deployed).
    pub mode: u32,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
    fn letter(&self) -> char {
        match self.kind {
            Kind::File { .. } => 'f',
            Kind::Dir => 'd',
            Kind::Symlink { .. } => 'l',
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: BTreeMap<String, Entry>,
    /// What the release records about itself (`deployed_by`, `created_at`, `git_commit`, …).
    /// Not part of what the release contains: two manifests with the same entries describe the
    /// same tree.
    pub meta: BTreeMap<String, String>,
}

/// Longest name of one path component (NAME_MAX on Linux and the BSDs).
pub const MAX_COMPONENT: usize = 255;
/// Longest path (PATH_MAX).
pub const MAX_PATH: usize = 4096;

impl Manifest {
    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .count()
    }

    /// Do both describe the same tree (whatever their records say)?
    pub fn same_tree(&self, other: &Manifest) -> bool {
        self.entries == other.entries
    }

    /// A digest of what makes two releases the same for a deploy: every path with its kind,
    /// and for files and links their content (size and hash, or target) and mode. A
    /// directory's mode is left out, as the plan leaves it out: two manifests have the same
    /// digest exactly when a plan between them changes nothing (up to a 128-bit collision).
    ///
    /// The deploy script stores it beside the release ID (`.cutover/current-digest`), so the
    /// next deploy of the same tree knows it changes nothing from one round trip, without
    /// reading the live manifest.
    pub fn tree_digest(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (path, e) in &self.entries {
            h.update(path.as_bytes());
            h.update(&[0, e.letter() as u8]);
            match &e.kind {
                Kind::Dir => {}
                Kind::File { size, hash } => {
                    h.update(&e.mode.to_le_bytes());
                    h.update(&size.to_le_bytes());
                    h.update(&hash.to_le_bytes());
                }
                Kind::Symlink { target } => {
                    h.update(&e.mode.to_le_bytes());
                    h.update(target.as_bytes());
                    h.update(&[0]);
                }
            }
        }
        format!("{:032x}", h.digest128())
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * self.entries.len() + 32);
        out.push_str(HEADER);
        out.push('\n');
        for (key, value) in &self.meta {
            out.push('#');
            out.push_str(key);
            out.push('\t');
            escape_into(value, &mut out);
            out.push('\n');
        }
        for (path, e) in &self.entries {
            let _ = write!(out, "{}\t{:o}\t", e.letter(), e.mode);
            match &e.kind {
                Kind::File { size, hash } => {
                    let _ = write!(out, "{size}\t{hash:032x}\t");
                    escape_into(path, &mut out);
                }
                Kind::Dir => {
                    out.push_str("-\t-\t");
                    escape_into(path, &mut out);
                }
                Kind::Symlink { target } => {
                    out.push_str("-\t-\t");
                    escape_into(path, &mut out);
                    out.push('\t');
                    escape_into(target, &mut out);
                }
            }
            out.push('\n');
        }
        out
    }

    /// Parse and validate a manifest; see the module docs for what is refused.
    pub fn parse(text: &str) -> Result<Manifest> {
        let mut lines = text.split('\n');
        match lines.next() {
            Some(HEADER) => {}
            Some(_) => bail!("not a cutover manifest (its first line is not {HEADER:?})"),
            None => bail!("empty manifest"),
        }
        let mut entries = BTreeMap::new();
        let mut meta = BTreeMap::new();
        for (i, line) in lines.enumerate() {
            let lineno = i + 2;
            if line.is_empty() {
                continue;
            }
            if let Some(record) = line.strip_prefix('#') {
                let (key, value) =
                    parse_meta(record).map_err(|e| anyhow::anyhow!("line {lineno}: {e}"))?;
                meta.insert(key, value);
                continue;
            }
            let (path, entry) =
                parse_line(line).map_err(|e| anyhow::anyhow!("line {lineno}: {e}"))?;
            if entries.insert(path, entry).is_some() {
                bail!("line {lineno}: a path that appears twice");
            }
        }
        // Every parent must be a directory of the manifest: a plan built from it then never
        // asks the server to treat a file as a directory.
        for (n, path) in entries.keys().enumerate() {
            if let Some((parent, _)) = path.rsplit_once('/') {
                match entries.get(parent) {
                    Some(e) if e.is_dir() => {}
                    Some(_) => bail!(
                        "entry {}: a path inside another entry that is not a directory",
                        n + 1
                    ),
                    None => bail!("entry {}: a path whose directory has no entry", n + 1),
                }
            }
        }
        Ok(Manifest { entries, meta })
    }
}

/// `KEY<TAB>VALUE` of a `#` line.
fn parse_meta(record: &str) -> Result<(String, String)> {
    let Some((key, value)) = record.split_once('\t') else {
        bail!("malformed record line");
    };
    if key.is_empty()
        || key.len() > 64
        || !key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        bail!("malformed record key");
    }
    let value = unescape(value)?;
    if value.len() > MAX_PATH {
        bail!("record value longer than {MAX_PATH} bytes");
    }
    Ok((key.to_string(), value))
}

fn parse_line(line: &str) -> Result<(String, Entry)> {
    let fields: Vec<&str> = line.split('\t').collect();
    let (kind, mode, size, hash, path) = match fields.as_slice() {
        [k, m, s, h, p] | [k, m, s, h, p, _] => (*k, *m, *s, *h, *p),
        _ => bail!(
            "malformed line: expected 5 or 6 TAB-separated fields, found {}",
            fields.len()
        ),
    };
    let mode = u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o777 && !mode.is_empty() && mode.len() <= 4)
        .ok_or_else(|| anyhow::anyhow!("bad mode (permission bits up to 777 only)"))?;
    let path = unescape(path)?;
    validate_relative_path(&path)?;
    let kind = match (kind, fields.len()) {
        ("f", 5) => {
            let size = size
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("bad size"))?;
            if hash.len() != 32
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                bail!("bad hash");
            }
            Kind::File {
                size,
                hash: u128::from_str_radix(hash, 16)?,
            }
        }
        ("d", 5) if size == "-" && hash == "-" => Kind::Dir,
        ("l", 6) if size == "-" && hash == "-" => {
            let target = unescape(fields[5])?;
            if target.is_empty() || target.contains('\0') || target.len() >= MAX_PATH {
                bail!(
                    "bad symlink target (empty, NUL or longer than {} bytes)",
                    MAX_PATH - 1
                );
            }
            Kind::Symlink { target }
        }
        _ => bail!("malformed line (unknown kind or fields)"),
    };
    Ok((path, Entry { kind, mode }))
}

/// A path the server may act on: relative, non-empty components of at most 255 bytes, no `.`
/// or `..`, no NUL, at most 4,096 bytes. The error never repeats the path (it may come from a
/// file that is not a manifest at all).
pub fn validate_relative_path(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("empty path");
    }
    if path.starts_with('/') {
        bail!("an absolute path (manifest paths are relative to the release)");
    }
    if path.contains('\0') {
        bail!("a path that contains NUL");
    }
    if path.len() > MAX_PATH {
        bail!("a path longer than {MAX_PATH} bytes");
    }
    for component in path.split('/') {
        match component {
            "" => bail!("a path with an empty component"),
            "." => bail!("a path with a `.` component"),
            ".." => bail!("a path with a `..` component: it would leave the release"),
            c if c.len() > MAX_COMPONENT => {
                bail!("a path component longer than {MAX_COMPONENT} bytes")
            }
            _ => {}
        }
    }
    Ok(())
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if (c as u32) < 0x20 || c == '\x7f' {
                bail!("an unescaped control character");
            }
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let v = u8::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 2);
                match v {
                    Some(0) | None => bail!("bad escape \\x.. (NUL or not hex)"),
                    Some(v) => out.push(v as char),
                }
            }
            _ => bail!("bad escape"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::default();
        m.entries.insert(
            "a".into(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
        m.entries.insert(
            "a/x y\tz\n\\'$(id)".into(),
            Entry {
                kind: Kind::File {
                    size: 3,
                    hash: 0xabc,
                },
                mode: 0o644,
            },
        );
        m.entries.insert(
            "run".into(),
            Entry {
                kind: Kind::File {
                    size: 0,
                    hash: u128::MAX,
                },
                mode: 0o755,
            },
        );
        m.entries.insert(
            "l".into(),
            Entry {
                kind: Kind::Symlink {
                    target: "a/\x01é".into(),
                },
                mode: 0o777,
            },
        );
        m
    }

    #[test]
    fn render_then_parse_round_trips_hostile_names() {
        let m = sample();
        let text = m.render();
        assert_eq!(
            text.lines().count(),
            5,
            "one line per entry plus header:\n{text}"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    fn refused(body: &str) -> String {
        let text = format!("{HEADER}\n{body}\n");
        format!("{:#}", Manifest::parse(&text).unwrap_err())
    }

    const H: &str = "00000000000000000000000000000abc";

    #[test]
    fn absolute_path_is_refused() {
        assert!(refused(&format!("f\t644\t1\t{H}\t/etc/passwd")).contains("absolute"));
    }

    #[test]
    fn dotdot_component_is_refused() {
        assert!(refused(&format!("f\t644\t1\t{H}\t..")).contains(".."));
        assert!(refused(&format!("d\t755\t-\t-\ta\nf\t644\t1\t{H}\ta/../../x")).contains(".."));
    }

    #[test]
    fn empty_and_dot_components_are_refused() {
        assert!(
            refused(&format!("d\t755\t-\t-\ta\nf\t644\t1\t{H}\ta//b")).contains("empty component")
        );
        assert!(refused(&format!("f\t644\t1\t{H}\t.")).contains("`.`"));
        assert!(refused(&format!("f\t644\t1\t{H}\t")).contains("empty path"));
    }

    #[test]
    fn nul_is_refused() {
        assert!(refused(&format!("f\t644\t1\t{H}\ta\\x00b")).contains("bad escape"));
        assert!(refused(&format!("f\t644\t1\t{H}\ta\0b")).contains("control"));
    }

    #[test]
    fn overlong_components_and_paths_are_refused() {
        let component = "c".repeat(256);
        assert!(refused(&format!("f\t644\t1\t{H}\t{component}")).contains("255 bytes"));
        assert!(
            Manifest::parse(&format!("{HEADER}\nf\t644\t1\t{H}\t{}\n", "c".repeat(255))).is_ok()
        );
        let mut deep = String::new();
        let mut body = String::new();
        while deep.len() <= MAX_PATH {
            if !deep.is_empty() {
                deep.push('/');
            }
            deep.push_str(&"d".repeat(200));
            body.push_str(&format!("d\t755\t-\t-\t{deep}\n"));
        }
        assert!(refused(&body).contains("4096 bytes"));
        let target = "t".repeat(MAX_PATH);
        assert!(refused(&format!("l\t777\t-\t-\tx\t{target}")).contains("symlink target"));
    }

    #[test]
    fn errors_never_repeat_what_the_file_contains() {
        let secret = "root:$6$secretsalt$hash:19000:0:99999:7:::";
        for text in [
            format!("{secret}\n"),
            format!("{HEADER}\n{secret}\n"),
            format!("{HEADER}\nf\t644\t1\t{H}\t/{secret}\n"),
            format!("{HEADER}\nf\t644\t{secret}\t{H}\tx\n"),
            format!("{HEADER}\nf\t{secret}\t1\t{H}\tx\n"),
            format!("{HEADER}\nf\t644\t1\t{H}\tx\\q{secret}\n"),
        ] {
            let e = format!("{:#}", Manifest::parse(&text).unwrap_err());
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(refused("garbage").contains("malformed"));
        assert!(refused(&format!("f\t644\tbig\t{H}\tx")).contains("bad size"));
        assert!(refused("f\t644\t1\tnothex\tx").contains("bad hash"));
        assert!(refused(&format!("f\t4755\t1\t{H}\tx")).contains("bad mode"));
        assert!(refused("q\t644\t-\t-\tx").contains("malformed"));
        assert!(refused(&format!("f\t644\t1\t{H}\tx\nf\t644\t1\t{H}\tx")).contains("twice"));
        assert!(refused("#Bad key\tx").contains("record key"));
    }

    #[test]
    fn missing_parent_directory_is_refused() {
        assert!(refused(&format!("f\t644\t1\t{H}\ta/b")).contains("has no entry"));
        assert!(
            refused(&format!("f\t644\t1\t{H}\ta\nf\t644\t1\t{H}\ta/b")).contains("not a directory")
        );
    }

    #[test]
    fn records_round_trip_and_do_not_change_the_tree() {
        let mut m = sample();
        let plain = m.clone();
        m.meta.insert("deployed_by".into(), "me@there".into());
        m.meta.insert("git_branch".into(), "feature\tx".into());
        let back = Manifest::parse(&m.render()).unwrap();
        assert_eq!(back, m);
        assert!(back.same_tree(&plain));
    }

    #[test]
    fn wrong_header_is_refused() {
        assert!(Manifest::parse("hello\n").is_err());
        assert!(Manifest::parse("").is_err());
    }
}
