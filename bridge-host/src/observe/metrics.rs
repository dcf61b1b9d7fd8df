//! Prometheus metrics, derived from the audit records as they are written (so metrics and
//! the audit log can never disagree about what happened), plus requests in flight.
//! Served by the server layer's admin listener on an opt-in, host-only listener (`[metrics] listen`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::audit::{AuditRecord, Decision};
use protocol::budget::WindowUse;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    sandbox: String,
    endpoint: String,
    model: String,
    decision: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    sandbox: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    sandbox: String,
    model: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    sandbox: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    sandbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    sandbox: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    sandbox: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreloadLabels {
    model: String,
    result: String,
}

/// The token-budget and preload metrics (apart, so they read as one feature).
#[derive(Default)]
struct Budgets {
    used: Family<WindowLabels, Gauge>,
    left: Family<WindowLabels, Gauge>,
    estimated: Family<SandboxLabels, Counter>,
    preloads: Family<PreloadLabels, Counter>,
}

impl Budgets {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "token_budget_used",
            "Tokens used in the sliding window (hour, day) of each sandbox, as its budgets count them",
            self.used.clone(),
        );
        registry.register(
            "token_budget_left",
            "Tokens left in each budget (tokens_per_hour, tokens_per_day) of each sandbox",
            self.left.clone(),
        );
        registry.register(
            "tokens_estimated",
            "Tokens charged to budgets as an estimate (answers cut off before Ollama's counts)",
            self.estimated.clone(),
        );
        registry.register(
            "preloads",
            "Model loads asked of Ollama for preload = true, by model and result (ok, failed)",
            self.preloads.clone(),
        );
    }
}

/// One request in flight; the count drops with the guard.
pub struct InFlight(Gauge, Option<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
        if let Some(total) = &self.1 {
            total.dec();
        }
    }
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    in_flight: Family<SandboxLabels, Gauge>,
    /// Requests in flight on every listener (not exported: the sum of `in_flight`).
    in_flight_total: Gauge,
    queued: Family<SandboxLabels, Gauge>,
    queue_wait: Family<SandboxLabels, Histogram>,
    upstream_errors: Family<ReasonLabels, Counter>,
    tool_calls_salvaged: Family<ModelLabels, Counter>,
    connections_refused: Family<SandboxLabels, Counter>,
    audit_dropped: Gauge,
    budgets: Budgets,
    servers: Servers,
    /// The connection hand-off's counters.
    pub handoff: super::handoff_metrics::HandoffMetrics,
}

/// The upstream servers' series, labelled `server` (its name; `default` with a single
/// `url`). `upstream_up`, `upstream_loaded_models` and the queue's are set by the
/// background refresh of several servers.
#[derive(Default)]
struct Servers {
    requests: Family<ServerLabels, Counter>,
    up: Family<ServerLabels, Gauge>,
    loaded: Family<ServerLabels, Gauge>,
    running: Family<ServerLabels, Gauge>,
    waiting: Family<ServerLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

impl Servers {
    fn register(&self, r: &mut Registry) {
        r.register(
            "upstream_requests",
            "Requests sent to each upstream server (the audit record's upstream)",
            self.requests.clone(),
        );
        r.register(
            "upstream_up",
            "1 while the upstream server answers, 0 while it is down (several servers)",
            self.up.clone(),
        );
        r.register(
            "upstream_loaded_models",
            "Models the upstream server has loaded (/api/ps), at the last refresh",
            self.loaded.clone(),
        );
        r.register(
            "upstream_running_requests",
            "Model requests holding a slot of the server's fair queue, at the last refresh",
            self.running.clone(),
        );
        r.register(
            "upstream_waiting_requests",
            "Model requests waiting in the server's fair queue, at the last refresh",
            self.waiting.clone(),
        );
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ollama_bridge");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<EndpointLabels, Histogram>::new_with_constructor(duration_histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        let in_flight = Family::<SandboxLabels, Gauge>::default();
        let queued = Family::<SandboxLabels, Gauge>::default();
        let queue_wait =
            Family::<SandboxLabels, Histogram>::new_with_constructor(duration_histogram);
        let upstream_errors = Family::<ReasonLabels, Counter>::default();
        let connections_refused = Family::<SandboxLabels, Counter>::default();
        let tool_calls_salvaged = Family::<ModelLabels, Counter>::default();
        let audit_dropped = Gauge::default();
        registry.register(
            "requests",
            "Requests by sandbox, endpoint class, model, decision and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request duration, from arrival to the last byte",
            duration.clone(),
        );
        registry.register(
            "tokens",
            "Prompt and completion tokens reported by Ollama",
            tokens.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "queued_requests",
            "Model requests waiting for a turn in the upstream's fair queue (max_parallel)",
            queued.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long model requests waited in the upstream's fair queue",
            queue_wait.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed because of Ollama",
            upstream_errors.clone(),
        );
        registry.register(
            "tool_calls_salvaged",
            "Tool calls recovered from text the model printed, by sandbox and model",
            tool_calls_salvaged.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503 and closed at max_connections (not requests: no audit record)",
            connections_refused.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records that could not be written",
            audit_dropped.clone(),
        );
        let budgets = Budgets::default();
        budgets.register(&mut registry);
        let servers = Servers::default();
        servers.register(&mut registry);
        let handoff = super::handoff_metrics::HandoffMetrics::default();
        handoff.register(&mut registry);
        Metrics {
            servers,
            budgets,
            handoff,
            registry,
            requests,
            duration,
            tokens,
            in_flight,
            in_flight_total: Gauge::default(),
            queued,
            queue_wait,
            upstream_errors,
            tool_calls_salvaged,
            connections_refused,
            audit_dropped,
        }
    }

