//! Leftovers of interrupted deploys and failed prunes, removed as the deploy script removes
//! them (so either mode cleans up after the other).

use std::sync::atomic::Ordering;

use crate::layout::{self, ReleaseId};
use crate::remote::sftp::kind_of;
use crate::remote::PathKind;
use crate::survey::Survey;

use super::SftpRun;

impl SftpRun {
    /// Remove what interrupted deploys and failed prunes left (as the deploy script does): only
    /// this deploy holds the lock, so they are no one's. A staging directory of a release that
    /// was never finished takes that release with it. Never fails: what cannot be removed is a
    /// warning, and exit 3 once the release is live. Returns the releases removed.
    pub(super) async fn tidy(&self, survey: &Survey, id: &ReleaseId) -> Vec<ReleaseId> {
        let l = &self.layout;
        let list = |path: String| async move {
            let (ch, permit) = self.channels.with_handles(0).await;
            drop(permit);
            ch.read_dir(&path).await.ok().flatten().unwrap_or_default()
        };
        let (root, state, manifests, trash, releases) = tokio::join!(
            list(l.root().to_string()),
            list(l.state()),
            list(l.manifests()),
            list(l.trash()),
            list(l.releases()),
        );
        let is_dir = |name: &str| {
            releases
                .iter()
                .any(|(n, a)| n == name && kind_of(a) == PathKind::Dir)
        };
        let previous = survey.live_id();
        let live_now = survey.current.release();
        let mut doomed: Vec<String> = Vec::new();
        let mut unfinished = Vec::new();
        for e in &survey.staging {
            if e.name == id.as_str() {
                continue;
            }
            if let Some(name) = ReleaseId::parse(&e.name) {
                let has_manifest = survey.releases.contains(&name);
                let newer = previous.is_none_or(|p| name > *p);
                if is_dir(name.as_str())
                    && Some(&name) != previous
                    && (!has_manifest || (live_now != Some(&name) && newer))
                {
                    unfinished.push(name);
                }
            }
            doomed.push(format!("{}/{}", layout::STAGING, e.name));
        }
        let ours_probe = format!("probe.sftp-{}", self.suffix);
        let ours_link = format!(".current.sftp-{}.tmp", self.suffix);
        let day_ago = layout::now().timestamp() - 86_400;
        // This deploy's own temporaries are being made while this runs: never theirs.
        let ours_partial = format!("{id}.partial");
        doomed.extend(
            releases
                .iter()
                .filter(|(n, _)| n.ends_with(".partial") && *n != ours_partial)
                .map(|(n, _)| format!("{}/{n}", layout::RELEASES)),
        );
        doomed.extend(trash.iter().map(|(n, _)| format!("{}/{n}", layout::TRASH)));
        doomed.extend(
            state
                .iter()
                .filter(|(n, a)| {
                    (n.starts_with("probe.") && *n != ours_probe)
                        || n.starts_with("swap-probe.")
                        || (n.starts_with("lock.new-")
                            && a.mtime.is_some_and(|m| i64::from(m) < day_ago))
                })
                .map(|(n, _)| format!("{}/{n}", layout::STATE)),
        );
        doomed.extend(
            root.iter()
                .filter(|(n, _)| {
                    n.starts_with(".current.") && n.ends_with(".tmp") && *n != ours_link
                })
                .map(|(n, _)| n.clone()),
        );
        doomed.extend(
            manifests
                .iter()
                .filter(|(n, _)| !is_dir(n) || n == id.as_str())
                .map(|(n, _)| format!("{}/{n}", layout::MANIFESTS)),
        );
        let releases_gone = unfinished.iter().map(|name| async move {
            let (release, manifest) = (l.release(name), l.manifest(name));
            let gone = tokio::try_join!(
                self.channels.remove_tree(&release),
                self.channels.remove_tree(&manifest),
            );
            match gone {
                Ok(_) => {
                    self.out.info(format_args!(
                        "removed the unfinished release {name} of an interrupted deploy"
                    ));
                    Some(name.clone())
                }
                Err(e) => {
                    self.left(format!(
                        "could not remove the unfinished release {}: {e:#}",
                        l.release(name)
                    ));
                    None
                }
            }
        });
        let leftovers = doomed.iter().map(|rel| async move {
            match self.channels.remove_tree(&l.at(rel)).await {
                Ok(()) => self.out.info(format_args!("removed leftover {rel}")),
                Err(e) => self.left(format!(
                    "could not remove leftover {}: remove it by hand ({e:#})",
                    l.at(rel)
                )),
            }
        });
        let (gone, _) = tokio::join!(
            futures::future::join_all(releases_gone),
            futures::future::join_all(leftovers)
        );
        gone.into_iter().flatten().collect()
    }

    /// Something stays behind that should not: a warning, and exit 3 once live.
    pub(super) fn left(&self, msg: String) {
        self.notes.left_behind.store(true, Ordering::Relaxed);
        self.notes.warn(&self.out, msg);
    }
}
