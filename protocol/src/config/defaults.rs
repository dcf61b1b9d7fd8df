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
        let upstream = Upstream {
            connect_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(120),
            early_headers: Some(super::DEFAULT_EARLY_HEADERS),
            max_parallel: Some(super::DEFAULT_MAX_PARALLEL),
            ..upstream
        };
        Ok(Config {
            servers: vec![upstream.clone()],
            upstream,
            audit: AuditSettings {
                path: env.default_audit(),
                log_prompts: false,
            },
            sandboxes: vec![Sandbox {
                name: SandboxName("default".into()),
                handoff: matches!(listen, ListenAddr::Unix(_)),
                listen,
                socket_mode: 0o660,
                socket_owner: None,
                models,
                endpoints: EndpointClass::DEFAULT.into_iter().collect(),
                openai_via_native: true,
                max_concurrent: None,
                weight: 1,
                max_body: DEFAULT_MAX_BODY,
                vsock_cid: None,
                limits: Limits::default(),
                tokens: Default::default(),
            }],
            models: Vec::new(),
            metrics: None,
            privileges: Privileges::default(),
            warnings: Vec::new(),
        })
    }
}

/// The quick start's flags beyond `--listen`, `--upstream` and `--allow-model`, each the
/// command-line form of one configuration key.
#[derive(Debug, Default, Clone)]
pub struct QuickFlags {
    /// `--num-ctx MODEL=N` (repeatable): `[model."MODEL"] num_ctx = N`.
    pub num_ctx: Vec<String>,
    /// `--audit PATH`: `[audit] path`.
    pub audit: Option<String>,
    /// `--metrics ADDR`: `[metrics] listen`.
    pub metrics: Option<String>,
    /// `--socket-owner UID:GID`: the sandbox's `socket_owner`.
    pub socket_owner: Option<String>,
    /// `--socket-mode MODE`: the sandbox's `socket_mode`.
    pub socket_mode: Option<String>,
    /// `--max-parallel N|off`: `[upstream] max_parallel`.
    pub max_parallel: Option<String>,
}

impl Config {
    /// The quick start with its flags: written as the configuration file they mirror and
    /// validated as one, so a flag means exactly what its key means.
    pub fn quick_start(
        env: &DefaultsEnv,
        listen: &str,
        upstream: &str,
        models: &[String],
        flags: &QuickFlags,
    ) -> Result<Config, ConfigErrors> {
        use toml::{Table, Value};
        let one = |m: String| {
            ConfigErrors(vec![ConfigError {
                line: None,
                message: m,
            }])
        };
        let mut doc = Table::new();
        let mut up = Table::new();
        up.insert("url".into(), Value::from(upstream));
        if let Some(n) = &flags.max_parallel {
            let v = match n.trim().parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(n.as_str()),
            };
            up.insert("max_parallel".into(), v);
        }
        doc.insert("upstream".into(), Value::Table(up));
        if let Some(p) = &flags.audit {
            let mut t = Table::new();
            t.insert("path".into(), Value::from(p.as_str()));
            doc.insert("audit".into(), Value::Table(t));
        }
        if let Some(a) = &flags.metrics {
            let mut t = Table::new();
            t.insert("listen".into(), Value::from(a.as_str()));
            doc.insert("metrics".into(), Value::Table(t));
        }
        let mut sb = Table::new();
        sb.insert("name".into(), Value::from("default"));
        sb.insert("listen".into(), Value::from(listen));
        let models: Vec<Value> = if models.is_empty() {
            vec![Value::from("*")]
        } else {
            models.iter().map(|m| Value::from(m.as_str())).collect()
        };
        sb.insert("models".into(), Value::Array(models));
        if let Some(o) = &flags.socket_owner {
            sb.insert("socket_owner".into(), Value::from(o.as_str()));
        }
        if let Some(m) = &flags.socket_mode {
            sb.insert("socket_mode".into(), Value::from(m.as_str()));
        }
        doc.insert("sandbox".into(), Value::Array(vec![Value::Table(sb)]));
        let mut model = Table::new();
        for spec in &flags.num_ctx {
            let parsed = spec
                .rsplit_once('=')
                .and_then(|(m, n)| Some((m.trim(), n.trim().parse::<i64>().ok()?)))
                .filter(|(m, _)| !m.is_empty());
            let Some((m, n)) = parsed else {
                return Err(one(format!(
                    "--num-ctx {spec:?}: write MODEL=N, e.g. --num-ctx 'llama3.2:*=16384'"
                )));
            };
            let mut t = Table::new();
            t.insert("num_ctx".into(), Value::from(n));
            model.insert(m.to_owned(), Value::Table(t));
        }
        if !model.is_empty() {
            doc.insert("model".into(), Value::Table(model));
        }
        let text = toml::to_string(&doc).map_err(|e| one(e.to_string()))?;
        // Line numbers of the generated text mean nothing to the user: the flags do.
        Config::parse(&text, env).map_err(|e| {
            ConfigErrors(
                e.0.into_iter()
                    .map(|c| ConfigError {
                        line: None,
                        message: format!("command line: {}", c.message),
                    })
                    .collect(),
            )
        })
    }
}
