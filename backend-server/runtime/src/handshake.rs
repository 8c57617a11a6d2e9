//! What every listener that runs TLS handshakes itself needs against
//! scanners and floods (the backend server's gRPC port, the coordinator's
//! tunnel port): handshakes in progress bounded in all ([`MAX_HANDSHAKES`])
//! and per peer address ([`MAX_HANDSHAKES_PER_PEER`]), so a peer opening
//! connections it never finishes cannot use up the file descriptors or
//! crowd out a legitimate peer from another address; and refusals logged at
//! most [`LOG_BURST`] lines a minute, the lines held back counted in the
//! next one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one address.
pub const MAX_HANDSHAKES_PER_PEER: usize = 32;
/// Longest a peer may take for the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals logged per minute.
pub const LOG_BURST: u32 = 10;

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Handshakes in progress, in all and per address.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    in_flight: Arc<Mutex<InFlight>>,
}

/// A handshake slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    in_flight: Arc<Mutex<InFlight>>,
    peer: IpAddr,
}

impl Slots {
    /// A slot for a handshake from `peer`, or `None` over the bounds.
    pub fn take(&self, peer: IpAddr) -> Option<Slot> {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mine = f.per_peer.get(&peer).copied().unwrap_or(0);
        if f.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        f.total += 1;
        f.per_peer.insert(peer, mine + 1);
        Some(Slot {
            in_flight: self.in_flight.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        f.total = f.total.saturating_sub(1);
        if let Some(n) = f.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                f.per_peer.remove(&self.peer);
            }
        }
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    held_back: u64,
}

/// Logs refusals, at most [`LOG_BURST`] lines a minute.
#[derive(Debug, Clone)]
pub struct RefusalLog {
    what: &'static str,
    window: Arc<Mutex<Window>>,
}

impl RefusalLog {
    /// A log whose lines say `what` was refused (for example "tls
    /// handshake refused").
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            window: Arc::new(Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                held_back: 0,
            })),
        }
    }

    /// Logs one refusal at info, unless this minute's lines are used up.
    pub fn refused(&self, peer: SocketAddr, reason: &str, detail: &str) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() >= Duration::from_secs(60) {
            w.started = Instant::now();
            w.logged = 0;
        }
        if w.logged >= LOG_BURST {
            w.held_back += 1;
            return;
        }
        w.logged += 1;
        let held_back = std::mem::take(&mut w.held_back);
        drop(w);
        tracing::info!(%peer, reason, detail, held_back, "{}", self.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_peer_and_given_back_on_drop() {
        let slots = Slots::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..MAX_HANDSHAKES_PER_PEER)
            .map(|_| slots.take(a).unwrap())
            .collect();
        assert!(slots.take(a).is_none(), "one peer cannot take more");
        assert!(slots.take(b).is_some(), "another peer still can");
        drop(held);
        assert!(slots.take(a).is_some());
    }
}
