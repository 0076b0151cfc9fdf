//! The local side of a deploy: walk the source tree and describe the release it becomes as a
//! [`Manifest`].
//!
//! `walk` decides which paths are deployed (ignore rules, symlinks, modes) and hashes the files;
//! `manifest` is the text format stored on the server for every release, and the validation that
//! makes a manifest read back from a server safe to act on; `record` is what a release says about
//! itself (who, when, which commit).
//!
//! [`scan_release`] puts them together: the walk, then the declared shared paths
//! (`shared_dirs`, `shared_files`), which are never taken from the source and become links to
//! `shared/PATH` in the manifest, exactly as the release will hold them.

pub mod known;
pub mod manifest;
pub mod record;
pub mod walk;

use anyhow::{bail, Result};

pub use manifest::{Entry, Kind, Manifest};

use crate::config::{SharedPaths, Target};

/// What a scan found, ready to be planned against the live release.
pub struct Scan {
    pub manifest: Manifest,
    /// Things skipped (sockets, FIFOs, …) or worth saying.
    pub warnings: Vec<String>,
}

/// Scan `target`'s source into the manifest of the release it becomes. A source with nothing
/// to deploy is refused: it would replace the live site with an empty one.
pub fn scan_release(target: &Target) -> Result<Scan> {
    // Declared shared paths are never deployed, nor is the config file when it is in the source.
    let mut skipped: Vec<String> = target.shared.all().cloned().collect();
    skipped.extend(target.config_in_source.iter().cloned());
    // The hashes of the last scan of this source spare reading what did not change.
    let known = known::KnownHashes::load(&target.source);
    let scan = walk::scan_knowing(
        &target.source,
        &target.exclude,
        &target.include,
        &skipped,
        known,
    )?;
    let mut manifest = scan.manifest;
    refuse_shared_through_links(&manifest, &target.shared)?;
    link_shared(&mut manifest, &target.shared);
    let deployable = manifest
        .entries
        .iter()
        .filter(|(path, e)| match &e.kind {
            Kind::File { .. } => true,
            Kind::Symlink { target } => !crate::plan::looks_like_shared_link(path, target),
            Kind::Dir => false,
        })
        .count();
    if deployable == 0 {
        bail!(
            "the source {} has no file to deploy (every file is excluded, ignored, or a declared shared path): \
             a deploy would replace the live site with an empty one. Check `source`, `exclude` and the \
             .gitignore / .cutoverignore files",
            target.source.display()
        );
    }
    Ok(Scan {
        manifest,
        warnings: scan.warnings,
    })
}

/// A declared shared path must not lie below a symbolic link of the source. The release holds
/// real directories above a shared path (its link to shared/ is made inside them), so the
/// source's `public -> web` would become a directory `public` holding nothing but the link to
/// shared/public/uploads, and everything served through `public/` would be gone. Refused
/// (exit 2), with the path to declare instead when the link leads inside the source.
fn refuse_shared_through_links(manifest: &Manifest, shared: &SharedPaths) -> Result<()> {
    for path in shared.all() {
        let key = if shared.dirs.contains(path) {
            "shared_dirs"
        } else {
            "shared_files"
        };
        let mut above = String::new();
        for component in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !above.is_empty() {
                above.push('/');
            }
            above.push_str(component);
            let Some(Entry {
                kind: Kind::Symlink { target },
                ..
            }) = manifest.entries.get(&above)
            else {
                continue;
            };
            let rest = &path[above.len() + 1..];
            let instead = match link_destination(&above, target) {
                Some(real) => format!("declare \"{real}/{rest}\" (where the link leads) instead"),
                None => format!("make {above} a directory in the source, or declare a path with no link above it"),
            };
            return Err(crate::error::usage(format!(
                "{key} entry \"{path}\" lies below {above}, a symbolic link in the source ({above} -> {target}): \
                 the release would get a directory {above} holding only the shared link, without what the link leads to; \
                 {instead}"
            )));
        }
    }
    Ok(())
}

