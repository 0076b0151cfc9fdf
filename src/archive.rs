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

/// What the hosts of one run share when they upload side by side: the bound on the bytes in
/// flight (equally: see [`in_flight_per_part`]) and their archives, packed once.
pub struct FleetUpload {
    pub hosts: usize,
    pub packs: Packs,
}

impl FleetUpload {
    pub fn new(hosts: usize) -> FleetUpload {
        FleetUpload {
            hosts,
            packs: Packs::default(),
        }
    }
}

/// Bytes each of `parts` parts of one of `hosts` hosts may have in flight: its equal share
/// of [`IN_FLIGHT_BYTES`].
///
/// Equal shares, not turns: serving the hosts one after another from the same bound (each
/// part up to a channel's 2 MiB window) would let the first servers unpack while the last
/// still upload, but it cost the servers 45% more CPU in the 20-host benchmark (sshd's
/// buffer copies grow with what waits in a channel), and the prepare took 0.3 s longer.
pub fn in_flight_per_part(hosts: usize, parts: usize) -> usize {
    (IN_FLIGHT_BYTES / hosts.max(1) as u64 / parts.max(1) as u64) as usize
}

/// Split `paths` into at most `max_parts` parts balanced by size; directories go to the first
/// part. Always at least one part when `paths` is not empty.
pub fn split(manifest: &Manifest, paths: Vec<String>, max_parts: usize) -> Vec<Vec<String>> {
    if paths.is_empty() {
        return Vec::new();
    }
    // Each entry's size looked up once: a fleet splits every host's upload in turn, before
    // the last host's upload can start, and a lookup per comparison cost 1 ms a host.
    let sized: Vec<(u64, bool, String)> = paths
        .into_iter()
        .map(|p| {
            let e = &manifest.entries[&p];
            let size = match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            };
            (size, e.is_dir(), p)
        })
        .collect();
    let total: u64 = sized.iter().map(|(size, _, _)| size).sum();
    let n = (total.div_ceil(PART_BYTES) as usize).clamp(1, max_parts.clamp(1, MAX_PARTS));
    if n == 1 {
        let mut all: Vec<String> = sized.into_iter().map(|(_, _, p)| p).collect();
        all.sort();
        return vec![all];
    }
    let mut parts: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); n];
    let (dirs, mut files): (Vec<_>, Vec<_>) = sized.into_iter().partition(|(_, dir, _)| *dir);
    parts[0].1.extend(dirs.into_iter().map(|(_, _, p)| p));
    // Largest first, each to the lightest part.
    files.sort_by_key(|(size, _, _)| std::cmp::Reverse(*size));
    for (size, _, p) in files {
        let lightest = parts
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("n >= 1");
        lightest.0 += size;
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

/// The archives of one run, each packed once for every host that uploads the same part.
///
/// The hosts of a fleet usually run the same release, so their plans, and with them their
/// archive parts, are the same: packing opens, reads and hashes every file again for every
/// host, and on a 20-host first deploy of 400 files that was a third of this client's CPU.
/// A shared part's chunks are kept in memory until the run ends, for hosts that get there
/// later; at most [`SHARED_BYTES`] in all, beyond which parts are packed per host again.
#[derive(Default)]
pub struct Packs {
    shelf: std::sync::Mutex<Shelf>,
}

/// Bytes of archive a run keeps in memory to share between its hosts.
pub const SHARED_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Default)]
struct Shelf {
    /// By the paths of the part (the source and manifest are the run's own).
    packings: std::collections::HashMap<Vec<String>, std::sync::Arc<Packing>>,
    /// Bytes promised to the packings above (an upper bound of what they keep).
    bytes: u64,
}

/// One part being packed, or packed: its chunks so far, and how far it got.
struct Packing {
    chunks: std::sync::Mutex<Vec<std::sync::Arc<Vec<u8>>>>,
    state: tokio::sync::watch::Sender<Packed>,
}

#[derive(Clone, Debug)]
enum Packed {
    /// Chunks kept so far.
    Going(usize),
    /// Every chunk is kept.
    Done(usize),
    /// Packing failed after this many chunks, for this reason.
    Failed(usize, String),
}