    /// Counts a request in flight on `sandbox` until the guard is dropped.
    pub fn in_flight_guard(&self, sandbox: &str) -> InFlight {
        let g = self
            .in_flight
            .get_or_create(&SandboxLabels {
                sandbox: sandbox.to_owned(),
            })
            .clone();
        g.inc();
        self.in_flight_total.inc();
        InFlight(g, Some(self.in_flight_total.clone()))
    }

    /// Requests in flight on every listener.
    pub fn in_flight_total(&self) -> i64 {
        self.in_flight_total.get()
    }

    /// Counts a request of `sandbox` waiting in the fair queue until the guard is dropped.
    pub fn queued_guard(&self, sandbox: &str) -> InFlight {
        let g = self
            .queued
            .get_or_create(&SandboxLabels {
                sandbox: sandbox.to_owned(),
            })
            .clone();
        g.inc();
        InFlight(g, None)
    }

    /// Requests in flight on `sandbox`.
    pub fn in_flight(&self, sandbox: &str) -> i64 {
        self.in_flight
            .get_or_create(&SandboxLabels {
                sandbox: sandbox.to_owned(),
            })
            .get()
    }

    /// A connection over `max_connections` was refused.
    pub fn connection_refused(&self, sandbox: &str) {
        self.connections_refused
            .get_or_create(&SandboxLabels {
                sandbox: sandbox.to_owned(),
            })
            .inc();
    }

    /// A request ended: counts it from its audit record.
    pub fn observe(&self, rec: &AuditRecord) {
        let endpoint = rec.endpoint.map_or("-", |e| e.as_str()).to_owned();
        // Denied requests may name anything: only allowed models become label values.
        let model = match (rec.decision, &rec.model) {
            (Decision::Allow, Some(m)) => m.clone(),
            _ => "-".into(),
        };
        let decision = match rec.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        };
        self.requests
            .get_or_create(&RequestLabels {
                sandbox: rec.sandbox.clone(),
                endpoint: endpoint.clone(),
                model: model.clone(),
                decision: decision.into(),
                status: rec.status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels {
                sandbox: rec.sandbox.clone(),
                endpoint,
            })
            .observe(rec.duration_ms as f64 / 1000.0);
        for (kind, n) in [
            ("prompt", rec.prompt_tokens),
            ("completion", rec.completion_tokens),
        ] {
            if let Some(n) = n {
                self.tokens
                    .get_or_create(&TokenLabels {
                        sandbox: rec.sandbox.clone(),
                        model: model.clone(),
                        kind: kind.into(),
                    })
                    .inc_by(n);
            }
        }
        if let Some(ms) = rec.queued_ms {
            self.queue_wait
                .get_or_create(&SandboxLabels {
                    sandbox: rec.sandbox.clone(),
                })
                .observe(ms as f64 / 1000.0);
        }
        if let Some(n) = rec.tokens_estimated {
            self.budgets
                .estimated
                .get_or_create(&SandboxLabels {
                    sandbox: rec.sandbox.clone(),
                })
                .inc_by(n);
        }
        if let Some(n) = rec.tool_calls_salvaged {
            self.tool_calls_salvaged
                .get_or_create(&ModelLabels {
                    sandbox: rec.sandbox.clone(),
                    model: model.clone(),
                })
                .inc_by(n);
        }
        // A merged listing names every server it asked: one for each.
        for server in rec.upstream.iter().flat_map(|s| s.split(',')) {
            self.servers
                .requests
                .get_or_create(&ServerLabels {
                    server: server.to_owned(),
                })
                .inc();
        }
        if let Some(r) = rec.reason.filter(|r| r.is_upstream()) {
            self.upstream_errors
                .get_or_create(&ReasonLabels {
                    sandbox: rec.sandbox.clone(),
                    reason: r.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// The token windows of every configured sandbox, now (set before each scrape).
    pub fn token_windows(&self, snapshot: &[(String, [WindowUse; 2])]) {
        let b = &self.budgets;
        b.used.clear();
        b.left.clear();
        for (sandbox, windows) in snapshot {
            for w in windows {
                let labels = WindowLabels {
                    sandbox: sandbox.clone(),
                    window: w.window.as_str().to_owned(),
                };
                let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                b.used.get_or_create(&labels).set(gauge(w.used));
                if let Some(left) = w.left {
                    b.left.get_or_create(&labels).set(gauge(left));
                }
            }
        }
    }

    /// One upstream server's state, as the background refresh found it.
    pub fn server(&self, server: &str, up: bool, loaded: usize, running: u32, waiting: u32) {
        let l = ServerLabels {
            server: server.to_owned(),
        };
        let s = &self.servers;
        s.up.get_or_create(&l).set(i64::from(up));
        s.loaded.get_or_create(&l).set(loaded as i64);
        s.running.get_or_create(&l).set(i64::from(running));
        s.waiting.get_or_create(&l).set(i64::from(waiting));
    }

    /// A preload of `model` was asked of Ollama: it loaded, or it failed.
    pub fn preloaded(&self, model: &str, ok: bool) {
        self.budgets
            .preloads
            .get_or_create(&PreloadLabels {
                model: model.to_owned(),
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self, audit_dropped: u64) -> String {
        self.audit_dropped.set(audit_dropped as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
