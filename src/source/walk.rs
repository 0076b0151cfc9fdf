//! Walk the source directory and build the [`Manifest`] of what will be deployed.
//!
//! The rules (README, "Configure"): `.gitignore` applies inside a git repository, `.ignore` and
//! `.cutoverignore` always, config `exclude` patterns too, and config `include` patterns force
//! paths back in even when an ignore rule drops them (a gitignored `public/build/`). Hidden files
//! are deployed (`.htaccess`, `.well-known/`); `.git` never is. Symlinks are recorded as symlinks
//! and never followed. Files keep their executable bit and nothing else: they are deployed 0755
//! or 0644, directories 0755, so a private 0600 file in a checkout cannot break a web server.
//!
//! Everything is read before anything is sent: a name that is not UTF-8, an unreadable file or
//! directory fails the scan with the path named, and nothing reaches the server.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::{WalkBuilder, WalkState};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use super::known::{KnownHashes, Stamp};
use super::manifest::{Entry, Kind, Manifest};

pub struct Scan {
    pub manifest: Manifest,
    /// Special files (sockets, FIFOs, devices) that were skipped.
    pub warnings: Vec<String>,
}

/// Scan `root` with the given config patterns and hash every file.
pub fn scan(root: &Path, exclude: &[String], include: &[String]) -> Result<Scan> {
    scan_skipping(root, exclude, include, &[])
}

/// [`scan`], never entering the paths in `skip` (relative to `root`; include patterns do not
/// bring them back): the declared shared paths, which are never deployed from the source.
pub fn scan_skipping(
    root: &Path,
    exclude: &[String],
    include: &[String],
    skip: &[String],
) -> Result<Scan> {
    scan_knowing(root, exclude, include, skip, KnownHashes::none())
}

/// [`scan_skipping`], reading only the files whose hash `known` does not have (see
/// [`KnownHashes`]), and keeping this scan's hashes there for the next one.
pub fn scan_knowing(
    root: &Path,
    exclude: &[String],
    include: &[String],
    skip: &[String],
    known: KnownHashes,
) -> Result<Scan> {
    let excluded = matcher(root, exclude, "exclude")?;
    let found = Mutex::new(Found::default());
    let skip: Vec<PathBuf> = skip.iter().map(|p| root.join(p)).collect();

    walk(root, &excluded, &skip, true, &found);
    if !include.is_empty() {
        // Included paths may sit under ignored directories the first walk never entered, so they
        // are found by a second walk that ignores the ignore files (but never enters `.git`).
        let included = matcher(root, include, "include")?;
        walk_included(root, &included, &skip, &found);
    }

    let found = found.into_inner().unwrap();
    if !found.errors.is_empty() {
        let n = found.errors.len();
        let mut msg = format!(
            "cannot read the source tree {} ({n} problem{}):",
            root.display(),
            if n == 1 { "" } else { "s" }
        );
        for e in found.errors.iter().take(20) {
            msg.push_str("\n  ");
            msg.push_str(e);
        }
        if n > 20 {
            msg.push_str(&format!("\n  … and {} more", n - 20));
        }
        bail!(msg);
    }

    let mut found_entries = found.entries;
    // By path, each once (a path both walks found is the same entry).
    found_entries.sort_by(|a, b| a.0.cmp(&b.0));
    found_entries.dedup_by(|a, b| a.0 == b.0);
    hash_entries(root, &mut found_entries, &known)?;
    let mut entries: BTreeMap<String, Entry> =
        found_entries.into_iter().map(|(p, e, _)| (p, e)).collect();
    add_missing_parents(&mut entries);
    Ok(Scan {
        manifest: Manifest {
            entries,
            meta: Default::default(),
        },
        warnings: found.warnings,
    })
}

