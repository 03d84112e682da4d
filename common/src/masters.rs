//! The set of master addresses a client or chunkserver talks to, following
//! the Raft leader.
//!
//! The master is a Raft group of 1, 3 or 5 replicas; only the leader serves
//! mutations, leases and heartbeats, and a follower answers
//! [`Error::NotLeader`] with the leader's address when it knows it. A
//! [`MasterSet`] is built from a spec:
//!
//! - a comma-separated list `h1:p1,h2:p2,h3:p3`, or
//! - one `name:port` whose DNS name resolves to several addresses (a
//!   Kubernetes headless Service). The name is resolved on first use and
//!   again when every known address failed, at most once per
//!   [`RESOLVE_INTERVAL`].
//!
//! [`MasterSet::current`] is the address to try now: the last known leader,
//! else the next candidate in round-robin order. Callers report what
//! happened with `note_*`, which only moves the set when the report is about
//! the address the set currently points to, so that concurrent callers with
//! older news do not undo a newer switch.
//!
//! Cheap to clone; clones share state.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Shortest time between two DNS resolutions of the spec's name.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// Deadline of one DNS resolution.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most addresses kept; leader hints beyond it replace the oldest hint.
const MAX_ADDRS: usize = 32;

/// Where an address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Listed in the spec (or the unresolved DNS name itself).
    Spec,
    /// From resolving the spec's DNS name.
    Dns,
    /// A leader hint from a `NotLeader` answer.
    Hint,
}

#[derive(Debug, Clone)]
struct Entry {
    addr: String,
    origin: Origin,
}

#[derive(Debug)]
struct State {
    addrs: Vec<Entry>,
    /// Last master that answered successfully, or the latest leader hint.
    leader: Option<String>,
    /// Next round-robin candidate (index into `addrs`) when no leader is known.
    cursor: usize,
    /// Addresses that failed (unreachable) since the last success or resolution.
    failed: HashSet<String>,
    /// When the DNS name was last resolved (or a resolution started).
    resolved_at: Option<Instant>,
    /// Some master answered (success or `NotLeader`) at least once.
    answered: bool,
}

#[derive(Debug)]
struct Inner {
    spec: String,
    /// `name:port` when the spec is a single DNS name.
    dns: Option<String>,
    state: Mutex<State>,
}

/// Master addresses that follow the leader. See the module docs.
#[derive(Debug, Clone)]
pub struct MasterSet {
    inner: Arc<Inner>,
}

