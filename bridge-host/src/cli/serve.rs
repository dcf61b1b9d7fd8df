//! `bridge-host serve`: the daemon's bootstrap. Resolve the configuration (file, quick
//! start or built-in defaults), set up logging; started as root with a file to reload,
//! fork the privileged monitor while the process is still single-threaded; set limits,
//! bind, drop privileges, then serve until a signal. SIGHUP reopens the audit log and
//! reloads (through the monitor when there is one).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use protocol::config::{Config, ConfigErrors};
use protocol::ListenAddr;

use super::config::{defaults_env, load_config, print_errors, DEFAULT_CONFIG, EXIT_CONFIG};
use crate::os::privileges::Plan;
use crate::server::{monitor, Reloads, Server, Shutdown, Source};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file [default: /etc/ollama-bridge/bridge.toml if it exists, else built-in defaults].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["listen", "upstream", "allow_model", "num_ctx", "audit", "metrics", "socket_owner", "socket_mode", "max_parallel"])]
    pub config: Option<PathBuf>,
    /// Quick start without a file: one sandbox "default" listening here (unix:PATH, vsock:PORT, vsock-uds:PATH_PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Quick start: Ollama's URL.
    #[arg(long, value_name = "URL", requires = "listen")]
    pub upstream: Option<String>,
    /// Quick start: allow this model (glob over canonical names; repeatable) [default: every local model].
    #[arg(long = "allow-model", value_name = "NAME", requires = "listen")]
    pub allow_model: Vec<String>,
    /// Quick start: pin a model's context length, as `[model."MODEL"] num_ctx = N` (repeatable; MODEL may be a glob).
    #[arg(long = "num-ctx", value_name = "MODEL=N", requires = "listen")]
    pub num_ctx: Vec<String>,
    /// Quick start: the audit log, as `[audit] path` [default: the built-in path].
    #[arg(long, value_name = "PATH", requires = "listen")]
    pub audit: Option<String>,
    /// Quick start: serve Prometheus metrics here, as `[metrics] listen` (loopback IP:PORT or unix:PATH).
    #[arg(long, value_name = "ADDR", requires = "listen")]
    pub metrics: Option<String>,
    /// Quick start: the socket's owner, as `socket_owner` ("UID:GID").
    #[arg(long = "socket-owner", value_name = "UID:GID", requires = "listen")]
    pub socket_owner: Option<String>,
    /// Quick start: the socket's mode, as `socket_mode` (e.g. "0660").
    #[arg(long = "socket-mode", value_name = "MODE", requires = "listen")]
    pub socket_mode: Option<String>,
    /// Quick start: model requests Ollama works on at once, the rest queued fairly, as `[upstream] max_parallel` (N or "off"; default 4).
    #[arg(long = "max-parallel", value_name = "N|off", requires = "listen")]
    pub max_parallel: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Longest wait for in-flight requests on SIGTERM/SIGINT, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub grace: u64,
}

fn resolve_config(args: &ServeArgs) -> Result<(Config, String), ConfigErrors> {
    if let Some(listen) = &args.listen {
        let one = |m: String| {
            ConfigErrors(vec![protocol::ConfigError {
                line: None,
                message: m,
            }])
        };
        ListenAddr::parse(listen).map_err(|e| one(format!("--listen: {e}")))?;
        let up = args
            .upstream
            .as_deref()
            .unwrap_or(protocol::config::DEFAULT_UPSTREAM);
        let flags = protocol::config::QuickFlags {
            num_ctx: args.num_ctx.clone(),
            audit: args.audit.clone(),
            metrics: args.metrics.clone(),
            socket_owner: args.socket_owner.clone(),
            socket_mode: args.socket_mode.clone(),
            max_parallel: args.max_parallel.clone(),
        };
        let env = defaults_env();
        let config = Config::quick_start(&env, listen, up, &args.allow_model, &flags)?;
        return Ok((config, "command line".into()));
    }
    if let Some(p) = &args.config {
        return Ok((load_config(p)?, p.display().to_string()));
    }
    let default = Path::new(DEFAULT_CONFIG);
    if default.exists() {
        return Ok((load_config(default)?, DEFAULT_CONFIG.into()));
    }
    Ok((Config::builtin(&defaults_env()), "built-in defaults".into()))
}

/// The file to re-read on SIGHUP: none for the quick start or the built-in defaults.
fn reload_from(args: &ServeArgs) -> Option<PathBuf> {
    match (&args.listen, &args.config) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Raises the open-files soft limit to the hard limit: every connection (and every
/// request's upstream connection) is a file descriptor.
fn raise_fd_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return;
        }
    };
    tracing::debug!(limit = soft, "open-files limit (RLIMIT_NOFILE)");
    let wanted: u64 = config
        .sandboxes
        .iter()
        .map(|s| u64::from(s.limits.max_connections))
        .sum();
    if wanted.saturating_mul(2) > soft {
        tracing::warn!(limit = soft, max_connections_total = wanted, "max_connections summed over sandboxes (each connection may need an upstream one too) exceeds the open-files limit; raise LimitNOFILE or lower max_connections");
    }
}