/// Fill in the hash of every file, on all cores: reading the files is the expensive part, and
/// a file `known` has the hash of (by the stamp the walk took) is not read at all.
fn hash_entries(
    root: &Path,
    entries: &mut [(String, Entry, Option<Stamp>)],
    known: &KnownHashes,
) -> Result<()> {
    let results: Vec<Result<()>> = entries
        .par_iter_mut()
        .map(|(rel, entry, stamp)| {
            let Kind::File { hash, .. } = &mut entry.kind else {
                return Ok(());
            };
            if let Some(h) = stamp.as_ref().and_then(|s| known.get(s)) {
                *hash = h;
                return Ok(());
            }
            let path = root.join(&*rel);
            *hash = hash_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(())
        })
        .collect();
    // Every file that cannot be read is named (up to 20), with what to do about them: one a
    // run, each found only after the last was fixed, is slow going.
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if !failed.is_empty() {
        let n = failed.len();
        let mut msg = format!(
            "cannot read {n} file{} of the source {}:",
            if n == 1 { "" } else { "s" },
            root.display()
        );
        for e in failed.iter().take(20) {
            msg.push_str("\n  ");
            msg.push_str(e);
        }
        if n > 20 {
            msg.push_str(&format!("\n  … and {} more", n - 20));
        }
        bail!(crate::error::with_hint(
            msg,
            "make them readable by this user, or leave them out with `exclude` in cutover.toml (or .cutoverignore)"
        ));
    }
    known.save(
        entries
            .iter()
            .filter_map(|(_, e, stamp)| match (&e.kind, stamp) {
                (Kind::File { hash, .. }, Some(stamp)) => Some((*stamp, *hash)),
                _ => None,
            }),
    );
    Ok(())
}

#[derive(Default)]
struct Found {
    /// Every entry, with a file's stamp as the walk saw it (see [`KnownHashes`]).
    entries: Vec<(String, Entry, Option<Stamp>)>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

pub(crate) fn matcher(root: &Path, patterns: &[String], key: &str) -> Result<Gitignore> {
    let mut b = GitignoreBuilder::new(root);
    for p in patterns {
        b.add_line(None, p).map_err(|e| {
            crate::error::usage(format!("config `{key}` pattern {p:?} is invalid: {e}"))
        })?;
    }
    b.build()
        .map_err(|e| crate::error::usage(format!("config `{key}` patterns are invalid: {e}")))
}

fn walk(
    root: &Path,
    excluded: &Gitignore,
    skip: &[PathBuf],
    standard_filters: bool,
    found: &Mutex<Found>,
) {
    let excluded = excluded.clone();
    let skip = skip.to_vec();
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(standard_filters)
        .hidden(false)
        .follow_links(false)
        .git_global(false)
        .require_git(true)
        .add_custom_ignore_filename(".cutoverignore")
        .filter_entry(move |e| {
            if e.file_name() == ".git" || skip.iter().any(|s| s == e.path()) {
                return false;
            }
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            !excluded
                .matched_path_or_any_parents(e.path(), is_dir)
                .is_ignore()
        });
    builder.build_parallel().run(|| {
        Box::new(|result| {
            record(root, result, found, None);
            WalkState::Continue
        })
    });
}

fn walk_included(root: &Path, included: &Gitignore, skip: &[PathBuf], found: &Mutex<Found>) {
    let skip = skip.to_vec();
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .follow_links(false)
        .filter_entry(move |e| e.file_name() != ".git" && !skip.iter().any(|s| s == e.path()));
    builder.build_parallel().run(|| {
        Box::new(|result| {
            record(root, result, found, Some(included));
            WalkState::Continue
        })
    });
}

fn record(
    root: &Path,
    result: std::result::Result<ignore::DirEntry, ignore::Error>,
    found: &Mutex<Found>,
    only: Option<&Gitignore>,
) {
    let entry = match result {
        Ok(e) => e,
        Err(err) => {
            found.lock().unwrap().errors.push(err.to_string());
            return;
        }
    };
    if entry.depth() == 0 {
        return;
    }
    let path = entry.path();
    let Some(ft) = entry.file_type() else { return };
    if let Some(inc) = only {
        if !inc
            .matched_path_or_any_parents(path, ft.is_dir())
            .is_ignore()
        {
            return;
        }
    }
    let rel = match relative_utf8(root, path) {
        Ok(r) => r,
        Err(e) => {
            found.lock().unwrap().errors.push(e);
            return;
        }
    };
    let mut stamp = None;
    let item = if ft.is_symlink() {
        match fs::read_link(path) {
            Ok(t) => match t.to_str() {
                Some(t) => Entry {
                    kind: Kind::Symlink {
                        target: t.to_string(),
                    },
                    mode: 0o777,
                },
                None => {
                    found.lock().unwrap().errors.push(format!(
                        "{}: symlink target {:?} is not valid UTF-8",
                        path.display(),
                        t
                    ));
                    return;
                }
            },
            Err(e) => {
                found
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("{}: cannot read symlink: {e}", path.display()));
                return;
            }
        }
    } else if ft.is_dir() {
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
        }
    } else if ft.is_file() {
        match entry.metadata() {
            Ok(md) => {
                stamp = Some(Stamp::of(&md));
                let mode = if md.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                Entry {
                    kind: Kind::File {
                        size: md.len(),
                        hash: 0,
                    },
                    mode,
                }
            }
            Err(e) => {
                found
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("{}: {e}", path.display()));
                return;
            }
        }
    } else {
        found.lock().unwrap().warnings.push(format!(
            "skipped {}: not a file, directory or symlink",
            path.display()
        ));
        return;
    };
    found.lock().unwrap().entries.push((rel, item, stamp));
}

