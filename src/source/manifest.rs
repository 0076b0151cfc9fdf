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
//! A manifest read from a server is untrusted input: someone with write access to the deploy path
//! could plant one. [`Manifest::parse`] refuses absolute paths, `..`, `.` and empty components,
//! NUL, a missing parent directory and any malformed line, so the plan built from it can only
//! ever name paths inside the new release.

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
}

impl Manifest {
    pub fn files(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::File { .. }))
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
            Some(other) => bail!(
                "not a cutover manifest (first line is {:?}, expected {HEADER:?})",
                truncate(other)
            ),
            None => bail!("empty manifest"),
        }
        let mut entries = BTreeMap::new();
        for (i, line) in lines.enumerate() {
            let lineno = i + 2;
            if line.is_empty() {
                continue;
            }
            let (path, entry) =
                parse_line(line).map_err(|e| anyhow::anyhow!("line {lineno}: {e}"))?;
            if entries.insert(path.clone(), entry).is_some() {
                bail!("line {lineno}: path {path:?} appears twice");
            }
        }
        // Every parent must be a directory of the manifest: a plan built from it then never
        // asks the server to treat a file as a directory.
        for path in entries.keys() {
            if let Some((parent, _)) = path.rsplit_once('/') {
                match entries.get(parent) {
                    Some(e) if e.is_dir() => {}
                    Some(_) => {
                        bail!("path {path:?} is inside {parent:?}, which is not a directory")
                    }
                    None => bail!("path {path:?} has no entry for its directory {parent:?}"),
                }
            }
        }
        Ok(Manifest { entries })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
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
        .ok_or_else(|| anyhow::anyhow!("bad mode {:?}", truncate(mode)))?;
    let path = unescape(path)?;
    validate_relative_path(&path)?;
    let kind = match (kind, fields.len()) {
        ("f", 5) => {
            let size = size
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("bad size {:?} for {path:?}", truncate(size)))?;
            if hash.len() != 32
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                bail!("bad hash {:?} for {path:?}", truncate(hash));
            }
            Kind::File {
                size,
                hash: u128::from_str_radix(hash, 16)?,
            }
        }
        ("d", 5) if size == "-" && hash == "-" => Kind::Dir,
        ("l", 6) if size == "-" && hash == "-" => {
            let target = unescape(fields[5])?;
            if target.is_empty() || target.contains('\0') {
                bail!("bad symlink target for {path:?}");
            }
            Kind::Symlink { target }
        }
        _ => bail!("malformed line for {path:?}"),
    };
    Ok((path, Entry { kind, mode }))
}

/// A path the server may act on: relative, non-empty components, no `.` or `..`, no NUL.
pub fn validate_relative_path(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("empty path");
    }
    if path.starts_with('/') {
        bail!("absolute path {path:?} (manifest paths are relative to the release)");
    }
    if path.contains('\0') {
        bail!("path {path:?} contains NUL");
    }
    for component in path.split('/') {
        match component {
            "" => bail!("path {path:?} has an empty component"),
            "." => bail!("path {path:?} has a `.` component"),
            ".." => bail!("path {path:?} has a `..` component: it would leave the release"),
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
                bail!("unescaped control character in {:?}", truncate(s));
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
                    Some(0) | None => bail!("bad escape \\x{hex} in {:?}", truncate(s)),
                    Some(v) => out.push(v as char),
                }
            }
            _ => bail!("bad escape in {:?}", truncate(s)),
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
    fn malformed_lines_are_refused() {
        assert!(refused("garbage").contains("malformed"));
        assert!(refused(&format!("f\t644\tbig\t{H}\tx")).contains("bad size"));
        assert!(refused("f\t644\t1\tnothex\tx").contains("bad hash"));
        assert!(refused(&format!("f\t4755\t1\t{H}\tx")).contains("bad mode"));
        assert!(refused("q\t644\t-\t-\tx").contains("malformed"));
        assert!(refused(&format!("f\t644\t1\t{H}\tx\nf\t644\t1\t{H}\tx")).contains("twice"));
    }

    #[test]
    fn missing_parent_directory_is_refused() {
        assert!(refused(&format!("f\t644\t1\t{H}\ta/b")).contains("no entry for its directory"));
        assert!(
            refused(&format!("f\t644\t1\t{H}\ta\nf\t644\t1\t{H}\ta/b")).contains("not a directory")
        );
    }

    #[test]
    fn wrong_header_is_refused() {
        assert!(Manifest::parse("hello\n").is_err());
        assert!(Manifest::parse("").is_err());
    }
}
