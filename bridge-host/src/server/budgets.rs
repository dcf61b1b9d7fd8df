//! Keeps the token budgets' state file current (`limits::tokens`): checks at start, once
//! privileges are dropped, that the daemon can write it (a warning, never fatal: the
//! budgets then start empty after a restart), rewrites it every `SAVE_EVERY` while usage
//! changes, and once more at shutdown, after the last requests were charged.

use std::sync::Arc;

use tokio::sync::watch;

use crate::limits::tokens::SAVE_EVERY;
use crate::proxy::Shared;

/// Writes the state now; says so when it cannot.
fn save(shared: &Shared, force: bool, failing: &mut bool) {
    let path = shared
        .tokens
        .path()
        .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
    match shared.tokens.save(force) {
        Ok(wrote) => {
            if wrote && std::mem::take(failing) {
                tracing::info!(path = %path, "token budget state written again");
            }
        }
        Err(e) if !*failing => {
            *failing = true;
            let hint =
                crate::os::privileges::hint("make the audit log's directory writable by that user");
            tracing::warn!(path = %path, error = %e, "cannot write the token budget state: budgets will not survive a restart{hint}");
        }
        Err(_) => {}
    }
}

/// The saver: from start (a first write, to find out now whether it can) to `stop`,
/// then a last write.
pub async fn keep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    save(&shared, true, &mut failing);
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => save(&shared, false, &mut failing),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// The last write, once every request has been charged.
pub fn last(shared: &Shared) {
    let mut failing = false;
    save(shared, false, &mut failing);
}
