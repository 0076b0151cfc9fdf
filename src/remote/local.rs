//! The `local` target: the deploy path is on this machine. Files are copied with the standard
//! library and the script runs under `/bin/sh`, exactly as it would over SSH.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use anyhow::{Context, Result};

use super::{DirEntry, PathKind, Progress};

#[derive(Clone, Copy)]
pub struct LocalSession;

impl LocalSession {
    pub fn read_link(&self, path: &str) -> Result<Option<String>> {
        match fs::read_link(path) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(None), // not a symlink
            Err(e) => Err(e).with_context(|| format!("cannot read the link {path}")),
        }
    }

    pub fn path_kind(&self, path: &str) -> Result<PathKind> {
        match fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_symlink() => Ok(PathKind::Symlink),
            Ok(md) if md.is_dir() => Ok(PathKind::Dir),
            Ok(md) if md.is_file() => Ok(PathKind::File),
            Ok(_) => Ok(PathKind::Other),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(PathKind::Missing),
            Err(e) if e.kind() == ErrorKind::NotADirectory => Ok(PathKind::Missing), // a parent is a file
            Err(e) => Err(e).with_context(|| format!("cannot inspect {path}")),
        }
    }

    /// Remove a tree without following a symbolic link: a link at the top is removed as a link,
    /// and `remove_dir_all` never follows the links inside.
    pub fn remove_tree(&self, path: &str) -> Result<()> {
        let removed = match self.path_kind(path)? {
            PathKind::Missing => return Ok(()),
            PathKind::Dir => fs::remove_dir_all(path),
            _ => fs::remove_file(path),
        };
        match removed {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {path}"))
            }
            _ => Ok(()),
        }
    }

    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match fs::metadata(path) {
            Ok(md) if md.len() > limit => anyhow::bail!(
                "{path} is {} bytes, more than the {limit} expected",
                md.len()
            ),
            Ok(_) => Ok(Some(
                fs::read(path).with_context(|| format!("cannot read {path}"))?,
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
        }
    }

    pub fn list_dir(&self, path: &str) -> Result<Option<Vec<DirEntry>>> {
        match fs::read_dir(path) {
            Ok(rd) => {
                let mut entries = Vec::new();
                for e in rd {
                    let e = e.with_context(|| format!("cannot list {path}"))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    // DirEntry::metadata does not follow a symbolic link: a link is a link.
                    let md = e.metadata().ok();
                    let kind = match md.as_ref().map(|m| m.file_type()) {
                        Some(t) if t.is_symlink() => PathKind::Symlink,
                        Some(t) if t.is_dir() => PathKind::Dir,
                        Some(t) if t.is_file() => PathKind::File,
                        Some(_) => PathKind::Other,
                        None => PathKind::Missing,
                    };
                    entries.push(DirEntry {
                        name,
                        kind,
                        size: md.as_ref().map_or(0, |m| m.len()),
                        mode: md.as_ref().map_or(0, |m| m.permissions().mode() & 0o7777),
                    });
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Some(entries))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot list {path}")),
        }
    }

    /// Create `path` and its missing parents. An existing symbolic link at `path` is not a
    /// directory of ours, even when it points to one.
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create directory {path}"))?;
        match self.path_kind(path)? {
            PathKind::Dir => Ok(()),
            _ => anyhow::bail!("cannot create directory {path}: a symbolic link is in the way"),
        }
    }

    pub fn try_create_dir(&self, path: &str) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create directory {path}"))
    }

    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        fs::write(path, data).with_context(|| format!("cannot write {path}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {path}"))
    }

    pub fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        // rename(2) would replace an empty directory: refuse any existing name first (a lock
        // always holds its info file, so the rename itself fails on a race).
        if fs::symlink_metadata(to).is_ok() {
            anyhow::bail!("{to} exists");
        }
        fs::rename(from, to).with_context(|| format!("cannot rename {from} to {to}"))
    }

    pub fn remove_file(&self, path: &str) -> Result<()> {
        fs::remove_file(path).with_context(|| format!("cannot remove {path}"))
    }

    pub fn remove_dir(&self, path: &str) -> Result<()> {
        fs::remove_dir(path).with_context(|| format!("cannot remove directory {path}"))
    }

    pub async fn upload_stream(
        &self,
        path: &str,
        mut chunks: crate::archive::Chunks,
        progress: &dyn Progress,
    ) -> Result<u64> {
        use std::io::Write;
        let mut file = fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
        let mut total = 0;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .with_context(|| format!("cannot write {path}"))?;
            total += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
        }
        Ok(total)
    }
}
