use clap::Parser;
use tracing_subscriber::EnvFilter;

use ferrod::config::Command;
use ferrod::{Cli, Config};

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrod: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::User { action }) = cli.command.take() {
        return match ferrod::auth::user_cmd::run(action, &config) {
            Ok(msg) => {
                if !msg.is_empty() {
                    println!("{msg}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrod: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "ferrod: log filter '{}' is not valid ({e}); using '{}'",
            config.log,
            ferrod::config::DEFAULT_LOG_FILTER
        );
        EnvFilter::new(ferrod::config::DEFAULT_LOG_FILTER)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrod: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ferrod::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrod: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
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
    {
        let _ = ctrl_c.await;
    }
}
