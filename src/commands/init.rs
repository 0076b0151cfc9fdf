//! `cutover init`: write a commented starter `cutover.toml`, never over an existing file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::usage;

pub fn run(file: &Path, preset: &str) -> Result<()> {
    let text = match preset {
        "static" => crate::config::STARTER,
        other => {
            return Err(usage(format!(
                "unknown preset {other:?}: known presets are static"
            )))
        }
    };
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
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("wrote {}: set host and path under [targets.production], then run `cutover deploy --dry-run`", file.display());
    Ok(())
}