pub fn serve(args: ServeArgs) -> ExitCode {
    init_tracing(args.log_format);
    // Reloads resolve defaults in the environment the daemon started in, not in the one
    // left after the privilege drop.
    let env = defaults_env();
    let (config, source) = match resolve_config(&args) {
        Ok(c) => c,
        Err(errs) => {
            let src = args
                .config
                .as_ref()
                .map_or_else(|| "command line".to_owned(), |p| p.display().to_string());
            print_errors(&src, &errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Whom to run as is settled before any thread starts: what `prepare` sets is
    // inherited by every thread created afterwards.
    let is_root = nix::unistd::geteuid().is_root();
    let plan = match crate::os::privileges::resolve(&config.privileges, is_root) {
        Ok(p) => p,
        Err(e) if e.is_config() => {
            eprintln!("{source}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("bridge-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = plan.prepare() {
        eprintln!("bridge-host: {e}");
        return ExitCode::FAILURE;
    }
    let reload_from = reload_from(&args);
    // Dropping to an unprivileged user with a file to reload: the monitor is forked now,
    // while this is the only thread (it inherits `no_new_privs` and the empty bounding
    // set from `prepare`), and keeps what a reload needs for as long as the daemon runs.
    let monitor = match (&plan, &reload_from) {
        (Plan::Drop(_), Some(path)) => match monitor::spawn(path, &env, &config) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("bridge-host: cannot start the privileged monitor: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let monitor_pid = monitor.as_ref().map(monitor::Handle::pid);
    let created = crate::os::privileges::Created::before_opening(&config.audit.path);
    raise_fd_limit(&config);
    crate::os::sys::malloc_tune();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::os::privileges::confine_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-host: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (code, audit) = rt.block_on(async move {
        let upstream: Vec<String> = config.servers.iter().map(|s| format!("{}={}", s.name, s.base)).collect();
        tracing::info!(config = %source, upstream = %config.upstream.base, servers = %upstream.join(" "), audit = %config.audit.path.display(), "starting");
        for w in &config.warnings {
            tracing::warn!("{}", super::config::located(&source, w));
        }
        // Handlers first: a signal that arrives once we are ready must not kill us.
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            eprintln!("bridge-host: cannot install signal handlers");
            return (ExitCode::FAILURE, None);
        };
        let server = match Server::bind(config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bridge-host: {e:#}");
                return (ExitCode::FAILURE, None);
            }
        };
        // Everything that needs root is open: drop privileges before announcing readiness.
        crate::os::notify::connect();
        if let Err(e) = plan.apply(&created) {
            eprintln!("bridge-host: {e}");
            return (ExitCode::FAILURE, None);
        }
        let audit = server.audit();
        let kept = audit.clone();
        let source = match (monitor, reload_from) {
            (Some(m), Some(path)) => match m.client() {
                Ok(c) => Some(Source::monitor(c, path, env)),
                Err(e) => {
                    eprintln!("bridge-host: cannot reach the privileged monitor: {e}");
                    return (ExitCode::FAILURE, Some(kept));
                }
            },
            (_, Some(path)) => Some(Source::local(path, env)),
            (_, None) => None,
        };
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        let reload_tx = source.is_some().then_some(reload_tx);
        let signal = Box::pin(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM"); break }
                    _ = int.recv() => { tracing::info!("SIGINT"); break }
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reopening the audit log and reloading the configuration");
                        audit.reopen();
                        match &reload_tx {
                            Some(tx) => { let _ = tx.send(()); }
                            None => {
                                let line = "reload skipped: there is no configuration file to re-read (started with --listen or with the built-in defaults); the audit log was reopened";
                                println!("{line}");
                                tracing::info!("{line}");
                            }
                        }
                    }
                }
            }
        });
        let shutdown = Shutdown {
            signal,
            grace: Duration::from_secs(args.grace),
            reloads: source.map(|source| Reloads {
                requests: reload_rx,
                source,
            }),
        };
        let code = match server.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bridge-host: {e:#}");
                ExitCode::FAILURE
            }
        };
        (code, Some(kept))
    });
    // Requests still running after the grace period are dropped with the runtime; each
    // submits its record (reason shutting_down). Then everything queued is written.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(audit) = audit {
        audit.close(Duration::from_secs(5));
    }
    // The worker's end of the monitor's socket is closed by now: the monitor exits.
    if let Some(pid) = monitor_pid {
        monitor::reap(pid, Duration::from_secs(2));
    }
    code
}
