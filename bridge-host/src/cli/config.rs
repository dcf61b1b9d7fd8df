//! Configuration as the command line finds it: the built-in defaults' environment, loading
//! and validating a file, printing its errors, `check-config`, and the exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use protocol::config::{Config, ConfigErrors, DefaultsEnv};
use protocol::ConfigError;

/// Exit status for a bad configuration or bad usage (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// The config file read when no flag names one.
pub const DEFAULT_CONFIG: &str = "/etc/ollama-bridge/bridge.toml";

/// Reads the process environment for the built-in defaults.
pub fn defaults_env() -> DefaultsEnv {
    let uid = nix::unistd::geteuid();
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    DefaultsEnv {
        is_root: uid.is_root(),
        xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
        xdg_state_home: var("XDG_STATE_HOME"),
        home: var("HOME"),
        uid: uid.as_raw(),
    }
}

/// Loads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    Config::parse(&text, &defaults_env())
}

/// `PATH:LINE: message`, or `PATH: message` when the line is not known.
pub fn located(path: &str, e: &ConfigError) -> String {
    match e.line {
        Some(l) => format!("{path}:{l}: {}", e.message),
        None => format!("{path}: {}", e.message),
    }
}

pub fn print_errors(path: &str, errs: &ConfigErrors) {
    for e in &errs.0 {
        eprintln!("{}", located(path, e));
    }
}

/// Values that are allowed but surely wrong: `PATH:LINE: warning: message` on stderr.
pub fn print_warnings(path: &str, c: &Config) {
    for w in &c.warnings {
        eprintln!("{}", located(path, &warning(w)));
    }
}

/// A warning as a line: its message prefixed `warning: `.
pub fn warning(w: &ConfigError) -> ConfigError {
    ConfigError {
        line: w.line,
        message: format!("warning: {}", w.message),
    }
}

pub fn check_config(path: &Path) -> ExitCode {
    match load_config(path) {
        Ok(c) => {
            // The user and group `serve` switches to when started as root must exist.
            if let Err(e) = crate::os::privileges::resolve(&c.privileges, true) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            print_warnings(&path.display().to_string(), &c);
            // One server: its URL; several: each one's name and URL.
            let upstream = match &c.servers[..] {
                [one] => one.base.clone(),
                all => all
                    .iter()
                    .map(|s| format!("{}={}", s.name, s.base))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            println!(
                "{}: ok ({} sandbox{}, upstream {}{})",
                path.display(),
                c.sandboxes.len(),
                if c.sandboxes.len() == 1 { "" } else { "es" },
                upstream,
                match c.warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_owned(),
                    n => format!(", {n} warnings"),
                }
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            print_errors(&path.display().to_string(), &errs);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
