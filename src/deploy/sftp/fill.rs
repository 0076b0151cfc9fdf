//! Filling a release with files: from the previous release on the server (hard links, then
//! copy-data), from the source (uploads, hashed on the way), or, for a runtime file the server
//! cannot copy, downloaded and uploaded again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::AsyncReadExt;
use xxhash_rust::xxh3::Xxh3;

use super::build::Carry;
use super::{named, Build, SftpRun, Stats, WRITES_PER_FILE};
use crate::layout::ReleaseId;
use crate::output::{bytes, count};
use crate::remote::sftp::{
    join, mode_attrs, status_of, Node, Sent, SymlinkOrder, COPY_DATA, HARDLINK,
};
use crate::source::Kind;

impl SftpRun {
    /// The unchanged files: hard-linked from the previous release, else copied there with
    /// copy-data, else uploaded again from the source (which has the same content).
    pub(super) async fn copy_unchanged(
        &self,
        b: &Build<'_>,
        partial: &str,
        carry: &Carry,
        stats: &Stats,
    ) -> Result<()> {
        let mut again: Vec<&String> = carry.reupload.iter().collect();
        if !carry.drifted.is_empty() {
            self.notes.warn(
                &self.out,
                format!(
                    "{} in releases/{} differ from their manifest (edited on the server?): uploaded again from the source: {}",
                    count(carry.drifted.len(), "unchanged file"),
                    carry.previous.as_ref().map(ReleaseId::as_str).unwrap_or("?"),
                    named(&carry.drifted)
                ),
            );
        }
        if let Some(prev) = &carry.previous {
            let root = self.layout.release(prev);
            let replicas: Vec<Replica> = carry
                .linkable
                .iter()
                .map(|(p, n)| Replica::between(&root, partial, p, n))
                .collect();
            let total = replicas.len();
            let left = self.replicate(replicas, stats).await?;
            if !left.is_empty() {
                let size: u64 = left.iter().map(|r| r.node.size).sum();
                self.notes.warn(
                    &self.out,
                    format!(
                        "{} of {total} unchanged files ({}) are uploaded again from the source: {}",
                        left.len(),
                        bytes(size),
                        self.why_not_on_the_server()
                    ),
                );
            }
            let left: HashSet<String> = left.into_iter().map(|r| r.rel).collect();
            again.extend(
                carry
                    .linkable
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| left.contains(*p)),
            );
        }
        self.upload(b, partial, again, stats).await
    }

    /// Why files could not be copied on the server, for a warning.
    pub(super) fn why_not_on_the_server(&self) -> String {
        match (
            self.channels.first().offered(HARDLINK),
            self.channels.first().offered(COPY_DATA),
        ) {
            (false, false) => format!("the server offers neither {HARDLINK} nor {COPY_DATA}"),
            (false, true) => {
                format!("the server does not offer {HARDLINK}, and {COPY_DATA} failed")
            }
            (true, false) => {
                format!("{HARDLINK} was refused, and the server does not offer {COPY_DATA}")
            }
            (true, true) => format!("both {HARDLINK} and {COPY_DATA} were refused"),
        }
    }

    /// Files the application wrote into the previous release at runtime (their directories
    /// are made already): links copied as links, files carried over like unchanged ones (hard link, copy-data),
    /// or, when the server can do neither, downloaded and uploaded again (with a warning
    /// naming them).
    pub(super) async fn carry_runtime(
        &self,
        partial: &str,
        carry: &Carry,
        order: SymlinkOrder,
        stats: &Stats,
    ) -> Result<()> {
        if !carry.unreadable.is_empty() {
            self.notes.warn(
                &self.out,
                format!(
                    "not carried over from releases/{} (not a file, directory or link, or a name that is not UTF-8): {}",
                    carry.previous.as_ref().map(ReleaseId::as_str).unwrap_or("?"),
                    named(&carry.unreadable)
                ),
            );
        }
        let Some(prev) = &carry.previous else {
            return Ok(());
        };
        let root = self.layout.release(prev);
        let links = carry.links.iter().map(|(p, t)| {
            self.channels
                .next()
                .send_symlink(t, &join(partial, p), order)
        });
        stream::iter(links)
            .buffer_unordered(self.channels.request_bound())
            .try_collect::<Vec<()>>()
            .await?;
        let replicas = carry
            .files
            .iter()
            .map(|(p, n)| Replica::between(&root, partial, p, n))
            .collect();
        let left = self.replicate(replicas, stats).await?;
        if left.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = left.iter().map(|r| r.rel.clone()).collect();
        self.notes.warn(
            &self.out,
            format!(
                "{} the application wrote into releases/{prev} at runtime {} carried over by downloading and uploading \
                 {} again ({}): {}",
                count(left.len(), "file"),
                if left.len() == 1 { "is" } else { "are" },
                if left.len() == 1 { "it" } else { "them" },
                self.why_not_on_the_server(),
                named(&names)
            ),
        );
        stream::iter(left.into_iter().map(|r| self.relay(r, stats)))
            .buffer_unordered(self.channels.handle_bound() / 2)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// The directories the application made in the previous release at runtime, parents
    /// first, with their modes: one flight on one channel.
    pub(super) async fn make_runtime_dirs(&self, partial: &str, carry: &Carry) -> Result<()> {
        let ch = self.channels.first();
        let dirs = carry.dirs.iter().flat_map(|(p, n)| {
            let at = join(partial, p);
            [
                ch.send_mkdir(&at, n.mode),
                ch.send_setstat(&at, mode_attrs(n.mode)),
            ]
        });
        self.channels.in_order(dirs).await.into_iter().collect()
    }

    /// Copy files on the server: hard links where the server offers them (a refused one falls
    /// back for that file; an unknown extension for all), then copy-data. Returns what neither
    /// could copy.
    pub(super) async fn replicate(
        &self,
        replicas: Vec<Replica>,
        stats: &Stats,
    ) -> Result<Vec<Replica>> {
        let mut left = replicas;
        if self.hardlink.load(Ordering::Relaxed) && !left.is_empty() {
            let tried = stream::iter(left.into_iter().map(|r| {
                let sent = self.channels.next().send_hardlink(&r.from, &r.to);
                async move { (sent.await, r) }
            }))
            .buffer_unordered(self.channels.request_bound())
            .collect::<Vec<_>>()
            .await;
            left = Vec::new();
            let mut refusal = None;
            for (result, r) in tried {
                match result {
                    Ok(()) => {
                        stats.linked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => match status_of(&e) {
                        Some(code) => {
                            if code == StatusCode::OpUnsupported {
                                self.hardlink.store(false, Ordering::Relaxed);
                            }
                            refusal.get_or_insert(format!("{e:#}"));
                            left.push(r);
                        }
                        None => return Err(e),
                    },
                }
            }
            if let Some(why) = refusal {
                self.out.verbose(format_args!(
                    "{} not hard-linked ({why}): copied instead",
                    count(left.len(), "file")
                ));
            }
        }
        if self.copy_data.load(Ordering::Relaxed) && !left.is_empty() {
            let tried = stream::iter(left.into_iter().map(|r| async move {
                let copied = self.copy_on_server(&r).await;
                (copied, r)
            }))
            .buffer_unordered(self.channels.handle_bound() / 2)
            .collect::<Vec<_>>()
            .await;
            left = Vec::new();
            for (result, r) in tried {
                match result {
                    Ok(true) => {
                        stats.copied.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => left.push(r),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(left)
    }

    /// copy-data of one file into a new file: OPEN both in one flight, then COPY, FSETSTAT
    /// (mode and times, which copy-data leaves) and both CLOSEs in the next. False when the
    /// server refused (the new file is removed again).
    pub(super) async fn copy_on_server(&self, r: &Replica) -> Result<bool> {
        let (ch, permit) = self.channels.with_handles(2).await;
        let src = ch.send_open(&r.from, OpenFlags::READ, FileAttributes::empty());
        let dst = ch.send_open(
            &r.to,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(r.node.mode),
        );
        let (src, dst) = tokio::join!(src, dst);
        let (src, dst) = match (src, dst) {
            (Ok(s), Ok(d)) => (s, d),
            (src, dst) => {
                let closes: Vec<Sent<()>> = [src.as_ref().ok(), dst.as_ref().ok()]
                    .into_iter()
                    .flatten()
                    .map(|h| ch.send_close(h))
                    .collect();
                drop(permit);
                futures::future::join_all(closes).await;
                if dst.is_ok() {
                    let _ = ch.send_remove(&r.to).await;
                }
                let e = dst.err().or(src.err()).expect("one failed");
                return match status_of(&e) {
                    Some(_) => Ok(false),
                    None => Err(e),
                };
            }
        };
        let copied = ch.send_copy_data(&src, &dst, &r.to);
        let set = ch.send_fsetstat(&dst, &r.to, r.node.copy_attrs());
        let closed = futures::future::join(ch.send_close(&src), ch.send_close(&dst));
        drop(permit);
        let (copied, set, (c1, c2)) = tokio::join!(copied, set, closed);
        match copied {
            Ok(()) => {
                set?;
                c1?;
                c2?;
                Ok(true)
            }
            Err(e) => match status_of(&e) {
                Some(code) => {
                    if code == StatusCode::OpUnsupported {
                        self.copy_data.store(false, Ordering::Relaxed);
                    }
                    ch.send_remove(&r.to).await?;
                    Ok(false)
                }
                None => Err(e),
            },
        }
    }

    /// Download a file of the previous release and upload it into the new one (the server
    /// copies nothing itself): reads and writes pipelined, mode and times kept.
    pub(super) async fn relay(&self, r: Replica, stats: &Stats) -> Result<()> {
        let (ch, permit) = self.channels.with_handles(2).await;
        let src = ch.send_open(&r.from, OpenFlags::READ, FileAttributes::empty());
        let dst = ch.send_open(
            &r.to,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(r.node.mode),
        );
        let (src, dst) = tokio::join!(src, dst);
        let (src, dst) = (src?, dst?);
        let len = ch.write_len().await as u64;
        let mut offset = 0u64;
        let mut writes = Vec::new();
        let mut done = false;
        // Reads go out several at once, each for the next whole chunk; a short answer ends a
        // batch (the next one asks again from there), an empty one the file. The file may be
        // written to right now: what is there is what is copied.
        while !done {
            let reads: Vec<Sent<Vec<u8>>> = (0..WRITES_PER_FILE as u64)
                .map(|i| ch.send_read(&src, &r.from, offset + i * len, len as u32))
                .collect();
            let mut whole = true;
            for data in futures::future::join_all(reads).await {
                let data = data?;
                if done || !whole {
                    continue;
                }
                if data.is_empty() {
                    done = true;
                    continue;
                }
                let n = data.len() as u64;
                writes.push(ch.send_write(&dst, &r.to, offset, data));
                offset += n;
                whole = n == len;
            }
        }
        let set = ch.send_fsetstat(&dst, &r.to, r.node.copy_attrs());
        let closed = futures::future::join(ch.send_close(&src), ch.send_close(&dst));
        drop(permit);
        for w in futures::future::join_all(writes).await {
            w?;
        }
        let (set, (c1, c2)) = tokio::join!(set, closed);
        set?;
        c1?;
        c2?;
        stats.bytes.fetch_add(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Upload files of the new manifest from the source into the release.
    pub(super) async fn upload(
        &self,
        b: &Build<'_>,
        partial: &str,
        paths: Vec<&String>,
        stats: &Stats,
    ) -> Result<()> {
        stream::iter(
            paths
                .into_iter()
                .map(|p| self.upload_file(b, partial, p, stats)),
        )
        .buffer_unordered(self.channels.handle_bound())
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
    }

    /// One file from the source into a new file: the OPEN travels while the file is read,
    /// then every WRITE, the FSETSTAT (mode and the source's mtime, as tar would) and the
    /// CLOSE in one flight. The bytes are hashed on the way: a file that changed since the
    /// scan fails the deploy instead of shipping content its manifest does not describe.
    pub(super) async fn upload_file(
        &self,
        b: &Build<'_>,
        partial: &str,
        path: &str,
        stats: &Stats,
    ) -> Result<()> {
        let entry = &b.new.entries[path];
        let Kind::File { size, hash } = entry.kind else {
            unreachable!("only files are uploaded")
        };
        let local: PathBuf = b.target.source.join(path);
        let remote = format!("{partial}/{path}");
        let (ch, permit) = self.channels.with_handles(1).await;
        let opened = ch.send_open(
            &remote,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(entry.mode),
        );
        let read = async {
            let file = tokio::fs::File::open(&local).await?;
            let mtime = file.metadata().await?.modified()?;
            Ok::<_, std::io::Error>((file, mtime))
        };
        let (handle, read) = tokio::join!(opened, read);
        let (mut file, mtime) = read.with_context(|| format!("cannot read {}", local.display()))?;
        let handle = handle?;
        let len = ch.write_len().await;
        let mut hasher = Xxh3::new();
        let mut sent = 0u64;
        let mut writes = FuturesUnordered::new();
        let mut failure = None;
        loop {
            // As much as is left (the manifest knows), and a byte more once it is all read: a
            // file that grew since the scan shows.
            let want = (size.saturating_sub(sent) as usize).clamp(1, len);
            let mut buf = vec![0u8; want];
            let n = match read_full(&mut file, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    failure = Some(
                        anyhow::Error::new(e).context(format!("cannot read {}", local.display())),
                    );
                    break;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hasher.update(&buf);
            let budget = self
                .budget
                .clone()
                .acquire_many_owned((n as u32).div_ceil(1024))
                .await
                .expect("never closed");
            let write = ch.send_write(&handle, &remote, sent, buf);
            writes.push(async move {
                let r = write.await;
                drop(budget);
                r.map(|()| n as u64)
            });
            sent += n as u64;
            while writes.len() >= WRITES_PER_FILE {
                match writes.next().await {
                    Some(Ok(n)) => b.progress.advance(n),
                    Some(Err(e)) => {
                        failure.get_or_insert(e);
                    }
                    None => {}
                }
            }
            if sent > size || failure.is_some() {
                break;
            }
        }
        let secs = mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let attrs = FileAttributes {
            atime: Some(secs),
            mtime: Some(secs),
            ..mode_attrs(entry.mode)
        };
        let set = ch.send_fsetstat(&handle, &remote, attrs);
        let closed = ch.send_close(&handle);
        drop(permit);
        while let Some(w) = writes.next().await {
            match w {
                Ok(n) => b.progress.advance(n),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let (set, closed) = tokio::join!(set, closed);
        if let Some(e) = failure {
            return Err(e);
        }
        set?;
        closed?;
        if sent != size || hasher.digest128() != hash {
            bail!(
                "{} changed while it was being deployed; run the deploy again",
                local.display()
            );
        }
        stats.uploaded.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }
}

/// One file to copy on the server.
pub(super) struct Replica {
    /// Path in the release.
    rel: String,
    from: String,
    to: String,
    node: Node,
}

impl Replica {
    /// `rel` of the release at `root` to the same place in the one at `partial`.
    fn between(root: &str, partial: &str, rel: &str, node: &Node) -> Replica {
        Replica {
            rel: rel.to_string(),
            from: join(root, rel),
            to: join(partial, rel),
            node: node.clone(),
        }
    }
}

/// Read until `buf` is full or the file ends; the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
