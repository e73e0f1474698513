//! The `bp-auth` binary: parse the command line, load the configuration, then serve or run an
//! operator command.

use std::path::PathBuf;
use std::process::ExitCode;

use bp_auth::config::Config;
use bp_auth::startup::Application;
use bp_auth::{admin, clock, keys};
use clap::{Args, Parser, Subcommand};

/// mimalloc rather than the system's allocator: the server allocates and frees small buffers
/// on every request, from several threads; measured in `cargo bench --bench load`, it gave 11%
/// more durable refreshes and 3% more `/healthz` than glibc's malloc (README "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Operator commands: through the running server's admin socket, or on the data dir
    /// itself when no server runs.
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
    /// Write a consistent backup (every user as of one point of its history), owner-only.
    Backup {
        #[arg(long)]
        out: PathBuf,
        /// Also the signing, server and data keys: the file then holds everything needed to
        /// restore, and must be kept as secret as the keys.
        #[arg(long)]
        include_keys: bool,
    },
    /// Read an export or backup into an empty data dir (with the backup's keys, if any).
    Import {
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Move a stopped server's sled data dir (users, indexes, keys) into an empty PostgreSQL
    /// database, for nodes with storage.engine = "postgres".
    MigrateToPostgres {
        /// The database (`postgres://user:password@host:port/database`); never printed.
        #[arg(long)]
        postgres_url: String,
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
    // Nodes sharing PostgreSQL keep the keys there (sealed); sled's server keeps them in the
    // data dir, which this command may change while the server runs (sled's lock is not taken).
    let shared = match config.storage.engine {
        bp_auth::config::Engine::Postgres => {
            Some(bp_auth::store::open(dir, &config.storage).map_err(|e| e.to_string())?)
        }
        bp_auth::config::Engine::Sled => None,
    };
    let files: std::sync::Arc<dyn keys::KeyFiles> = match &shared {
        Some(store) => bp_auth::store::key_files(store.as_ref(), dir),
        None => std::sync::Arc::new(dir.clone()),
    };
    match command {
        KeysCommand::Rotate => {
            let key = keys::generate_signing_key(files.as_ref(), clock::now())
                .map_err(|e| e.to_string())?;
            if shared.is_some() {
                println!(
                    "new active key {}; every node on this database starts using it at once",
                    key.kid
                );
            } else {
                println!(
                    "new active key {}; send SIGHUP to a running server to start using it",
                    key.kid
                );
            }
        }
        KeysCommand::List => {
            let all = keys::load_or_create_signing_keys(files.as_ref(), clock::now())
                .map_err(|e| e.to_string())?;
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
    use admin::{Command as C, Invocation};
    use bp_auth::actors::admin::Change;
    let change = |email: String, change: Change| Invocation::Account(C::Change { email, change });
    let invocation = match command {
        AdminCommand::User { command } => match command {
            UserCommand::Show { email } => Invocation::Account(C::Show { email }),
            UserCommand::Deactivate { email } => change(email, Change::Deactivate),
            UserCommand::Reactivate { email } => change(email, Change::Reactivate),
            UserCommand::SetPlan { email, plan } => change(email, Change::SetPlan(plan)),
        },
        AdminCommand::Sessions {
            command: SessionsCommand::Revoke { email },
        } => change(email, Change::RevokeSessions),
        AdminCommand::Mfa {
            command: MfaCommand::Reset { email },
        } => change(email, Change::ResetMfa),
        AdminCommand::Export { out } => Invocation::Export {
            out,
            include_keys: false,
            backup: false,
        },
        AdminCommand::Backup { out, include_keys } => Invocation::Export {
            out,
            include_keys,
            backup: true,
        },
        AdminCommand::Import { input } => Invocation::Import { input },
        AdminCommand::MigrateToPostgres { postgres_url } => {
            let text = admin::migrate::migrate_to_postgres(config, &postgres_url)
                .map_err(|e| e.to_string())?;
            println!("{text}");
            return Ok(());
        }
    };
    let text = admin::run(config, &invocation).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
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
