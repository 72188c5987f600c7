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
    // shutdown_signal() runs inside the runtime (it needs its reactor), before anything else.
    match runtime.block_on(async { ferrod::run(config, shutdown_signal()).await }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrod: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C. The handlers are registered when this is called, not when the
/// future is first polled (that happens only once the listener is bound and the accept loop
/// runs): a SIGTERM that arrives while ferrod starts must stop it gracefully, not kill it by the
/// signal's default action.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            (Ok(mut t), Err(_)) => {
                t.recv().await;
            }
            (Err(_), Ok(mut i)) => {
                i.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
