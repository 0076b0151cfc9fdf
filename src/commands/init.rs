//! `cutover init`: write a commented starter `cutover.toml`, never over an existing file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::usage;

pub fn run(file: &Path) -> Result<()> {
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(usage(format!(
                "{} already exists; cutover init never overwrites a config",
                file.display()
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", file.display())),
    };
    f.write_all(crate::config::STARTER.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("wrote {}: set host and path under [targets.production], then run `cutover deploy --dry-run`", file.display());
    Ok(())
}
