//! Pack the files a deploy uploads into one tar stream.
//!
//! Per-file round trips are what make SFTP deploys slow: OpenSSH's `sftp put -r` waits for every
//! OPEN and CLOSE, and even a client with many requests in flight pays several round trips per
//! file. So the changed files travel as ONE archive, written in large pipelined SFTP packets, and
//! the deploy script unpacks it into the new release with `tar`. The stream is produced on a thread while
//! it uploads; memory stays bounded by the channel between them.
//!
//! Every file is hashed again as it is packed: a file that changed after the scan fails the
//! deploy instead of shipping content that does not match the manifest.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

use crate::source::{Entry, Kind, Manifest};

/// Size of the chunks handed to the uploader (one SFTP write each).
pub const CHUNK: usize = 255 * 1024;
/// Chunks buffered between the packer and the uploader.
const QUEUE: usize = 16;

/// A running packer: chunks of the archive, in order, then the end of the channel.
pub type Chunks = mpsc::Receiver<Result<Vec<u8>>>;

/// Bytes per archive part: above this, the upload is split over several SFTP channels. Each
/// channel's window (OpenSSH's sshd: 2 MiB for a session channel) limits its throughput on a
/// long link to one window per round trip.
pub const PART_BYTES: u64 = 2 * 1024 * 1024;
/// At most this many parts (channels), well under OpenSSH's default MaxSessions of 10.
pub const MAX_PARTS: usize = 4;

/// Bytes of archive in flight at once (written, not yet acknowledged) over every host of one
/// run: as much as a 1 Gbit/s uplink carries in a 130 ms round trip. The client's uplink
/// carries every host's bytes, so the hosts of a fleet share this bound, equally, instead of
/// each filling windows of its own: more in flight would only wait in buffers, and OpenSSH's
/// sshd pays for a full one (a channel's buffer grows by copying itself, so its cost rises
/// with the square of what it holds). One host alone still fills four channels' windows.
pub const IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024;

/// How many parts (channels) each of `hosts` uploading side by side may use: as many windows
/// as its share of [`IN_FLIGHT_BYTES`] fills, at least one.
pub fn max_parts(hosts: usize) -> usize {
    let share = IN_FLIGHT_BYTES / hosts.max(1) as u64;
    ((share / PART_BYTES) as usize).clamp(1, MAX_PARTS)
}

/// Bytes each of `parts` parts of one of `hosts` hosts may have in flight: its equal share
/// of [`IN_FLIGHT_BYTES`].
pub fn in_flight_per_part(hosts: usize, parts: usize) -> usize {
    (IN_FLIGHT_BYTES / hosts.max(1) as u64 / parts.max(1) as u64) as usize
}