/// Checks one `host:port` entry and returns it normalised (`http://`
/// dropped, surrounding spaces trimmed), plus whether the host is an IP
/// literal.
fn parse_entry(raw: &str) -> Result<(String, bool)> {
    let entry = raw.trim();
    let bad = |why: &str| Error::InvalidArgument(format!("bad master address {entry:?}: {why}"));
    if entry.is_empty() {
        return Err(bad("empty entry (expected host:port[,host:port...])"));
    }
    let (addr, rest) = match entry.strip_prefix("http://") {
        Some(r) => (r.to_string(), r),
        None => (entry.to_string(), entry.strip_prefix("https://").unwrap_or(entry)),
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("missing port (expected host:port)"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if port.is_empty() {
        return Err(bad("missing port (expected host:port)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("port must be a number 1-65535")),
    }
    let uri = if rest.len() == entry.len() { format!("http://{entry}") } else { entry.to_string() };
    tonic::transport::Endpoint::from_shared(uri).map_err(|e| bad(&e.to_string()))?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Ok((addr, bare.parse::<IpAddr>().is_ok()))
}

impl MasterSet {
    /// Parses a spec: `h1:p1,h2:p2,...` or one `name:port` to resolve.
    /// Entries may carry an `http://` prefix. Fails with `InvalidArgument`
    /// naming the bad entry (empty, no port, bad port).
    pub fn parse(spec: &str) -> Result<MasterSet> {
        if spec.trim().is_empty() {
            return Err(Error::InvalidArgument("master address is empty (expected host:port[,host:port...])".into()));
        }
        let mut addrs: Vec<Entry> = Vec::new();
        let mut ip_literal = true;
        for raw in spec.split(',') {
            let (addr, ip) = parse_entry(raw)?;
            ip_literal = ip;
            if !addrs.iter().any(|e| e.addr == addr) {
                addrs.push(Entry { addr, origin: Origin::Spec });
            }
        }
        let dns =
            (addrs.len() == 1 && !ip_literal && !addrs[0].addr.starts_with("https://")).then(|| addrs[0].addr.clone());
        Ok(MasterSet {
            inner: Arc::new(Inner {
                spec: spec.trim().to_string(),
                dns,
                state: Mutex::new(State {
                    addrs,
                    leader: None,
                    cursor: 0,
                    failed: HashSet::new(),
                    resolved_at: None,
                    answered: false,
                }),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("master set lock")
    }

    /// The spec this set was built from.
    pub fn spec(&self) -> &str {
        &self.inner.spec
    }

    /// The DNS name (`name:port`) this set resolves, if the spec is one.
    pub fn dns_name(&self) -> Option<&str> {
        self.inner.dns.as_deref()
    }

    /// The address to try now: the last known leader, else the next
    /// candidate in round-robin order.
    pub fn current(&self) -> String {
        let st = self.state();
        if let Some(l) = &st.leader {
            return l.clone();
        }
        st.addrs[st.cursor % st.addrs.len()].addr.clone()
    }

    /// The last master that answered (or the latest leader hint), if any.
    pub fn leader(&self) -> Option<String> {
        self.state().leader.clone()
    }

    /// Every known address, in round-robin order.
    pub fn all(&self) -> Vec<String> {
        self.state().addrs.iter().map(|e| e.addr.clone()).collect()
    }

    /// Number of known addresses (at least 1).
    pub fn len(&self) -> usize {
        self.state().addrs.len()
    }

    /// Always false: a set holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `tried` answered: remember it as the leader.
    pub fn note_success(&self, addr: &str) {
        let addr = normalize(addr);
        let mut st = self.state();
        st.failed.clear();
        st.answered = true;
        if let Some(i) = st.addrs.iter().position(|e| e.addr == addr) {
            st.cursor = i;
        }
        st.leader = Some(addr);
    }

    /// `tried` is not the leader. With a hint, switch to it (adding it when
    /// it is new, e.g. after a membership change); without one (election in
    /// progress), rotate to the next address.
    pub fn note_not_leader(&self, tried: &str, leader_hint: Option<&str>) {
        let tried = normalize(tried);
        let hint = leader_hint.and_then(|h| match parse_entry(h) {
            Ok((addr, _)) => Some(addr),
            Err(e) => {
                tracing::debug!(hint = h, error = %e, "ignoring a bad leader hint");
                None
            }
        });
        let mut st = self.state();
        st.answered = true;
        st.failed.remove(&tried);
        if let Some(h) = hint.filter(|h| *h != tried) {
            let i = st.add(h.clone(), Origin::Hint);
            // A hint is news about the leader: follow it unless the set
            // already moved on to something that is neither `tried` nor it.
            if st.points_at(&tried) || st.leader.is_none() {
                st.leader = Some(h);
                st.cursor = i;
            }
            return;
        }
        if st.points_at(&tried) {
            st.rotate_past(&tried);
        }
    }

    /// `tried` could not be reached: rotate to the next address.
    pub fn note_unreachable(&self, tried: &str) {
        let tried = normalize(tried);
        let mut st = self.state();
        st.failed.insert(tried.clone());
        if st.points_at(&tried) {
            st.rotate_past(&tried);
        }
    }

    /// True once any master answered (a success or `NotLeader`): the
    /// addresses lead to a master group, so failures are worth waiting out.
    pub fn ever_answered(&self) -> bool {
        self.state().answered
    }

    /// True when every known address failed since the last success or
    /// resolution.
    pub fn all_failed(&self) -> bool {
        let st = self.state();
        st.addrs.iter().all(|e| st.failed.contains(&e.addr))
    }

    /// For a DNS-name spec, resolves the name when it never was, or when
    /// every known address failed and the last resolution is at least
    /// [`RESOLVE_INTERVAL`] old. A failed resolution keeps the current
    /// addresses. Cheap (no I/O) otherwise.
    pub async fn refresh(&self) {
        let Some(name) = self.inner.dns.as_deref() else {
            return;
        };
        {
            let mut st = self.state();
            let due = match st.resolved_at {
                None => true,
                Some(t) => t.elapsed() >= RESOLVE_INTERVAL && st.addrs.iter().all(|e| st.failed.contains(&e.addr)),
            };
            if !due {
                return;
            }
            // Claim this resolution so concurrent callers do not repeat it.
            st.resolved_at = Some(Instant::now());
        }
        let resolved = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name)).await {
            Ok(Ok(it)) => {
                let mut v: Vec<String> = Vec::new();
                for a in it {
                    let s = a.to_string();
                    if !v.contains(&s) {
                        v.push(s);
                    }
                }
                v
            }
            Ok(Err(e)) => {
                tracing::debug!(name, error = %e, "cannot resolve the master address");
                return;
            }
            Err(_) => {
                tracing::debug!(name, "resolving the master address timed out");
                return;
            }
        };
        if resolved.is_empty() {
            return;
        }
        let mut st = self.state();
        st.replace_resolved(resolved);
    }
}

impl State {
    /// True when `addr` is what `current()` returns.
    fn points_at(&self, addr: &str) -> bool {
        match &self.leader {
            Some(l) => l == addr,
            None => self.addrs[self.cursor % self.addrs.len()].addr == addr,
        }
    }

    /// Forgets the leader and moves the cursor to the address after `addr`.
    fn rotate_past(&mut self, addr: &str) {
        self.leader = None;
        let n = self.addrs.len();
        self.cursor = match self.addrs.iter().position(|e| e.addr == addr) {
            Some(i) => (i + 1) % n,
            None => (self.cursor + 1) % n,
        };
    }

    /// Adds `addr` if it is new; returns its index.
    fn add(&mut self, addr: String, origin: Origin) -> usize {
        if let Some(i) = self.addrs.iter().position(|e| e.addr == addr) {
            return i;
        }
        if self.addrs.len() >= MAX_ADDRS
            && let Some(i) =
                self.addrs.iter().position(|e| e.origin == Origin::Hint && Some(&e.addr) != self.leader.as_ref())
        {
            self.addrs.remove(i);
            if self.cursor > i {
                self.cursor -= 1;
            }
        }
        self.addrs.push(Entry { addr, origin });
        self.addrs.len() - 1
    }

    /// Replaces the name (or the previous resolution) with `resolved`,
    /// keeping leader hints. The leader stays if it is still known.
    fn replace_resolved(&mut self, resolved: Vec<String>) {
        let current = self.leader.clone().unwrap_or_else(|| self.addrs[self.cursor % self.addrs.len()].addr.clone());
        let hints: Vec<Entry> =
            self.addrs.iter().filter(|e| e.origin == Origin::Hint && !resolved.contains(&e.addr)).cloned().collect();
        self.addrs = resolved.into_iter().map(|addr| Entry { addr, origin: Origin::Dns }).collect();
        self.addrs.extend(hints);
        self.addrs.truncate(MAX_ADDRS);
        self.failed.clear();
        match self.addrs.iter().position(|e| e.addr == current) {
            Some(i) => self.cursor = i,
            None => {
                self.leader = None;
                self.cursor = 0;
            }
        }
    }
}

/// Drops an `http://` prefix so hints and spec entries compare equal.
fn normalize(addr: &str) -> String {
    let a = addr.trim();
    a.strip_prefix("http://").unwrap_or(a).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let s = MasterSet::parse("a:1, b:2,http://c:3,[::1]:4,10.0.0.1:5").unwrap();
        assert_eq!(s.all(), vec!["a:1", "b:2", "c:3", "[::1]:4", "10.0.0.1:5"]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.dns_name(), None);
        assert_eq!(s.current(), "a:1");
        // Duplicates collapse.
        assert_eq!(MasterSet::parse("a:1,a:1").unwrap().all(), vec!["a:1"]);
        // One IP literal is not a DNS name.
        assert_eq!(MasterSet::parse("127.0.0.1:9700").unwrap().dns_name(), None);
        assert_eq!(MasterSet::parse("[::1]:9700").unwrap().dns_name(), None);
        assert_eq!(MasterSet::parse("gfs-master.ns.svc:9700").unwrap().dns_name(), Some("gfs-master.ns.svc:9700"));
    }

    #[test]
    fn rejects_bad_specs() {
        for (bad, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("a:1,,b:2", "empty entry"),
            ("a:1,", "empty entry"),
            ("nohost", "missing port"),
            ("h:", "missing port"),
            (":80", "empty host"),
            ("h:notaport", "port must be"),
            ("h:99999", "port must be"),
            ("h:0", "port must be"),
            ("a:1,b", "missing port"),
        ] {
            match MasterSet::parse(bad) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(why), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        match MasterSet::parse("a:1,b:x") {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("\"b:x\""), "names the entry: {m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rotates_on_failures() {
        let s = MasterSet::parse("a:1,b:2,c:3").unwrap();
        assert_eq!(s.current(), "a:1");
        s.note_unreachable("a:1");
        assert!(!s.ever_answered());
        assert_eq!(s.current(), "b:2");
        s.note_not_leader("b:2", None);
        assert_eq!(s.current(), "c:3");
        s.note_unreachable("c:3");
        assert_eq!(s.current(), "a:1");
        // A stale report about an address the set no longer points at is ignored.
        s.note_unreachable("c:3");
        assert_eq!(s.current(), "a:1");
        assert!(!s.all_failed(), "b answered NotLeader, so it is not failed");
        assert!(s.ever_answered());
        s.note_unreachable("a:1");
        s.note_unreachable("b:2");
        assert!(s.all_failed());
        s.note_success("c:3");
        assert!(!s.all_failed());
    }

    #[test]
    fn success_pins_the_leader() {
        let s = MasterSet::parse("a:1,b:2,c:3").unwrap();
        s.note_success("b:2");
        assert_eq!(s.current(), "b:2");
        assert_eq!(s.current(), "b:2");
        assert_eq!(s.leader().as_deref(), Some("b:2"));
        // The leader died: go on with the next one.
        s.note_unreachable("b:2");
        assert_eq!(s.leader(), None);
        assert_eq!(s.current(), "c:3");
    }

    #[test]
    fn follows_hints() {
        let s = MasterSet::parse("a:1,b:2,c:3").unwrap();
        s.note_not_leader("a:1", Some("c:3"));
        assert_eq!(s.current(), "c:3");
        assert_eq!(s.len(), 3);
        // A hint to a master not in the set (membership change) adds it.
        s.note_not_leader("c:3", Some("d:4"));
        assert_eq!(s.current(), "d:4");
        assert_eq!(s.all(), vec!["a:1", "b:2", "c:3", "d:4"]);
        // http:// hints compare equal to bare entries.
        s.note_not_leader("d:4", Some("http://a:1"));
        assert_eq!(s.current(), "a:1");
        assert_eq!(s.len(), 4);
        // A hint naming the master that answered is no hint: rotate.
        s.note_not_leader("a:1", Some("a:1"));
        assert_eq!(s.current(), "b:2");
        // A bad hint is ignored (rotate as without a hint).
        s.note_not_leader("b:2", Some("garbage"));
        assert_eq!(s.current(), "c:3");
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn stale_news_does_not_undo_a_switch() {
        let s = MasterSet::parse("a:1,b:2,c:3").unwrap();
        s.note_success("b:2");
        // A caller that started on a:1 earlier reports it not leader, with
        // an old hint: the set already points at b:2 and stays there.
        s.note_not_leader("a:1", Some("c:3"));
        assert_eq!(s.current(), "b:2");
        s.note_not_leader("a:1", None);
        assert_eq!(s.current(), "b:2");
    }

    #[test]
    fn hints_are_bounded() {
        let s = MasterSet::parse("a:1").unwrap();
        for i in 0..100u16 {
            let tried = s.current();
            s.note_not_leader(&tried, Some(&format!("h{i}:{}", i + 1)));
        }
        assert!(s.len() <= MAX_ADDRS, "{}", s.len());
        assert_eq!(s.current(), "h99:100");
        assert!(s.all().contains(&"a:1".to_string()), "spec entries stay");
    }

    #[tokio::test]
    async fn dns_name_resolves_to_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = MasterSet::parse(&format!("localhost:{port}")).unwrap();
        assert_eq!(s.dns_name(), Some(format!("localhost:{port}").as_str()));
        assert_eq!(s.all(), vec![format!("localhost:{port}")]);
        s.refresh().await;
        let all = s.all();
        assert!(all.contains(&format!("127.0.0.1:{port}")), "{all:?}");
        assert!(!all.contains(&format!("localhost:{port}")), "{all:?}");
        // Not due again while nothing failed.
        s.note_not_leader(&s.current(), Some("other:5"));
        s.refresh().await;
        assert!(s.all().contains(&"other:5".to_string()));
        // Every address failed, but the last resolution is too recent.
        for a in s.all() {
            s.note_unreachable(&a);
        }
        assert!(s.all_failed());
        s.refresh().await;
        assert!(s.all_failed(), "resolved again within {RESOLVE_INTERVAL:?}");
        // After the interval it resolves again, keeping the hint.
        tokio::time::sleep(RESOLVE_INTERVAL + Duration::from_millis(50)).await;
        s.refresh().await;
        assert!(!s.all_failed());
        let all = s.all();
        assert!(all.contains(&format!("127.0.0.1:{port}")) && all.contains(&"other:5".to_string()), "{all:?}");
    }

    #[tokio::test]
    async fn unresolvable_name_keeps_the_name() {
        let s = MasterSet::parse("no-such-host.invalid:9700").unwrap();
        s.refresh().await;
        assert_eq!(s.all(), vec!["no-such-host.invalid:9700"]);
        assert_eq!(s.current(), "no-such-host.invalid:9700");
    }
}
