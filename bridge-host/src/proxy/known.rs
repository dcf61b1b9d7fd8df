//! What the bridge knows of one upstream server between background refreshes (is it
//! up, which models it has and has loaded), and the routing rule over those facts: pure,
//! read on the request path, written only by the refresher and by failed connections.

use std::sync::Mutex;
use std::time::Instant;

use protocol::ModelName;

/// One server's facts; kept across reloads while its URL is unchanged.
#[derive(Default)]
pub struct Known {
    state: Mutex<Facts>,
}

/// The facts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `None` until the first probe (counted as up).
    pub up: Option<bool>,
    /// Why the server is down (never shown to a sandbox except in a 502 naming it).
    pub error: Option<String>,
    /// Ollama's version, from the last probe that reached it.
    pub version: Option<String>,
    /// The models it has (`/api/tags`).
    pub tags: Vec<ModelName>,
    /// The models it has loaded (`/api/ps`).
    pub loaded: Vec<ModelName>,
    /// When the last probe ended.
    pub at: Option<Instant>,
    /// Times it was found up after being down.
    pub comebacks: u64,
}

impl Facts {
    /// Not known to be down.
    pub fn is_up(&self) -> bool {
        self.up != Some(false)
    }
}

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn facts(&self) -> Facts {
        self.lock().clone()
    }

    /// The server refused a connection or timed out: down until a probe answers. True
    /// when it was not already down. Its model lists are kept, so a request for a model
    /// only it had is told which server is down.
    pub fn mark_down(&self, error: &str) -> bool {
        let mut f = self.lock();
        let was_up = f.is_up();
        f.up = Some(false);
        f.error = Some(error.to_owned());
        f.at = Some(Instant::now());
        was_up
    }

    /// A probe reached the server: its version and models. True when it was down.
    pub fn reached(&self, version: String, tags: Vec<ModelName>, loaded: Vec<ModelName>) -> bool {
        let mut f = self.lock();
        let back = f.up == Some(false);
        if back {
            f.comebacks += 1;
        }
        *f = Facts {
            up: Some(true),
            error: None,
            version: Some(version),
            tags,
            loaded,
            at: Some(Instant::now()),
            comebacks: f.comebacks,
        };
        back
    }
}

/// One server as routing sees it for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Its `models` globs allow the request's model (always, without a model).
    pub allowed: bool,
    pub up: bool,
    /// It has the model (always, without a model).
    pub has: bool,
    pub loaded: bool,
    /// Requests it is working on plus those waiting for it (its fair queue).
    pub load: usize,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This server; `has`: it has the model (or the request names none).
    Server { index: usize, has: bool },
    /// Only this server, which is down, has the model (or every allowed one is down).
    Down(usize),
    /// No server may serve the model (`models` of every server exclude it).
    NoServer,
}

/// Among the healthy servers allowed the model: one that has it loaded, then one that
/// has it, then the least busy; never one that lacks it while another (healthy) has it.
/// `skip` is a server already tried.
pub fn choose(views: &[View], skip: Option<usize>) -> Choice {
    let cands = || {
        views
            .iter()
            .enumerate()
            .filter(|(i, v)| v.allowed && Some(*i) != skip)
    };
    let rank = |v: &View| match (v.loaded && v.has, v.has) {
        (true, _) => 0,
        (_, true) => 1,
        _ => 2,
    };
    let best = cands()
        .filter(|(_, v)| v.up)
        .min_by_key(|(i, v)| (rank(v), v.load, *i));
    match best {
        Some((i, v)) if v.has => {
            return Choice::Server {
                index: i,
                has: true,
            }
        }
        _ => {}
    }
    if let Some((i, _)) = cands().find(|(_, v)| !v.up && v.has) {
        return Choice::Down(i);
    }
    match best {
        Some((index, _)) => Choice::Server { index, has: false },
        None => cands()
            .next()
            .map_or(Choice::NoServer, |(i, _)| Choice::Down(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(up: bool, has: bool, loaded: bool, load: usize) -> View {
        View {
            allowed: true,
            up,
            has,
            loaded,
            load,
        }
    }

    #[test]
    fn loaded_then_has_then_least_busy() {
        let views = [v(true, true, false, 0), v(true, true, true, 5)];
        assert_eq!(
            choose(&views, None),
            Choice::Server {
                index: 1,
                has: true
            }
        );
        let views = [v(true, true, false, 3), v(true, true, false, 1)];
        assert_eq!(
            choose(&views, None),
            Choice::Server {
                index: 1,
                has: true
            }
        );
        let views = [v(true, false, false, 0), v(true, true, false, 9)];
        assert_eq!(
            choose(&views, None),
            Choice::Server {
                index: 1,
                has: true
            }
        );
    }

    #[test]
    fn never_a_server_that_lacks_it_while_another_has_it() {
        // Only a down server has it: that server is named, not a healthy one without it.
        let views = [v(true, false, false, 0), v(false, true, true, 0)];
        assert_eq!(choose(&views, None), Choice::Down(1));
        // Nobody has it: the least busy healthy server (Ollama answers "not found").
        let views = [v(true, false, false, 2), v(true, false, false, 1)];
        assert_eq!(
            choose(&views, None),
            Choice::Server {
                index: 1,
                has: false
            }
        );
    }

    #[test]
    fn allowed_models_skip_and_all_down() {
        let mut views = [v(true, true, true, 0), v(true, true, false, 0)];
        views[0].allowed = false;
        assert_eq!(
            choose(&views, None),
            Choice::Server {
                index: 1,
                has: true
            }
        );
        assert_eq!(choose(&views, Some(1)), Choice::NoServer);
        let views = [v(true, true, false, 0), v(true, true, false, 0)];
        assert_eq!(
            choose(&views, Some(0)),
            Choice::Server {
                index: 1,
                has: true
            }
        );
        let views = [v(false, false, false, 0), v(false, false, false, 0)];
        assert_eq!(choose(&views, None), Choice::Down(0));
    }
}
