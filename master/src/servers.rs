//! Registry of chunkservers and the liveness worker.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gfs_common::shutdown::CancellationToken;
use gfs_common::{Error, Result};
use gfs_proto::ServerInfo;
use tokio::time::Instant;
use tracing::warn;

use crate::placement::Candidate;
use crate::state::Shared;

/// Window over which recent creations are counted.
pub const CREATION_WINDOW: Duration = Duration::from_secs(10);

/// What the master knows about one chunkserver.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    /// Id, address, zone.
    pub info: ServerInfo,
    /// Disk capacity.
    pub capacity: u64,
    /// Used bytes.
    pub used: u64,
    /// Free bytes of its data disk as last reported (None: not reported).
    pub free: Option<u64>,
    /// Reported its free space below its reserve: no new replicas go there.
    pub full: bool,
    /// Its data dir's file system (`RegisterRequest.disk_id`); empty: a
    /// disk of its own.
    pub disk_id: String,
    /// In-flight requests at the last heartbeat.
    pub load: u32,
    /// Time of the last register or heartbeat.
    pub last_heartbeat: Instant,
    /// False once declared dead.
    pub alive: bool,
    /// Declared lost by an admin (`mark-lost`); cleared when it registers.
    pub lost: bool,
    /// Chunks this server holds at the current version.
    pub chunks: HashSet<u64>,
    /// Creation times within the window.
    recent: VecDeque<Instant>,
    /// Handles to tell this server to delete.
    pub pending_delete: BTreeSet<u64>,
    /// Changes this server acknowledged (grant, clone): handle -> its report
    /// sequence right after the change. A report built at a lower sequence
    /// predates the change and says nothing about that chunk.
    pub acks: HashMap<u64, u64>,
    /// Secret of this registration (`RegisterResponse.session`); empty for
    /// an entry not made by a Register (a follower's copy), which no call
    /// can match.
    pub session: String,
}

impl ServerEntry {
    /// Records that the server acknowledged a change to `handle` at `seq`.
    pub fn note_ack(&mut self, handle: u64, seq: u64) {
        let e = self.acks.entry(handle).or_default();
        *e = (*e).max(seq);
    }

    /// True when a report built at `seq` predates a change to `handle`.
    pub fn report_predates(&self, handle: u64, seq: u64) -> bool {
        self.acks.get(&handle).is_some_and(|a| *a > seq)
    }

    /// Forgets acknowledgements that a report built at `seq` covers.
    pub fn prune_acks(&mut self, seq: u64) {
        self.acks.retain(|_, a| *a > seq);
    }
}

/// All known chunkservers.
#[derive(Debug, Default)]
pub struct ServerRegistry {
    servers: HashMap<String, ServerEntry>,
}

impl ServerRegistry {
    /// Records a (re-)registration; the chunk set starts empty, the
    /// acknowledgements not yet covered by a report are kept.
    pub fn register(&mut self, info: ServerInfo, capacity: u64, used: u64, now: Instant) -> &mut ServerEntry {
        let id = info.id.clone();
        let acks = self.servers.get_mut(&id).map(|e| std::mem::take(&mut e.acks)).unwrap_or_default();
        let e = ServerEntry {
            info,
            capacity,
            used,
            free: None,
            full: false,
            disk_id: String::new(),
            load: 0,
            last_heartbeat: now,
            alive: true,
            lost: false,
            chunks: HashSet::new(),
            recent: VecDeque::new(),
            pending_delete: BTreeSet::new(),
            acks,
            session: String::new(),
        };
        self.servers.insert(id.clone(), e);
        self.servers.get_mut(&id).expect("just inserted")
    }

    /// Marks a server heard from now, keeping what it holds (a follower
    /// refreshing the leader's live list). One unknown or dead here is
    /// registered anew, holding nothing.
    pub fn refresh(&mut self, info: ServerInfo, now: Instant) {
        match self.servers.get_mut(&info.id) {
            Some(e) if e.alive => {
                e.info = info;
                e.last_heartbeat = now;
            }
            _ => {
                self.register(info, 0, 0, now);
            }
        }
    }