/// Split `paths` into at most `max_parts` parts balanced by size; directories go to the first
/// part. Always at least one part when `paths` is not empty.
pub fn split(manifest: &Manifest, paths: Vec<String>, max_parts: usize) -> Vec<Vec<String>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let size = |p: &String| match manifest.entries[p].kind {
        Kind::File { size, .. } => size,
        _ => 0,
    };
    let total: u64 = paths.iter().map(size).sum();
    let n = (total.div_ceil(PART_BYTES) as usize).clamp(1, max_parts.clamp(1, MAX_PARTS));
    let mut parts: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); n];
    let (dirs, mut files): (Vec<String>, Vec<String>) = paths
        .into_iter()
        .partition(|p| manifest.entries[p].is_dir());
    parts[0].1.extend(dirs);
    // Largest first, each to the lightest part.
    files.sort_by_key(|p| std::cmp::Reverse(size(p)));
    for p in files {
        let lightest = parts
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("n >= 1");
        lightest.0 += size(&p);
        lightest.1.push(p);
    }
    parts
        .into_iter()
        .map(|(_, mut paths)| {
            paths.sort();
            paths
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Pack `paths` (entries of `manifest`, read from `source`) on a background thread.
pub fn pack(source: PathBuf, manifest: &Manifest, paths: Vec<String>) -> Chunks {
    let entries: Vec<(String, Entry)> = paths
        .into_iter()
        .map(|p| (p.clone(), manifest.entries[&p].clone()))
        .collect();
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::spawn(move || {
        let writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let mut builder = tar::Builder::new(writer);
        let result = entries
            .iter()
            .try_for_each(|(path, entry)| append(&mut builder, &source, path, entry))
            .and_then(|()| {
                let mut writer = builder.into_inner().context("cannot finish the archive")?;
                writer.flush().context("cannot finish the archive")
            });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn append(
    builder: &mut tar::Builder<ChunkWriter>,
    source: &Path,
    path: &str,
    entry: &Entry,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(0);
    header.set_gid(0);
    // Directories and links get the source's times too: tar sets what the header says, and a
    // header without a time dates them 1970.
    let local = source.join(path);
    let mtime = std::fs::symlink_metadata(&local)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    match &entry.kind {
        Kind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mtime(mtime.unwrap_or_else(now_secs));
            builder.append_data(&mut header, path, io::empty())?;
        }
        Kind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            // A declared shared path has no source entry: it is made now.
            header.set_mtime(mtime.unwrap_or_else(now_secs));
            builder.append_link(&mut header, path, target)?;
        }
        Kind::File { size, hash } => {
            let local = source.join(path);
            let file =
                File::open(&local).with_context(|| format!("cannot read {}", local.display()))?;
            let mtime = file.metadata().ok().and_then(|m| m.modified().ok());
            let secs = mtime
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            header.set_mtime(secs);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
            let mut reader = Hashing {
                inner: file.take(*size),
                hasher: Xxh3::new(),
                read: 0,
            };
            builder
                .append_data(&mut header, path, &mut reader)
                .with_context(|| format!("cannot pack {}", local.display()))?;
            if reader.read != *size || reader.hasher.digest128() != *hash {
                bail!(
                    "{} changed while it was being deployed; run the deploy again",
                    local.display()
                );
            }
        }
    }
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Passes bytes through, hashing them and counting.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Collects the tar stream into CHUNK-sized pieces for the uploader.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[tokio::test]
    async fn archive_unpacks_to_the_same_tree_with_tar() {
        let src = tempfile::tempdir().unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(src.path().join(&long)).unwrap();
        std::fs::write(src.path().join(&long).join("it's \"x\"\n$(id)"), b"content").unwrap();
        std::fs::write(src.path().join("run.sh"), b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("x".repeat(150), src.path().join("link")).unwrap();
        let scan = crate::source::walk::scan(src.path(), &[], &[]).unwrap();
        let paths: Vec<String> = scan.manifest.entries.keys().cloned().collect();
        let mut rx = pack(src.path().to_path_buf(), &scan.manifest, paths);
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            bytes.extend(chunk.unwrap());
        }
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("a.tar"), &bytes).unwrap();
        let dest = out.path().join("t");
        std::fs::create_dir(&dest).unwrap();
        let st = std::process::Command::new("tar")
            .args(["-x", "-o", "-p", "-f", "../a.tar"])
            .current_dir(&dest)
            .status()
            .unwrap();
        assert!(st.success());
        let again = crate::source::walk::scan(&dest, &[], &[]).unwrap();
        assert_eq!(again.manifest, scan.manifest);
    }

    #[test]
    fn big_uploads_are_split_into_balanced_parts_with_directories_first() {
        let mut m = Manifest::default();
        m.entries.insert(
            "d".into(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
            },
        );
        for i in 0..8 {
            m.entries.insert(
                format!("d/f{i}"),
                Entry {
                    kind: Kind::File {
                        size: 6 << 20,
                        hash: 0,
                    },
                    mode: 0o644,
                },
            );
        }
        let paths: Vec<String> = m.entries.keys().cloned().collect();
        let parts = split(&m, paths.clone(), max_parts(1));
        assert_eq!(parts.len(), MAX_PARTS);
        assert!(parts[0].contains(&"d".to_string()));
        assert!(parts
            .iter()
            .all(|p| p.iter().filter(|x| x.starts_with("d/")).count() == 2));
        let small = split(&m, vec!["d/f0".into()], MAX_PARTS);
        assert_eq!(small, vec![vec!["d/f0".to_string()]]);
        assert!(split(&m, vec![], MAX_PARTS).is_empty());
        // Twenty hosts side by side: one part each, everything in it.
        let one = split(&m, paths.clone(), max_parts(20));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), paths.len());
        // Four: two each.
        assert_eq!(split(&m, paths, max_parts(4)).len(), 2);
        // One host's parts each keep more than sshd's 2 MiB window in flight; twenty hosts
        // share the bound equally.
        assert!(in_flight_per_part(1, MAX_PARTS) as u64 > PART_BYTES);
        assert_eq!(
            in_flight_per_part(20, max_parts(20)) as u64,
            IN_FLIGHT_BYTES / 20
        );
    }

    #[tokio::test]
    async fn a_file_changed_after_the_scan_fails_the_pack() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"before").unwrap();
        let scan = crate::source::walk::scan(src.path(), &[], &[]).unwrap();
        std::fs::write(src.path().join("a"), b"after!").unwrap();
        let mut rx = pack(src.path().to_path_buf(), &scan.manifest, vec!["a".into()]);
        let mut failed = None;
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = chunk {
                failed = Some(format!("{e:#}"));
            }
        }
        assert!(failed
            .unwrap()
            .contains("changed while it was being deployed"));
    }
}
