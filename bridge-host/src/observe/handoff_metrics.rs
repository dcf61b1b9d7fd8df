//! The connection hand-off's counters: connections handed over and served, descriptors
//! refused (by why), and control connections closed for breaking the protocol (by why).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    sandbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    sandbox: String,
    why: String,
}

/// The hand-off metrics of every listener.
#[derive(Default)]
pub struct HandoffMetrics {
    handed: Family<Labels, Counter>,
    refused: Family<WhyLabels, Counter>,
    closed: Family<WhyLabels, Counter>,
}

impl HandoffMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "handoff_connections",
            "TCP connections a guest handed over on its unix socket and the host took (served, or refused at max_connections)",
            self.handed.clone(),
        );
        registry.register(
            "handoff_refused",
            "Descriptors a guest handed over that were not connected TCP stream sockets: closed, audited as handoff_refused",
            self.refused.clone(),
        );
        registry.register(
            "handoff_controls_closed",
            "Hand-off control connections closed for breaking the protocol (garbage, truncated or extra descriptors, no descriptor)",
            self.closed.clone(),
        );
    }

    /// A handed connection was taken.
    pub fn handed(&self, sandbox: &str) {
        let l = Labels {
            sandbox: sandbox.to_owned(),
        };
        self.handed.get_or_create(&l).inc();
    }

    /// A handed descriptor was refused for `why`.
    pub fn refused(&self, sandbox: &str, why: &str) {
        let l = WhyLabels {
            sandbox: sandbox.to_owned(),
            why: why.to_owned(),
        };
        self.refused.get_or_create(&l).inc();
    }

    /// A control connection was closed for `why`.
    pub fn closed(&self, sandbox: &str, why: &str) {
        let l = WhyLabels {
            sandbox: sandbox.to_owned(),
            why: why.to_owned(),
        };
        self.closed.get_or_create(&l).inc();
    }
}
