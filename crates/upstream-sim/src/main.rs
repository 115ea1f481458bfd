//! `upstream-sim`: serves the simulated upstream APIs until Ctrl-C / SIGTERM. See `--help`.

use std::process::ExitCode;

use upstream_sim::cli::{self, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, config) = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run { listen, config }) => (listen, config),
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("upstream-sim: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstream-sim: cannot bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state = upstream_sim::SimState::new(&config);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    // One parseable line so scripts can learn the port when --listen used port 0.
    println!("upstream-sim listening on http://{addr}");
    let stopper = state.clone();
    tokio::spawn(async move {
        shutdown_requested().await;
        stopper.trigger_shutdown();
    });
    match upstream_sim::serve(listener, state).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