    /// Returns a server.
    pub fn get(&self, id: &str) -> Option<&ServerEntry> {
        self.servers.get(id)
    }

    /// Returns a server for update.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut ServerEntry> {
        self.servers.get_mut(id)
    }

    /// Refuses `info` taking its id while another address holds it and was
    /// heard from within `dead_after` (a second process claiming a live
    /// server's id would take over its replicas). The same address (a
    /// restart) and a dead or silent holder may be replaced.
    ///
    /// Also refuses a second live id at one address: requests for either
    /// would reach whichever process the address leads to. This is how a
    /// replaced server stays fenced: after a partition, the old process
    /// of a pod that was recreated elsewhere (same DNS name, new id)
    /// cannot register again while its successor is alive.
    ///
    /// Only a holder still talking (a heartbeat within `talking`, a few
    /// heartbeat periods) keeps the address: a successor whose predecessor
    /// went silent takes it at once (see [`Self::retire_at`]) rather than
    /// after the whole `dead_after`, so a pod recreated with an empty
    /// volume serves within seconds.
    pub fn check_claim(&self, info: &ServerInfo, now: Instant, dead_after: Duration, talking: Duration) -> Result<()> {
        let talking = talking.min(dead_after);
        let live = |h: &ServerEntry| h.alive && now.saturating_duration_since(h.last_heartbeat) <= talking;
        if let Some(h) =
            self.servers.values().find(|h| h.info.id != info.id && h.info.address == info.address && live(h))
        {
            return Err(Error::InvalidArgument(format!(
                "address {} belongs to live chunkserver {}; chunkserver {} cannot register there (the old process of a replaced server?)",
                info.address, h.info.id, info.id
            )));
        }
        match self.servers.get(&info.id) {
            Some(h)
                if h.alive
                    && h.info.address != info.address
                    && now.saturating_duration_since(h.last_heartbeat) <= dead_after =>
            {
                Err(Error::ServerIdInUse { id: info.id.clone(), holder: h.info.address.clone() })
            }
            _ => Ok(()),
        }
    }

    /// True when `session` is the registration secret of live server `id`.
    pub fn session_ok(&self, id: &str, session: &str) -> bool {
        self.servers.get(id).is_some_and(|s| s.alive && same_secret(&s.session, session))
    }

    /// True when the server is known and alive.
    pub fn is_alive(&self, id: &str) -> bool {
        self.servers.get(id).is_some_and(|s| s.alive)
    }

    /// Returns the `ServerInfo` of a live server.
    pub fn live_info(&self, id: &str) -> Option<ServerInfo> {
        self.servers.get(id).filter(|s| s.alive).map(|s| s.info.clone())
    }

    /// Iterates over every server.
    pub fn iter(&self) -> impl Iterator<Item = &ServerEntry> {
        self.servers.values()
    }

    /// Live servers with room as placement candidates (a server that
    /// reported itself full gets no new chunk: it could not grow it).
    pub fn candidates(&mut self, now: Instant) -> Vec<Candidate> {
        self.servers
            .values_mut()
            .filter(|s| s.alive && !s.full)
            .map(|s| {
                while s.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > CREATION_WINDOW) {
                    s.recent.pop_front();
                }
                Candidate {
                    id: s.info.id.clone(),
                    zone: s.info.zone.clone(),
                    capacity: s.capacity,
                    used: s.used,
                    recent_creations: s.recent.len() as u32,
                }
            })
            .collect()
    }

    /// Records the disk figures of a register or heartbeat.
    pub fn note_disk(&mut self, id: &str, capacity: u64, used: u64, free: Option<u64>, full: bool) {
        let Some(s) = self.servers.get_mut(id) else { return };
        if s.full != full {
            if full {
                warn!(server = %id, free = ?free, "chunkserver reports its disk full; no new replicas go there");
            } else {
                tracing::info!(server = %id, free = ?free, "chunkserver has free space again");
            }
        }
        (s.capacity, s.used, s.free, s.full) = (capacity, used, free, full);
    }

    /// Counts a chunk creation on `id`.
    pub fn note_creation(&mut self, id: &str, now: Instant) {
        if let Some(s) = self.servers.get_mut(id) {
            s.recent.push_back(now);
        }
    }

    /// Marks servers silent for longer than `dead_after` dead; returns each
    /// one with the chunks it held (to remove from replica sets).
    pub fn expire(&mut self, now: Instant, dead_after: Duration) -> Vec<(String, HashSet<u64>)> {
        self.mark_dead(|s| now.saturating_duration_since(s.last_heartbeat) > dead_after)
    }

    /// Marks the live servers `pick` selects dead; returns each one with
    /// the chunks it held.
    fn mark_dead(&mut self, pick: impl Fn(&ServerEntry) -> bool) -> Vec<(String, HashSet<u64>)> {
        let mut out = Vec::new();
        for s in self.servers.values_mut().filter(|s| s.alive && pick(s)) {
            s.alive = false;
            s.pending_delete.clear();
            out.push((s.info.id.clone(), std::mem::take(&mut s.chunks)));
        }
        out
    }
}

