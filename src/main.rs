//! The `autos` binary: parses the command line and hands over to the library.

use autos::app::{Application, Role};
use autos::config::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// Many small, short-lived allocations on every thread (one GraphQL message per subscriber);
/// glibc's allocator spent a sixth of the fan-out's CPU on them, mimalloc much less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A missing .env is the normal case; a malformed one is worth stopping for.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("autos: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    if let Err(message) = init_tracing(&cli.config) {
        eprintln!("autos: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("autos: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("autos: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses flags and environment; a malformed environment value is reported with the
/// variable's name, since the user never typed the flag clap would otherwise mention.
fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command
        .try_get_matches_from_mut(std::env::args_os())
        .map_err(|err| name_variable(&command, err))?;
    Cli::from_arg_matches(&matches).map_err(|err| name_variable(&command, err))
}

fn name_variable(command: &clap::Command, err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--");
    let variable = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .filter(|var| std::env::var_os(var).is_some());
    match variable {
        Some(var) => {
            let message = format!(
                "{} (from environment variable {})",
                err.to_string().trim_end(),
                var.to_string_lossy()
            );
            clap::Error::raw(err.kind(), message + "\n")
        }
        None => err,
    }
}

fn init_tracing(config: &autos::config::Config) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log).map_err(|err| {
        format!(
            "AUTOS_LOG `{}` is not a valid log filter: {err}",
            config.log
        )
    })?;
    use std::io::IsTerminal as _;
    // Colour codes only for a person at a terminal, not in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    let role = match cli.command.unwrap_or(Command::All) {
        Command::Schema => {
            print!("{}", autos::graphql::sdl());
            return Ok(());
        }
        Command::Migrate => {
            let (pool, embedded) = autos::app::connect_database(&config, 2).await?;
            autos::db::migrate(&pool).await?;
            pool.close().await;
            tracing::info!("migrations applied");
            if let Some(pg) = embedded {
                pg.stop().await?;
            }
            return Ok(());
        }
        Command::WebhookSecret { tenant } => {
            let settings = config.clone();
            let secret = with_database(&config, |pool| async move {
                autos::app::webhook_secret(&settings, &pool, &tenant).await
            })
            .await?;
            println!("{secret}");
            return Ok(());
        }
        Command::Key(command) => {
            return with_database(&config, |pool| async move {
                autos::app::key_command(&pool, command).await
            })
            .await;
        }
        Command::All => Role::ALL,
        Command::Serve => Role::SERVE,
        Command::Work => Role::WORK,
    };
    let app = Application::start(config, role).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

/// Runs `f` on the database (the embedded one, started or joined, when none is configured),
/// migrated unless `AUTOS_MIGRATE=false`, and closes it after.
async fn with_database<T, F, Fut>(config: &autos::config::Config, f: F) -> anyhow::Result<T>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (pool, embedded) = autos::app::connect_database(config, 2).await?;
    autos::db::prepare(&pool, config.migrate).await?;
    let result = f(pool.clone()).await;
    pool.close().await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
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
}
