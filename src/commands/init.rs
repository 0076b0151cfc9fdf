//! `cutover init [--preset NAME]`: write a commented starter `cutover.toml`, never over an
//! existing file. The presets are real config files (`templates/presets/*.toml`), tested by
//! deploying a minimal tree of each framework (tests/presets.rs).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::PRESETS;
use crate::error::usage;

pub fn run(file: &Path, preset: &str) -> Result<()> {
    let Some((_, _, text)) = PRESETS.iter().find(|(name, _, _)| *name == preset) else {
        let known: Vec<String> = PRESETS
            .iter()
            .map(|(name, what, _)| format!("  {name:<10} {what}"))
            .collect();
        return Err(usage(format!(
            "unknown preset {preset:?}; the presets are:\n{}",
            known.join("\n")
        )));
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
    println!(
        "wrote {} (preset {preset}): set host and path under [targets.production], then run `cutover check` and `cutover deploy --dry-run`",
        file.display()
    );
    Ok(())
}
