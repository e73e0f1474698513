//! The `bp-auth` binary: parse the command line, load the configuration, then serve or run an
//! operator command.

use std::path::PathBuf;
use std::process::ExitCode;

use bp_auth::config::Config;
use bp_auth::startup::Application;
use bp_auth::{admin, clock, keys};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bp-auth", version, about = "BlitzPulse authentication server")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the configuration and the data live; accepted before or after the subcommand.
#[derive(Args, Default, Clone)]
struct Common {
    /// Configuration file; without it, ./config.toml if present, else the built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Auth API (the default).
    Serve {
        /// Address to listen on (overrides server.bind).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Signing keys in the data dir (a running server picks changes up on SIGHUP).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operator commands on a stopped server's data dir.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new active signing key; older keys keep verifying until their tokens expire.
    Rotate,
    /// Show every signing key with its state.
    List,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Two-factor authentication.
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// Write every user, tenant and index as versioned JSON lines (secrets only as stored).
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Read an export into an empty data dir (copy the source's keys/ directory first).
    Import {
        #[arg(long = "in")]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Show an account (no secrets).
    Show { email: String },
    /// Deactivate: every session revoked, the API key disabled.
    Deactivate { email: String },
    /// Reactivate a deactivated account.
    Reactivate { email: String },
    /// Move the user's tenant to another configured plan.
    SetPlan { email: String, plan: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Revoke every session of the user.
    Revoke { email: String },
}

#[derive(Subcommand)]
enum MfaCommand {
    /// Turn the user's MFA off and forget the secret and recovery codes.
    Reset { email: String },
}

fn load_config(common: &Common) -> Result<Config, String> {
    let mut config = Config::load(common.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(dir) = &common.data_dir {
        config.server.data_dir = dir.clone();
    }
    Ok(config)
}

fn serve(mut config: Config, bind: Option<String>) -> Result<(), String> {
    if let Some(bind) = bind {
        config.server.bind = bind;
    }
    bp_auth::telemetry::init(&config.log);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).map_err(|e| e.to_string())?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}

fn keys_command(config: &Config, command: KeysCommand) -> Result<(), String> {
    let dir = &config.server.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match command {
        KeysCommand::Rotate => {
            let key = keys::generate_signing_key(dir, clock::now()).map_err(|e| e.to_string())?;
            println!(
                "new active key {}; send SIGHUP to a running server to start using it",
                key.kid
            );
        }
        KeysCommand::List => {
            let all =
                keys::load_or_create_signing_keys(dir, clock::now()).map_err(|e| e.to_string())?;
            let life = bp_auth::startup::max_token_life(config);
            for (key, created, state) in all.states(life, clock::now()) {
                println!(
                    "{}  created {}  {}",
                    key.kid,
                    created.rfc3339(),
                    state.label()
                );
            }
        }
    }
    Ok(())
}

fn admin_command(config: &Config, command: AdminCommand) -> Result<(), String> {
    let opened = admin::open(config).map_err(|e| e.to_string())?;
    let store: &dyn bp_auth::store::Store = opened.as_ref();
    let done = |u: bp_auth::domain::user::UserState| {
        println!(
            "{}: {}",
            u.email,
            admin::user_show(store, &u.email)
                .map(|v| v.to_string())
                .unwrap_or_default()
        )
    };
    let r: Result<(), admin::AdminError> = match command {
        AdminCommand::User { command } => match command {
            UserCommand::Show { email } => admin::user_show(store, &email)
                .map(|v| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())),
            UserCommand::Deactivate { email } => admin::user_deactivate(store, &email).map(done),
            UserCommand::Reactivate { email } => admin::user_reactivate(store, &email).map(done),
            UserCommand::SetPlan { email, plan } => {
                admin::user_set_plan(store, config, &email, &plan).map(done)
            }
        },
        AdminCommand::Sessions {
            command: SessionsCommand::Revoke { email },
        } => admin::sessions_revoke(store, &email).map(done),
        AdminCommand::Mfa {
            command: MfaCommand::Reset { email },
        } => admin::mfa_reset(store, &email).map(done),
        AdminCommand::Export { out } => {
            admin::export(store, &out).map(|n| println!("exported {n} users to {}", out.display()))
        }
        AdminCommand::Import { input } => admin::import(store, &input)
            .map(|n| println!("imported {n} users from {}", input.display())),
    };
    store.close();
    r.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // Everything bp-auth writes (sled's files, keys, the outbox, exports) holds secrets or
    // their hashes: owner-only, whatever umask the operator's shell had.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let result = load_config(&cli.common).and_then(|config| match cli.command {
        None => serve(config, None),
        Some(Command::Serve { bind }) => serve(config, bind),
        Some(Command::Keys { command }) => keys_command(&config, command),
        Some(Command::Admin { command }) => admin_command(&config, command),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bp-auth: {e}");
            ExitCode::FAILURE
        }
    }
}
