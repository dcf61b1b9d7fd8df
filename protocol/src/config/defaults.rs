//! The built-in defaults: where the socket and the audit log go when nothing is
//! configured, and the configurations `serve` runs without a file (built-in, quick-start).

use std::path::PathBuf;
use std::time::Duration;

use crate::limits::Limits;
use crate::listen::ListenAddr;
use crate::model::ModelPattern;
use crate::route::EndpointClass;

use super::values::parse_upstream;
use super::{
    AuditSettings, Config, ConfigError, ConfigErrors, Privileges, Sandbox, SandboxName, Upstream,
    DEFAULT_MAX_BODY,
};

/// What the built-in defaults depend on, read from the environment by the caller.
#[derive(Debug, Clone, Default)]
pub struct DefaultsEnv {
    pub is_root: bool,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub uid: u32,
}

impl DefaultsEnv {
    /// Default socket of the `default` sandbox.
    pub fn default_socket(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/run/ollama-bridge/ollama.sock");
        }
        match &self.xdg_runtime_dir {
            Some(d) => d.join("ollama-bridge/ollama.sock"),
            None => PathBuf::from(format!("/tmp/ollama-bridge-{}/ollama.sock", self.uid)),
        }
    }

    /// Default audit log.
    pub fn default_audit(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/var/log/ollama-bridge/audit.jsonl");
        }
        let state = self.xdg_state_home.clone().unwrap_or_else(|| {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".local/state")
        });
        state.join("ollama-bridge/audit.jsonl")
    }
}

/// The Ollama default.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:11434";

impl Config {
    /// The built-in configuration used when there is no file.
    pub fn builtin(env: &DefaultsEnv) -> Config {
        Config::quick(
            env,
            ListenAddr::Unix(env.default_socket()),
            DEFAULT_UPSTREAM,
            &[],
        )
        .expect("built-in defaults are valid")
    }

    /// The quick-start configuration (`serve --listen --upstream --allow-model`).
    pub fn quick(
        env: &DefaultsEnv,
        listen: ListenAddr,
        upstream: &str,
        models: &[String],
    ) -> Result<Config, ConfigErrors> {
        let one = |m: String| {
            ConfigErrors(vec![ConfigError {
                line: None,
                message: m,
            }])
        };
        let upstream = parse_upstream(upstream).map_err(one)?;
        let models = if models.is_empty() {
            vec![ModelPattern::parse("*").expect("* is valid")]
        } else {
            models
                .iter()
                .map(|m| ModelPattern::parse(m).map_err(|e| one(format!("--allow-model: {e}"))))
                .collect::<Result<_, _>>()?
        };
        Ok(Config {
            upstream: Upstream {
                connect_timeout: Duration::from_secs(3),
                header_timeout: Duration::from_secs(600),
                idle_timeout: Duration::from_secs(120),
                ..upstream
            },
            audit: AuditSettings {
                path: env.default_audit(),
                log_prompts: false,
            },
            sandboxes: vec![Sandbox {
                name: SandboxName("default".into()),
                listen,
                socket_mode: 0o660,
                socket_owner: None,
                models,
                endpoints: EndpointClass::DEFAULT.into_iter().collect(),
                openai_via_native: true,
                max_concurrent: None,
                max_body: DEFAULT_MAX_BODY,
                vsock_cid: None,
                limits: Limits::default(),
            }],
            models: Vec::new(),
            metrics: None,
            privileges: Privileges::default(),
            warnings: Vec::new(),
        })
    }
}
