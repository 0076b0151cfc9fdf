//! `cutover rollback`: point `current` at an earlier finished release, with the same atomic swap
//! as a deploy, in one exec call. Nothing is deleted: the release rolled back from stays until it
//! ages out (prune never removes releases newer than the one `current` points to).

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Target;
use crate::error::usage;
use crate::layout::{Layout, ReleaseId};
use crate::remote::Session;
use crate::script;

use super::Output;

pub async fn run(target: &Target, to: Option<&str>, out: Output) -> Result<()> {
    let name = &target.name;
    let wanted = match to {
        Some(t) => Some(ReleaseId::parse(t).ok_or_else(|| usage(format!("--to {t:?}: a release name is 14 digits, e.g. 20261126120000 (see cutover releases)")))?),
        None => None,
    };
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| format!("target {name}, stage connect"))?;
    let layout = Layout::new(&target.path);
    let result = rollback(&session, &layout, target, wanted, out).await;
    session.close().await;
    result
}

async fn rollback(
    session: &Session,
    layout: &Layout,
    target: &Target,
    wanted: Option<ReleaseId>,
    out: Output,
) -> Result<()> {
    let name = &target.name;
    let state = super::deploy::read_state(session, layout, target).await?;
    let live = state
        .current
        .as_deref()
        .and_then(|c| c.rsplit('/').next())
        .and_then(ReleaseId::parse)
        .filter(|id| state.releases.contains(id))
        .ok_or_else(|| anyhow!("target {name}, stage rollback: {} does not point to a cutover release; nothing to roll back from", layout.current()))?;
    let to = match wanted {
        Some(id) if id == live => {
            out.summary(&format!("{name}: release {id} is already current"));
            return Ok(());
        }
        Some(id) if !state.releases.contains(&id) => {
            bail!("target {name}, stage rollback: there is no release {id} in {} (see cutover releases {name})", layout.releases())
        }
        Some(id) => id,
        None => state.releases.iter().filter(|r| **r < live).max().cloned().ok_or_else(|| {
            anyhow!("target {name}, stage rollback: release {live} is the oldest one kept; there is no earlier release to roll back to")
        })?,
    };
    let text = script::rollback_script(target, &live, &to);
    let exit = session
        .run_script(&text, out.quiet)
        .await
        .with_context(|| format!("target {name}, stage rollback"))?;
    match exit.code {
        Some(0) => {
            out.summary(&format!("{name}: rolled back: current -> releases/{to} (was {live})"));
            Ok(())
        }
        Some(code) => bail!("target {name}, stage rollback: the rollback script failed (exit {code}); current is untouched"),
        None => bail!("target {name}, stage rollback: the connection ended before the rollback script reported back; run `cutover releases {name}`"),
    }
}
