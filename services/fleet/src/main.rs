//! `fleet`: the one binary. `fleet run` starts every component in one process
//! on embedded defaults; `fleet run --target <component>` runs one; `fleet
//! migrate` prepares the stores; `fleet health` probes a running process;
//! `fleet user ...`, `fleet export` and
//! `fleet import` are operator commands.

mod admin;
mod admin_http;
mod components;
mod config;
mod health;
mod transfer_cli;

use std::{collections::HashMap, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{
    components::{Component, open_store},
    config::FleetConfig,
};

/// The gateway's hit path allocates for every request (headers, labels,
/// futures); mimalloc's thread-local pages serve that at a fraction of the
/// system allocator's cost, and without its consolidation pauses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "fleet", version, about = "Fleet: user accounts behind one gateway")]
struct Cli {
    /// A TOML configuration file (environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the fleet: every component, or the one named by --target.
    Run {
        /// Run only this component (microservices mode).
        #[arg(long, value_enum)]
        target: Option<Component>,
    },
    /// Creates or upgrades every component's store, then exits.
    Migrate,
    /// Asks a running process's admin listener whether it is ready; exits 0
    /// only when `/health/ready` says so. For probes in an image without a
    /// shell or curl.
    Health {
        /// The component the process runs, to find its default admin port.
        #[arg(long, value_enum)]
        target: Option<Component>,
        /// The admin listener's address (`host:port`); the configuration's
        /// `admin_listen` (or the target's default) when unset.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
    },
    /// Account administration.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Exports an account's personal data (a data-subject request), from
    /// the running fleet.
    Export {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// `json` or `csv`.
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
        /// Where to write it (whole or not at all); standard output if unset.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Imports an export's document into an account, on the running fleet.
    Import {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// The document (JSON or CSV, as `fleet export` wrote it).
        file: PathBuf,
        /// Check and count, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Makes an account an administrator.
    Promote {
        /// The account's email.
        email: String,
    },
    /// Lifts a failed-login lock.
    Unlock {
        /// The account's email.
        email: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config: FleetConfig = fleet_kit::config::load(cli.config.as_deref(), env.clone())
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let service_name = match &cli.command {
        Command::Run {
            target: Some(component),
        } => format!("fleet-{}", component.name()),
        _ => "fleet".to_string(),
    };
    let trace = fleet_kit::telemetry::TraceConfig::from_env(&env, &service_name);
    // The trace exporter's channel lives on the runtime: build it inside.
    let telemetry = {
        let _inside = runtime.enter();
        fleet_kit::telemetry::init(&config.log, &trace)
    };
    let result = runtime.block_on(dispatch(cli.command, config));
    telemetry.shutdown();
    result
}

async fn dispatch(command: Command, config: FleetConfig) -> anyhow::Result<()> {
    match command {
        Command::Run { target } => {
            let components = target.map_or(Component::ALL.to_vec(), |c| vec![c]);
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            components::run(config, &components, shutdown).await
        }
        Command::Migrate => {
            for component in Component::STORED {
                open_store(&config, component).await?.close().await;
            }
            println!("every store is migrated");
            Ok(())
        }
        Command::Health { target, admin } => health::check(&config, target, admin.as_deref()).await,
        Command::User { command } => match command {
            UserCommand::Promote { email } => admin::promote(&config, &email).await,
            UserCommand::Unlock { email } => admin::unlock(&config, &email).await,
        },
        Command::Export { email, format, out } => transfer_cli::export(&config, &email, &format, out).await,
        Command::Import { email, file, dry_run } => transfer_cli::import(&config, &email, &file, dry_run).await,
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
