//! The `bp-auth` binary: parse the command line, load the configuration, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use bp_auth::config::Config;
use bp_auth::startup::Application;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bp-auth", version, about = "BlitzPulse authentication server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Auth API (the default).
    Serve(ServeArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Configuration file; without it, ./config.toml if present, else the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.bind).
    #[arg(long)]
    bind: Option<String>,
    /// Data directory (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => ServeArgs::default(),
    };
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bp-auth: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    bp_auth::telemetry::init(&config.log);
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)?;
        app.run_until_stopped()
            .await
            .map_err(|e| bp_auth::startup::StartupError::Bind("serve".into(), e))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bp-auth: {e}");
            tracing::error!(error = %e, "bp-auth failed");
            ExitCode::FAILURE
        }
    }
}