fn relative_utf8(root: &Path, path: &Path) -> std::result::Result<String, String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    match rel.to_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(format!(
            "{:?}: the name is not valid UTF-8; rename it or add it to `exclude`",
            PathBuf::from(rel).into_os_string()
        )),
    }
}

/// Included paths can sit under directories the first walk skipped; give them their parents.
fn add_missing_parents(entries: &mut BTreeMap<String, Entry>) {
    let missing: Vec<String> = entries
        .keys()
        .flat_map(|p| {
            let mut parents = Vec::new();
            let mut cur = p.as_str();
            while let Some((parent, _)) = cur.rsplit_once('/') {
                parents.push(parent.to_string());
                cur = parent;
            }
            parents
        })
        .filter(|p| !entries.contains_key(p))
        .collect();
    for p in missing {
        entries.insert(
            p,
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
    }
}

/// xxh3-128 of a file's content.
pub fn hash_file(path: &Path) -> std::io::Result<u128> {
    thread_local! {
        // One read buffer per hashing thread: allocating (and zeroing) one per file costs
        // more than hashing a small file.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    let mut f = fs::File::open(path)?;
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut hasher = Xxh3::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.digest128())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join(".git/objects")).unwrap();
        fs::write(p.join(".git/HEAD"), "ref").unwrap();
        fs::write(p.join(".gitignore"), "build/\n*.log\n").unwrap();
        fs::write(p.join(".htaccess"), "deny").unwrap();
        fs::create_dir_all(p.join(".well-known")).unwrap();
        fs::write(p.join(".well-known/security.txt"), "x").unwrap();
        fs::create_dir_all(p.join("build")).unwrap();
        fs::write(p.join("build/app.js"), "js").unwrap();
        fs::write(p.join("debug.log"), "log").unwrap();
        fs::write(p.join("index.html"), "hi").unwrap();
        fs::write(p.join("run.sh"), "#!/bin/sh").unwrap();
        fs::set_permissions(p.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("index.html", p.join("home.html")).unwrap();
        fs::create_dir_all(p.join("node_modules/x")).unwrap();
        fs::write(p.join("node_modules/x/i.js"), "x").unwrap();
        fs::write(p.join(".cutoverignore"), "secret.txt\n").unwrap();
        fs::write(p.join("secret.txt"), "s").unwrap();
        fs::create_dir_all(p.join("empty")).unwrap();
        d
    }

    fn paths(s: &Scan) -> Vec<&str> {
        s.manifest.entries.keys().map(String::as_str).collect()
    }

    #[test]
    fn hidden_files_are_deployed_but_git_and_ignored_paths_are_not() {
        let d = tree();
        let s = scan(d.path(), &["node_modules/".into()], &[]).unwrap();
        assert_eq!(
            paths(&s),
            [
                ".cutoverignore",
                ".gitignore",
                ".htaccess",
                ".well-known",
                ".well-known/security.txt",
                "empty",
                "home.html",
                "index.html",
                "run.sh"
            ]
        );
    }

    #[test]
    fn gitignore_only_applies_inside_a_git_repository() {
        let d = tree();
        fs::remove_dir_all(d.path().join(".git")).unwrap();
        let s = scan(d.path(), &[], &[]).unwrap();
        assert!(paths(&s).contains(&"build/app.js"));
        assert!(paths(&s).contains(&"debug.log"));
    }

    #[test]
    fn include_forces_ignored_paths_back_in() {
        let d = tree();
        let s = scan(d.path(), &["node_modules/".into()], &["build/".into()]).unwrap();
        assert!(paths(&s).contains(&"build"));
        assert!(paths(&s).contains(&"build/app.js"));
        assert!(!paths(&s).contains(&"debug.log"));
    }

    #[test]
    fn symlinks_are_recorded_not_followed_and_exec_bit_is_kept() {
        let d = tree();
        let s = scan(d.path(), &[], &[]).unwrap();
        let e = &s.manifest.entries;
        assert_eq!(
            e["home.html"].kind,
            Kind::Symlink {
                target: "index.html".into()
            }
        );
        assert_eq!(e["run.sh"].mode, 0o755);
        assert_eq!(e["index.html"].mode, 0o644);
        assert_eq!(
            e["index.html"].kind,
            Kind::File {
                size: 2,
                hash: xxhash_rust::xxh3::xxh3_128(b"hi")
            }
        );
    }

    #[test]
    fn non_utf8_name_is_an_error_naming_it() {
        use std::os::unix::ffi::OsStrExt;
        let d = tree();
        fs::write(
            d.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
            "x",
        )
        .unwrap();
        let e = format!("{:#}", scan(d.path(), &[], &[]).err().unwrap());
        assert!(e.contains("bad\\xFFname") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        // A FIFO opens but a directory cannot be read as a file, even by root: swap a file for a
        // directory between the walk and the hash to reach the error path deterministically.
        let d = tree();
        let e = hash_file(&d.path().join("empty")).expect_err("reading a directory fails");
        assert_eq!(e.raw_os_error(), Some(21), "EISDIR");
        let f = d.path().join("gone.txt");
        let e = format!(
            "{:#}",
            scan_with_hook(
                d.path(),
                || {
                    fs::write(&f, "x").unwrap();
                },
                || {
                    fs::remove_file(&f).unwrap();
                    fs::create_dir(&f).unwrap();
                }
            )
            .err()
            .unwrap()
        );
        assert!(e.contains("gone.txt"), "{e}");
    }

    fn scan_with_hook(root: &Path, before: impl FnOnce(), between: impl FnOnce()) -> Result<Scan> {
        before();
        let excluded = matcher(root, &[], "exclude")?;
        let found = Mutex::new(Found::default());
        walk(root, &excluded, &[], true, &found);
        between();
        let found = found.into_inner().unwrap();
        let mut entries = found.entries;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        hash_entries(root, &mut entries, &KnownHashes::none())?;
        let entries: BTreeMap<String, Entry> =
            entries.into_iter().map(|(p, e, _)| (p, e)).collect();
        Ok(Scan {
            manifest: Manifest {
                entries,
                meta: Default::default(),
            },
            warnings: vec![],
        })
    }
}
