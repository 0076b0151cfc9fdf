//! cutover: zero-downtime deploys. Each deploy builds a complete new release beside the live one
//! and switches `current` to it with one atomic rename.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cutover::commands;
use cutover::config::{self, Fleet};
use cutover::deploy::Options;
use cutover::error;
use cutover::output::{self, Output};

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
    /// Print more detail (paths, connection, where the time goes)
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print the result as one JSON document on stdout (everything else goes to stderr)
    #[arg(long, global = true)]
    json: bool,
    /// Act on one host of a fleet only (its name as in `hosts`)
    #[arg(long, global = true, value_name = "NAME")]
    host: Option<String>,
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
        /// Build the release from the source alone: upload every file, copy nothing from the live one
        #[arg(long)]
        full: bool,
        /// Build a new release even when nothing changed
        #[arg(long)]
        force: bool,
    },
    /// Check that a target can be deployed to: one line per check, with the fix for each failure
    Check { target: Option<String> },
    /// Point `current` back at an earlier release
    Rollback {
        target: Option<String>,
        /// Release ID to roll back to (default: the one before current)
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
    },
    /// List the releases on a target
    Releases { target: Option<String> },
    /// Does the live release still match its manifest? (drift: hand edits, deleted files)
    Verify {
        target: Option<String>,
        /// Compare file contents too (reads every file)
        #[arg(long)]
        hash: bool,
    },
    /// Remove a lock left by a deploy that was killed
    Unlock { target: Option<String> },
    /// Write a commented starter cutover.toml
    Init {
        /// A starting point for a framework
        #[arg(long, value_name = "NAME", default_value = "static")]
        preset: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

fn main() -> ExitCode {
    output::started();
    // anyhow captures a backtrace for every error made while RUST_BACKTRACE is set (about a
    // millisecond each), and cutover makes errors on paths it expects (a new server refuses a
    // first try) yet never prints a backtrace: its errors are messages. Panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
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
    let verbose = cli.verbose;
    let result = run(cli);
    if verbose {
        eprintln!(
            "cutover: [{:6.3} s] done",
            output::started().elapsed().as_secs_f64()
        );
    }
    match result {
        Ok(()) => ExitCode::from(error::EXIT_OK as u8),
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(error::exit_code(&e) as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = Output {
        quiet: cli.quiet,
        verbose: cli.verbose,
        stdout_reserved: cli.json,
        prefix: String::new(),
    };
    match &cli.command {
        Command::Init { preset } => return commands::init::run(&cli.config, preset),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cutover",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            man.render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    let cfg = config::Config::load(&cli.config)?;
    let doing = match &cli.command {
        Command::Deploy { .. } => "deploying to",
        Command::Check { .. } => "checking",
        Command::Rollback { .. } => "rolling back",
        Command::Releases { .. } => "listing the releases of",
        Command::Verify { .. } => "verifying",
        Command::Unlock { .. } => "unlocking",
        _ => "acting on",
    };
    let fleet = |target: &Option<String>| -> anyhow::Result<Fleet> {
        let fleet = cfg.target(target.as_deref())?;
        // Entries that are the same as written are refused by the config already; these are
        // the same once the ssh config is read.
        if let Some((a, b, place)) = cutover::remote::ssh_config::same_place(&fleet.hosts) {
            return Err(error::usage(format!(
                "target {}: hosts {a:?} and {b:?} lead to the same server, user and path ({place}) once the ssh config is read: list each once",
                fleet.name
            )));
        }
        let fleet = match &cli.host {
            Some(h) => fleet.narrow(h)?,
            None => fleet,
        };
        // Said before anything happens, whatever the command: the rest of the fleet is
        // left out, and a fleet that drifts apart is what --host can leave behind.
        if let Some(notice) = fleet.narrowing_notice(doing) {
            out.warn(notice);
        }
        Ok(fleet)
    };
    if matches!(
        cli.command,
        Command::Deploy { .. } | Command::Rollback { .. } | Command::Check { .. }
    ) {
        cutover::script::warm_up();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let json = cli.json;
    match &cli.command {
        Command::Deploy {
            target,
            dry_run,
            emit_script,
            full,
            force,
        } => {
            if *emit_script && json {
                return Err(error::usage(
                    "--emit-script prints the script on stdout, --json a report: use one of them",
                ));
            }
            let fleet = fleet(target)?;
            out.stdout_reserved |= *emit_script;
            let opts = Options {
                dry_run: *dry_run,
                emit_script: *emit_script,
                full: *full,
                force: *force,
            };
            runtime.block_on(commands::deploy::run(&fleet, opts, json, &out))
        }
        Command::Releases { target } => {
            let fleet = fleet(target)?;
            runtime.block_on(commands::releases::list(&fleet, json, &out))
        }
        Command::Unlock { target } => {
            let fleet = fleet(target)?;
            runtime.block_on(commands::releases::unlock(&fleet, &out))
        }
        Command::Check { target } => {
            let fleet = fleet(target)?;
            runtime.block_on(commands::check::run(&fleet, json, &out))
        }
        Command::Rollback { target, to } => {
            let fleet = fleet(target)?;
            runtime.block_on(commands::rollback::run(&fleet, to.as_deref(), json, &out))
        }
        Command::Verify { target, hash } => {
            let fleet = fleet(target)?;
            runtime.block_on(commands::verify::run(&fleet, *hash, json, &out))
        }
        Command::Init { .. } | Command::Completions { .. } | Command::Man => unreachable!(),
    }
}
