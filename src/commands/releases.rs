//! `cutover releases` and `cutover unlock`: look at and repair a target's state.

use anyhow::{Context, Result};

use crate::config::Target;
use crate::layout::{Layout, ReleaseId};
use crate::remote::{PathKind, Session};

use super::lock::{describe_holder, human_age};
use super::Output;

pub async fn list(target: &Target, out: Output) -> Result<()> {
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| format!("target {}, stage connect", target.name))?;
    let layout = Layout::new(&target.path);
    let state = super::deploy::read_state(&session, &layout, target).await?;
    let live = state
        .current
        .as_deref()
        .and_then(|c| c.rsplit('/').next())
        .and_then(ReleaseId::parse);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if state.releases.is_empty() {
        println!("{}: no releases yet", target.name);
    }
    for id in state.releases.iter().rev() {
        let files = match session
            .read_file(&layout.manifest(id), 256 * 1024 * 1024)
            .await
        {
            Ok(Some(m)) => {
                let n = m
                    .split(|b| *b == b'\n')
                    .skip(1)
                    .filter(|l| l.first() == Some(&b'f'))
                    .count();
                format!("{n} file{}", if n == 1 { "" } else { "s" })
            }
            _ => "no manifest".into(),
        };
        let mark = if Some(id) == live.as_ref() {
            "current"
        } else {
            ""
        };
        println!(
            "{id}  {:>9} ago  {files:>12}  {mark}",
            human_age(now - id.unix())
        );
    }
    for f in &state.foreign {
        println!("{f:?}: not a cutover release (left alone)");
    }
    session.close().await;
    Ok(())
}

pub async fn unlock(target: &Target, out: Output) -> Result<()> {
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| format!("target {}, stage connect", target.name))?;
    let layout = Layout::new(&target.path);
    if session.path_kind(&layout.lock()).await? == PathKind::Missing {
        println!("{}: not locked", target.name);
        session.close().await;
        return Ok(());
    }
    let holder = describe_holder(&session, &layout).await;
    session
        .remove_tree(&layout.lock())
        .await
        .with_context(|| format!("target {}: cannot remove {}", target.name, layout.lock()))?;
    println!(
        "{}: removed the lock {} ({holder})",
        target.name,
        layout.lock()
    );
    session.close().await;
    Ok(())
}