impl ServerRegistry {
    /// Finds a server by id or address.
    pub fn resolve(&self, server: &str) -> Option<String> {
        if self.servers.contains_key(server) {
            return Some(server.to_string());
        }
        self.servers.values().find(|s| s.info.address == server).map(|s| s.info.id.clone())
    }

    /// Declares dead every other live id at `address` (a predecessor that
    /// went silent, replaced by `id`); returns each with the chunks it held.
    pub fn retire_at(&mut self, address: &str, id: &str) -> Vec<(String, HashSet<u64>)> {
        self.mark_dead(|s| s.info.address == address && s.info.id != id)
    }

    /// Declares a server lost now; returns the chunks it held.
    pub fn mark_lost(&mut self, id: &str) -> HashSet<u64> {
        let Some(s) = self.servers.get_mut(id) else { return HashSet::new() };
        s.alive = false;
        s.lost = true;
        s.pending_delete.clear();
        std::mem::take(&mut s.chunks)
    }
}

/// Returns a new registration secret: 128 random bits, hex.
pub fn new_session() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Compares secrets in time independent of where they differ; an empty
/// secret matches nothing.
fn same_secret(have: &str, given: &str) -> bool {
    !have.is_empty()
        && have.len() == given.len()
        && have.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Background task that declares silent chunkservers dead.
pub struct LivenessWorker {
    shared: Arc<Shared>,
}

impl LivenessWorker {
    /// A worker over the master state.
    pub fn new(shared: Arc<Shared>) -> Self {
        LivenessWorker { shared }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let dead_after = Duration::from_millis(self.shared.cfg.dead_after_ms);
        let tick = (dead_after / 4).max(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let mut meta = self.shared.meta();
            let dead = meta.servers.expire(Instant::now(), dead_after);
            for (id, chunks) in &dead {
                warn!(server = %id, chunks = chunks.len(), "chunkserver declared dead");
            }
            meta.drop_replicas_of(dead);
        }
    }
}

impl crate::state::Meta {
    /// Takes dead servers (from `expire` or `retire_at`) out of the replica
    /// sets of the chunks they held.
    pub fn drop_replicas_of(&mut self, dead: Vec<(String, HashSet<u64>)>) {
        for (id, chunks) in dead {
            for h in chunks {
                if let Some(c) = self.chunks.get_mut(h) {
                    c.replicas.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expire_marks_dead_and_returns_chunks() {
        let mut r = ServerRegistry::default();
        let info = ServerInfo { id: "s1".into(), address: "x:1".into(), zone: "z".into() };
        r.register(info, 100, 0, Instant::now()).chunks.insert(7);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(r.expire(Instant::now(), Duration::from_secs(1)).is_empty());
        tokio::time::advance(Duration::from_millis(600)).await;
        let dead = r.expire(Instant::now(), Duration::from_secs(1));
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.contains(&7));
        assert!(!r.is_alive("s1"));
        assert!(r.candidates(Instant::now()).is_empty());
        assert!(r.live_info("s1").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_is_taken_over_only_from_its_address_or_once_its_holder_is_silent() {
        let mut r = ServerRegistry::default();
        let dead_after = Duration::from_secs(1);
        let at = |addr: &str| ServerInfo { id: "s1".into(), address: addr.into(), zone: "z".into() };
        r.register(at("x:1"), 100, 0, Instant::now()).session = new_session();
        let e = r.check_claim(&at("y:2"), Instant::now(), dead_after, dead_after).unwrap_err();
        assert_eq!(e, Error::ServerIdInUse { id: "s1".into(), holder: "x:1".into() });
        r.check_claim(&at("x:1"), Instant::now(), dead_after, dead_after).unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        r.check_claim(&at("y:2"), Instant::now(), dead_after, dead_after).unwrap();
        let session = r.get("s1").unwrap().session.clone();
        assert!(r.session_ok("s1", &session));
        assert!(!r.session_ok("s1", "") && !r.session_ok("s1", &new_session()) && !r.session_ok("s2", &session));
        assert!(!same_secret("", ""));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_has_one_live_id() {
        let mut r = ServerRegistry::default();
        let (dead_after, talking) = (Duration::from_secs(60), Duration::from_secs(3));
        let id = |id: &str| ServerInfo { id: id.into(), address: "pod-0.svc:9800".into(), zone: "z".into() };
        r.register(id("new"), 100, 0, Instant::now());
        r.get_mut("new").unwrap().chunks.insert(7);
        let e = r.check_claim(&id("old"), Instant::now(), dead_after, talking).unwrap_err();
        assert!(e.to_string().contains("belongs to live chunkserver new"), "{e}");
        r.check_claim(&id("new"), Instant::now(), dead_after, talking).unwrap();
        // A holder silent for a few heartbeats (long before dead_after)
        // gives the address up; the claim retires it with its chunks.
        tokio::time::advance(Duration::from_millis(3100)).await;
        r.check_claim(&id("old"), Instant::now(), dead_after, talking).unwrap();
        r.register(id("old"), 100, 0, Instant::now());
        let retired = r.retire_at("pod-0.svc:9800", "old");
        assert_eq!(retired.len(), 1);
        assert_eq!((retired[0].0.as_str(), retired[0].1.iter().copied().collect::<Vec<_>>()), ("new", vec![7]));
        assert!(!r.is_alive("new") && r.is_alive("old"));
        // And the retired one cannot come back while its successor talks.
        let e = r.check_claim(&id("new"), Instant::now(), dead_after, talking).unwrap_err();
        assert!(e.to_string().contains("belongs to live chunkserver old"), "{e}");
        r.mark_lost("old");
        r.check_claim(&id("new"), Instant::now(), dead_after, talking).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn full_servers_are_no_candidates() {
        let mut r = ServerRegistry::default();
        for id in ["s1", "s2"] {
            let info = ServerInfo { id: id.into(), address: format!("{id}:1"), zone: "z".into() };
            r.register(info, 100, 0, Instant::now());
        }
        r.note_disk("s1", 100, 90, Some(10), true);
        let ids: Vec<String> = r.candidates(Instant::now()).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["s2".to_string()]);
        r.note_disk("s1", 100, 10, Some(90), false);
        assert_eq!(r.candidates(Instant::now()).len(), 2);
    }
}