impl Packs {
    /// [`pack`], or the chunks of the same part packed for another host of this run.
    pub fn pack(&self, source: PathBuf, manifest: &Manifest, paths: Vec<String>) -> Chunks {
        let Some(packing) = self.shared(&source, manifest, &paths) else {
            return pack(source, manifest, paths);
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut state = packing.state.subscribe();
            let mut sent = 0;
            loop {
                let now = state.borrow_and_update().clone();
                let (kept, end) = match &now {
                    Packed::Going(n) => (*n, None),
                    Packed::Done(n) => (*n, Some(None)),
                    Packed::Failed(n, why) => (*n, Some(Some(why.clone()))),
                };
                while sent < kept {
                    let chunk = packing.chunks.lock().unwrap()[sent].clone();
                    if tx.send(Ok(chunk.to_vec())).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                match end {
                    Some(None) => return,
                    Some(Some(why)) => {
                        let _ = tx.send(Err(anyhow::anyhow!(why))).await;
                        return;
                    }
                    None => {
                        if state.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }

    /// The shared packing of `paths`, started by this call if it is the first; None when the
    /// part would take the shelf over [`SHARED_BYTES`].
    fn shared(
        &self,
        source: &Path,
        manifest: &Manifest,
        paths: &[String],
    ) -> Option<std::sync::Arc<Packing>> {
        let mut shelf = self.shelf.lock().unwrap();
        if let Some(p) = shelf.packings.get(paths) {
            return Some(p.clone());
        }
        // Contents, plus a header and padding per entry (and the end of the archive).
        let bytes: u64 = paths
            .iter()
            .map(|p| match manifest.entries[p].kind {
                Kind::File { size, .. } => 1024 + size,
                _ => 1024,
            })
            .sum::<u64>()
            + 2 * CHUNK as u64;
        if shelf.bytes + bytes > SHARED_BYTES {
            return None;
        }
        shelf.bytes += bytes;
        let packing = std::sync::Arc::new(Packing {
            chunks: std::sync::Mutex::new(Vec::new()),
            state: tokio::sync::watch::channel(Packed::Going(0)).0,
        });
        shelf.packings.insert(paths.to_vec(), packing.clone());
        let mut chunks = pack(source.to_path_buf(), manifest, paths.to_vec());
        let filling = packing.clone();
        tokio::spawn(async move {
            let mut kept = 0;
            while let Some(chunk) = chunks.recv().await {
                match chunk {
                    Ok(c) => {
                        filling.chunks.lock().unwrap().push(std::sync::Arc::new(c));
                        kept += 1;
                        filling.state.send_replace(Packed::Going(kept));
                    }
                    Err(e) => {
                        filling
                            .state
                            .send_replace(Packed::Failed(kept, format!("{e:#}")));
                        return;
                    }
                }
            }
            filling.state.send_replace(Packed::Done(kept));
        });
        Some(packing)
    }
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
    // (a file's own time is read from its open handle, below)
    let mtime = || {
        std::fs::symlink_metadata(&local)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    match &entry.kind {
        Kind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mtime(mtime().unwrap_or_else(now_secs));
            builder.append_data(&mut header, path, io::empty())?;
        }
        Kind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            // A declared shared path has no source entry: it is made now.
            header.set_mtime(mtime().unwrap_or_else(now_secs));
            builder.append_link(&mut header, path, target)?;
        }
        Kind::File { size, hash } => {
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

    /// A source whose file `a` changed (same size) after the scan that is returned with it.
    fn a_file_changed_after_its_scan() -> (tempfile::TempDir, crate::source::walk::Scan) {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"before").unwrap();
        let scan = crate::source::walk::scan(src.path(), &[], &[]).unwrap();
        std::fs::write(src.path().join("a"), b"after!").unwrap();
        (src, scan)
    }

    async fn all_of(mut rx: Chunks) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            bytes.extend(chunk?);
        }
        Ok(bytes)
    }

    #[tokio::test]
    async fn hosts_with_the_same_part_get_one_packing_of_it() {
        let src = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(src.path().join(format!("f{i}")), vec![i as u8; 40_000]).unwrap();
        }
        let scan = crate::source::walk::scan(src.path(), &[], &[]).unwrap();
        let all: Vec<String> = scan.manifest.entries.keys().cloned().collect();
        let some: Vec<String> = all[..10].to_vec();
        let packs = Packs::default();
        let first = packs.pack(src.path().to_path_buf(), &scan.manifest, all.clone());
        let first = all_of(first).await.unwrap();
        assert_eq!(
            first,
            all_of(pack(src.path().to_path_buf(), &scan.manifest, all.clone()))
                .await
                .unwrap()
        );
        // Packed once: a file changed now is not read again for the next host (which a
        // packing of its own would refuse, the file no longer matching the scan).
        std::fs::write(src.path().join("f0"), b"changed").unwrap();
        let again = packs.pack(src.path().to_path_buf(), &scan.manifest, all.clone());
        assert_eq!(all_of(again).await.unwrap(), first);
        // Another part is packed for itself.
        let other = packs.pack(src.path().to_path_buf(), &scan.manifest, some);
        assert!(all_of(other).await.is_err());
        assert_eq!(packs.shelf.lock().unwrap().packings.len(), 2);
    }

    #[tokio::test]
    async fn hosts_sharing_a_part_that_fails_to_pack_all_get_the_failure() {
        let (src, scan) = a_file_changed_after_its_scan();
        let packs = Packs::default();
        let paths = vec!["a".to_string()];
        let one = packs.pack(src.path().to_path_buf(), &scan.manifest, paths.clone());
        let two = packs.pack(src.path().to_path_buf(), &scan.manifest, paths);
        let (one, two) = tokio::join!(all_of(one), all_of(two));
        for e in [one.unwrap_err(), two.unwrap_err()] {
            assert!(
                format!("{e:#}").contains("changed while it was being deployed"),
                "{e:#}"
            );
        }
    }

    #[tokio::test]
    async fn a_part_too_big_to_keep_is_packed_for_each_host() {
        let src = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(src.path().join("big")).unwrap();
        big.set_len(SHARED_BYTES).unwrap();
        let scan = crate::source::walk::scan(src.path(), &[], &[]).unwrap();
        let packs = Packs::default();
        let paths = vec!["big".to_string()];
        let mut rx = packs.pack(src.path().to_path_buf(), &scan.manifest, paths);
        let mut n = 0u64;
        while let Some(chunk) = rx.recv().await {
            n += chunk.unwrap().len() as u64;
        }
        assert!(n > SHARED_BYTES);
        assert!(packs.shelf.lock().unwrap().packings.is_empty());
    }

    #[tokio::test]
    async fn a_file_changed_after_the_scan_fails_the_pack() {
        let (src, scan) = a_file_changed_after_its_scan();
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