/// Where the relative link at `link` (a path in the source) leads, as a path in the source;
/// None for an absolute target or one that leaves the source.
fn link_destination(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Put the declared shared paths into `manifest` as what the release holds there: a relative
/// link to `shared/PATH` (with the directories above it), whatever the source had.
pub fn link_shared(manifest: &mut Manifest, shared: &SharedPaths) {
    for path in shared.all() {
        manifest
            .entries
            .retain(|p, _| p != path && !p.starts_with(&format!("{path}/")));
        let mut parent = String::new();
        for component in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            let dir = manifest.entries.entry(parent.clone()).or_insert(Entry {
                kind: Kind::Dir,
                mode: 0o755,
            });
            if !dir.is_dir() {
                // The source has a file where the shared path needs a directory: the shared
                // path wins (it was declared on purpose).
                *dir = Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                };
                let prefix = format!("{parent}/");
                manifest
                    .entries
                    .retain(|p, _| !p.starts_with(&prefix) || p == path);
            }
        }
        manifest.entries.insert(
            path.clone(),
            Entry {
                kind: Kind::Symlink {
                    target: shared_link_target(path),
                },
                mode: 0o777,
            },
        );
    }
}

/// The relative target of the link at `path` (in a release) to `shared/path`:
/// `releases/ID/a/b` → `../../../shared/a/b`.
pub fn shared_link_target(path: &str) -> String {
    format!(
        "{}shared/{path}",
        "../".repeat(2 + path.matches('/').count())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_path_below_a_link_of_the_source_is_refused_with_the_path_to_declare() {
        let mut m = Manifest::default();
        m.entries.insert(
            "public".into(),
            Entry {
                kind: Kind::Symlink {
                    target: "web".into(),
                },
                mode: 0o777,
            },
        );
        m.entries.insert(
            "web".into(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
        let shared = SharedPaths {
            dirs: vec!["public/uploads".into()],
            files: vec![],
        };
        let e = refuse_shared_through_links(&m, &shared).unwrap_err();
        assert!(e.is::<crate::error::UsageError>(), "{e:#}");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("public -> web") && msg.contains("\"web/uploads\""),
            "{msg}"
        );
        // through a real directory: fine
        let shared = SharedPaths {
            dirs: vec!["web/uploads".into()],
            files: vec![],
        };
        refuse_shared_through_links(&m, &shared).unwrap();
        assert_eq!(link_destination("a/b/link", "../c"), Some("a/c".into()));
        assert_eq!(link_destination("link", "/srv/x"), None);
        assert_eq!(link_destination("link", "../out"), None);
    }

    fn file() -> Entry {
        Entry {
            kind: Kind::File { size: 1, hash: 1 },
            mode: 0o644,
        }
    }

    #[test]
    fn declared_paths_become_links_and_replace_the_source() {
        let mut m = Manifest::default();
        m.entries.insert(
            "storage".into(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
        m.entries.insert(
            "storage/logs".into(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
        m.entries.insert("storage/logs/x.log".into(), file());
        m.entries.insert(".env".into(), file());
        m.entries.insert("index.php".into(), file());
        link_shared(
            &mut m,
            &SharedPaths {
                dirs: vec!["storage".into(), "public/uploads".into()],
                files: vec![".env".into()],
            },
        );
        let paths: Vec<&str> = m.entries.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [".env", "index.php", "public", "public/uploads", "storage"]
        );
        assert_eq!(
            m.entries["public/uploads"].kind,
            Kind::Symlink {
                target: "../../../shared/public/uploads".into()
            }
        );
        assert_eq!(
            m.entries[".env"].kind,
            Kind::Symlink {
                target: "../../shared/.env".into()
            }
        );
        assert!(m.entries["public"].is_dir());
        assert!(crate::plan::looks_like_shared_link(
            "public/uploads",
            "../../../shared/public/uploads"
        ));
    }
}
