//! cutover: zero-downtime deploys. Each deploy builds a complete new release beside the live one
//! and switches `current` to it with one atomic rename.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cutover::commands::{self, Output};
use cutover::{config, error};

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "Zero-downtime atomic deploys over SSH/SFTP"
)]
struct Cli {
    /// Config file
    #[arg(long, global = true, default_value = config::DEFAULT_CONFIG, value_name = "FILE")]
    config: PathBuf,
    /// Print only errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail (paths, connection)
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a new release from the source and switch `current` to it
    Deploy {
        /// Target name (may be left out when the config has one target)
        target: Option<String>,
        /// Connect, read and plan; print what would change; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Lock, plan and upload, then print the server script instead of running it
        #[arg(long, conflicts_with = "dry_run")]
        emit_script: bool,
        /// Upload every file, not only the changed ones
        #[arg(long)]
        full: bool,
    },
    /// Check that a target can be deployed to: one line per check, with the fix for each failure
    Check {
        target: Option<String>,
        /// Print the results as JSON on stdout (for CI)
        #[arg(long)]
        json: bool,
    },
    /// Point `current` back at an earlier release
    Rollback {
        target: Option<String>,
        /// Release ID to roll back to (default: the one before current)
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
    },
    /// List the releases on a target
    Releases { target: Option<String> },
    /// Remove a lock left by a deploy that was killed
    Unlock { target: Option<String> },
    /// Write a commented starter cutover.toml
    Init,
}

fn main() -> ExitCode {
    commands::started();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::EXIT_USAGE as u8
            } else {
                0
            });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(error::EXIT_OK as u8),
        Err(e) => {
            eprintln!("cutover: error: {e:#}");
            if let Some(hint) = cutover::remote::ssh::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(error::exit_code(&e) as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = Output {
        quiet: cli.quiet,
        verbose: cli.verbose,
        stdout_reserved: false,
    };
    if let Command::Init = cli.command {
        return commands::init::run(&cli.config);
    }
    let cfg = config::Config::load(&cli.config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Deploy {
            target,
            dry_run,
            emit_script,
            full,
        } => {
            let target = cfg.target(target.as_deref())?;
            out.stdout_reserved = emit_script;
            let opts = commands::deploy::Options {
                dry_run,
                emit_script,
                full,
            };
            runtime.block_on(commands::deploy::run(&target, opts, out))
        }
        Command::Releases { target } => {
            let target = cfg.target(target.as_deref())?;
            runtime.block_on(commands::releases::list(&target, out))
        }
        Command::Unlock { target } => {
            let target = cfg.target(target.as_deref())?;
            runtime.block_on(commands::releases::unlock(&target, out))
        }
        Command::Check { target, json } => {
            let target = cfg.target(target.as_deref())?;
            runtime.block_on(commands::check::run(&target, json, out))
        }
        Command::Rollback { target, to } => {
            let target = cfg.target(target.as_deref())?;
            runtime.block_on(commands::rollback::run(&target, to.as_deref(), out))
        }
        Command::Init => unreachable!(),
    }
}
