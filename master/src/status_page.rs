//! The master's status page: `GET /status` on the admin port, a small
//! read-only HTML view in the manner of the HDFS NameNode's web UI.
//!
//! It shows the cluster summary (files, chunks, space, repair backlog),
//! the masters with their roles and terms, the chunkservers with their
//! space and state, files with chunks short of replicas and the latest
//! repairs. Plain HTML and CSS, no scripts; it reloads itself every few
//! seconds. Every name on it (paths, addresses, zones) comes from callers
//! and servers and is escaped.
//!
//! A follower knows no chunkservers: its page names the leader and shows
//! the group only. On the leader, files short of replicas are found off
//! the metadata lock: the repair queue's handles (at most
//! [`MAX_QUEUED`]) and a frozen view of the namespace are taken under it,
//! and the walk over the view runs on a blocking thread and stops at
//! [`MAX_FILES`] files. That walk is O(files): its result is kept for
//! [`SHORT_FILES_TTL`] and one walk runs at a time ([`Recent`]), so many
//! viewers (or a reload loop) cost one walk per period, not one per load.

use std::collections::HashSet;
use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use gfs_proto::{ClusterStatusResponse, MasterInfo, MasterRole, RepairEvent, RepairReason, ServerState, ServerStatus};

use crate::namespace::{Node, Nodes};
use crate::state::Shared;

/// Path of the page on the admin port.
pub const PATH: &str = "/status";

/// Files short of replicas listed at most.
pub const MAX_FILES: usize = 50;

/// Queued handles looked for at most (the queue can hold every chunk of a
/// lost server).
pub const MAX_QUEUED: usize = 100_000;

/// Latest repairs shown.
const MAX_EVENTS: usize = 20;

/// Seconds between reloads.
const REFRESH_SECONDS: u32 = 5;

/// How long one walk for files short of replicas serves page loads.
pub const SHORT_FILES_TTL: Duration = Duration::from_secs(2);

/// A value made at most once per `ttl`: callers within it share the last
/// one, and a caller that finds it stale makes the next while later
/// callers wait for that instead of making their own.
pub struct Recent<T> {
    ttl: Duration,
    slot: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Recent<T> {
    /// An empty slot whose values serve for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Recent { ttl, slot: tokio::sync::Mutex::new(None) }
    }

    /// The value made within `ttl`, or a new one from `make`.
    pub async fn get_or_make<F, Fut>(&self, make: F) -> Arc<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = slot.as_ref()
            && at.elapsed() < self.ttl
        {
            return v.clone();
        }
        let v = Arc::new(make().await);
        *slot = Some((Instant::now(), v.clone()));
        v
    }
}

/// Files short of replicas as the page lists them, and whether more may be.
pub type ShortFiles = (Vec<ShortFile>, bool);

/// A file with chunks in the repair queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortFile {
    /// Its path (a deleted file's hidden path).
    pub path: String,
    /// Its chunks in the repair queue.
    pub short_chunks: usize,
    /// Its chunks.
    pub chunks: usize,
    /// Replicas wanted per chunk.
    pub replication: u32,
}

/// Files of `nodes` with a chunk in `queued`, in path order, at most `max`.
pub fn short_files(nodes: &Nodes, queued: &HashSet<u64>, max: usize) -> Vec<ShortFile> {
    let mut out = Vec::new();
    if queued.is_empty() {
        return out;
    }
    for (path, node) in nodes.iter() {
        let Node::File(f) = node else { continue };
        let short = f.chunks.iter().filter(|h| queued.contains(h)).count();
        if short > 0 {
            out.push(ShortFile {
                path: path.to_string(),
                short_chunks: short,
                chunks: f.chunks.len(),
                replication: f.replication,
            });
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

/// What the page shows on the leader.
struct LeaderView {
    cluster: ClusterStatusResponse,
    files: Vec<ShortFile>,
    /// More files than shown may be short.
    files_cut: bool,
    events: Vec<RepairEvent>,
}

/// Files short of replicas now: the repair queue and a frozen namespace
/// view are taken under the metadata lock, the walk runs off it.
async fn find_short_files(shared: &Shared) -> ShortFiles {
    let (nodes, queued) = {
        let meta = shared.meta();
        let queued: HashSet<u64> = meta.heal.index.queue().take(MAX_QUEUED + 1).collect();
        // An empty queue needs no walk (and no frozen view).
        if queued.is_empty() {
            return (Vec::new(), false);
        }
        (meta.ns.freeze(), queued)
    };
    let cut = queued.len() > MAX_QUEUED;
    let mut files =
        tokio::task::spawn_blocking(move || short_files(&nodes, &queued, MAX_FILES + 1)).await.unwrap_or_default();
    let more = cut || files.len() > MAX_FILES;
    files.truncate(MAX_FILES);
    (files, more)
}

/// Renders the page of this master; `short` keeps the last walk for files
/// short of replicas.
pub async fn render(shared: &Arc<Shared>, short: &Recent<ShortFiles>) -> String {
    let status = shared.group_view();
    let leader = if shared.is_leader() {
        let mut cluster = shared.cluster_status();
        cluster.masters = shared.masters().await;
        let found = short.get_or_make(|| find_short_files(shared)).await;
        let (files, files_cut) = (found.0.clone(), found.1);
        let mut events = shared.repair_events().events;
        events.sort_by_key(|e| std::cmp::Reverse(e.seq));
        events.truncate(MAX_EVENTS);
        Some(LeaderView { cluster, files, files_cut, events })
    } else {
        None
    };
    let this = status.this.clone().unwrap_or_default();
    let masters = match &leader {
        Some(l) => l.cluster.masters.clone(),
        None => status.members.clone(),
    };
    page(&this, &status.leader_address, &masters, leader.as_ref())
}

fn page(this: &MasterInfo, leader_address: &str, masters: &[MasterInfo], leader: Option<&LeaderView>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = writeln!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>gfs master {}</title><style>{STYLE}</style></head><body>",
        this.id
    );
    let _ = writeln!(
        h,
        "<header><h1>gfs</h1><span>master {} at {} &middot; {} &middot; term {} &middot; applied {}</span></header>",
        this.id,
        esc(&this.address),
        role_badge(this.role),
        this.term,
        this.last_applied
    );
    match leader {
        Some(l) => leader_sections(&mut h, masters, l),
        None => {
            let _ = writeln!(
                h,
                "<section><h2>Not the leader</h2><p id=\"follower\">This master follows; the cluster's \
                 chunkservers, files and repairs are shown on the leader's page{}.</p></section>",
                if leader_address.is_empty() {
                    " (no leader is known right now)".to_string()
                } else {
                    format!(" (leader: {})", esc(leader_address))
                }
            );
            masters_section(&mut h, masters);
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn leader_sections(h: &mut String, masters: &[MasterInfo], l: &LeaderView) {
    let c = &l.cluster;
    let live = c.servers.iter().filter(|s| s.alive).count();
    let _ = writeln!(
        h,
        "<section><h2>Summary</h2><dl class=\"summary\">\
         <div><dt>Files</dt><dd id=\"files\">{}</dd></div>\
         <div><dt>Directories</dt><dd>{}</dd></div>\
         <div><dt>Chunks</dt><dd id=\"chunks\">{}</dd></div>\
         <div><dt>Chunkservers live</dt><dd id=\"live\">{live} of {}</dd></div>\
         <div><dt>Space used</dt><dd>{} of {}</dd></div>\
         <div><dt>Chunks short of replicas</dt><dd id=\"under\" class=\"{}\">{}</dd></div>\
         <div><dt>Repair backlog</dt><dd>{} ({} chunks), {} copies running</dd></div>\
         </dl></section>",
        c.file_count,
        c.directory_count,
        c.chunk_count,
        c.servers.len(),
        human(c.used_bytes),
        human(c.capacity_bytes),
        if c.under_replicated_chunks > 0 { "warn" } else { "ok" },
        c.under_replicated_chunks,
        human(c.replication_backlog_bytes),
        c.replication_backlog_chunks,
        c.active_clones,
    );
    masters_section(h, masters);
    h.push_str(
        "<section><h2>Chunkservers</h2><table id=\"chunkservers\"><thead><tr><th>Id</th><th>Address</th>\
         <th>Zone</th><th>State</th><th>Capacity</th><th>Used</th><th>Free</th><th>Chunks</th>\
         <th>Last heartbeat</th></tr></thead><tbody>\n",
    );
    for s in &c.servers {
        server_row(h, s);
    }
    h.push_str("</tbody></table></section>\n");
    let _ = write!(h, "<section><h2>Files short of replicas</h2>");
    if l.files.is_empty() {
        h.push_str("<p id=\"no-short-files\">None: every chunk has its replicas.</p>");
    } else {
        h.push_str(
            "<table id=\"short-files\"><thead><tr><th>Path</th><th>Chunks short</th><th>Replication</th>\
             </tr></thead><tbody>\n",
        );
        for f in &l.files {
            let _ = writeln!(
                h,
                "<tr><td class=\"path\">{}</td><td>{} of {}</td><td>{}</td></tr>",
                esc(&f.path),
                f.short_chunks,
                f.chunks,
                f.replication
            );
        }
        h.push_str("</tbody></table>");
        if l.files_cut {
            let _ = write!(h, "<p>The first {MAX_FILES} files are shown; `gfs fsck /` lists them all.</p>");
        }
    }
    h.push_str("</section>\n<section><h2>Latest repairs</h2>");
    if l.events.is_empty() {
        h.push_str("<p id=\"no-repairs\">No repairs since this master leads.</p>");
    } else {
        h.push_str(
            "<table id=\"repairs\"><thead><tr><th>#</th><th>Chunk</th><th>Reason</th><th>From</th><th>To</th>\
             <th>Bytes</th><th>Outcome</th></tr></thead><tbody>\n",
        );
        for e in &l.events {
            let reason = match RepairReason::try_from(e.reason) {
                Ok(RepairReason::Replicate) => "re-replicate",
                Ok(RepairReason::Rebalance) => "rebalance",
                Ok(RepairReason::Hot) => "hot chunk",
                _ => "other",
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{:#x}</td><td>{reason}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.seq,
                e.handle,
                esc(&e.source),
                esc(&e.target),
                human(e.bytes),
                if e.ok { "<span class=\"badge ok\">done</span>" } else { "<span class=\"badge bad\">failed</span>" }
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");
}

fn masters_section(h: &mut String, masters: &[MasterInfo]) {
    h.push_str(
        "<section><h2>Masters</h2><table id=\"masters\"><thead><tr><th>Id</th><th>Address</th><th>Role</th>\
         <th>Term</th><th>Applied</th><th>Voter</th></tr></thead><tbody>\n",
    );
    for m in masters {
        let role = if m.reachable || m.role != MasterRole::Unspecified as i32 {
            role_badge(m.role)
        } else {
            "<span class=\"badge bad\">unreachable</span>".to_string()
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{role}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.id,
            esc(&m.address),
            m.term,
            m.last_applied,
            if m.voter { "yes" } else { "no" }
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn server_row(h: &mut String, s: &ServerStatus) {
    let info = s.server.clone().unwrap_or_default();
    let state = ServerState::try_from(s.state).unwrap_or(ServerState::Unspecified);
    let badge = match (state, s.alive) {
        (ServerState::Decommissioning, _) => "<span class=\"badge warn\">draining</span>",
        (ServerState::Decommissioned, _) => "<span class=\"badge idle\">decommissioned</span>",
        (ServerState::Lost, _) => "<span class=\"badge bad\">lost</span>",
        (_, false) => "<span class=\"badge bad\">dead</span>",
        (_, true) if s.full => "<span class=\"badge warn\">full</span>",
        (_, true) => "<span class=\"badge ok\">live</span>",
    };
    let _ = writeln!(
        h,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{badge}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{:.1} s ago</td></tr>",
        esc(&info.id),
        esc(&info.address),
        esc(&info.zone),
        human(s.capacity_bytes),
        human(s.used_bytes),
        human(s.free_bytes),
        s.chunk_count,
        s.last_heartbeat_ms_ago as f64 / 1000.0
    );
}

fn role_badge(role: i32) -> String {
    let (class, name) = match MasterRole::try_from(role) {
        Ok(MasterRole::Leader) => ("ok", "leader"),
        Ok(MasterRole::Follower) => ("idle", "follower"),
        Ok(MasterRole::Candidate) => ("warn", "candidate"),
        Ok(MasterRole::Learner) => ("idle", "learner"),
        Ok(MasterRole::Shutdown) => ("bad", "stopping"),
        _ => ("idle", "unknown"),
    };
    format!("<span class=\"badge {class}\">{name}</span>")
}

/// `text` with the five HTML-special characters escaped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes in binary units with one decimal ("1.5 GiB").
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Colours of the badges: the browser test looks for them in a screenshot.
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}\
header{background:#1d3557;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline}\
header h1{margin:0;font-size:20px}section{margin:16px 24px;background:#fff;border:1px solid #d9dde3;\
border-radius:6px;padding:8px 16px 16px}h2{font-size:16px}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef1}td.path{font-family:monospace;\
word-break:break-all}dl.summary{display:grid;grid-template-columns:repeat(4,1fr);gap:8px;margin:0}\
dl.summary dt{color:#5b6573;font-size:12px}dl.summary dd{margin:0;font-size:18px}dd.warn{color:#b9770e}\
.badge{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;font-size:12px}\
.badge.ok{background:#1e8449}.badge.bad{background:#c0392b}.badge.warn{background:#d68910}\
.badge.idle{background:#7f8c8d}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::FileMeta;

    #[test]
    fn escapes_what_callers_name() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let m = MasterInfo { id: 1, address: "<b>evil</b>:1".into(), ..Default::default() };
        let h = page(&m, "", std::slice::from_ref(&m), None);
        assert!(!h.contains("<b>evil"), "{h}");
        assert!(h.contains("&lt;b&gt;evil&lt;/b&gt;:1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recent_value_is_made_once_per_period_even_for_concurrent_callers() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let made = Arc::new(AtomicU32::new(0));
        let recent = Arc::new(Recent::new(Duration::from_secs(2)));
        let make = |made: Arc<AtomicU32>| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            made.fetch_add(1, Ordering::SeqCst) + 1
        };
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let (recent, made) = (recent.clone(), made.clone());
                tokio::spawn(async move { *recent.get_or_make(|| make(made)).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), 1, "every concurrent caller got the one value made");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(*recent.get_or_make(|| make(made.clone())).await, 1, "still fresh");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(*recent.get_or_make(|| make(made.clone())).await, 2, "stale: made again");
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn short_files_are_the_files_holding_queued_chunks() {
        let mut nodes = Nodes::new();
        let file = |chunks: Vec<u64>| {
            Node::File(FileMeta { replication: 3, chunk_size: 1, chunks, mtime_ms: 0, perm: crate::perm::Perm::root() })
        };
        nodes.insert("/a".into(), file(vec![1, 2, 3]));
        nodes.insert("/b".into(), file(vec![4]));
        nodes.insert("/c".into(), file(vec![5, 6]));
        let queued: HashSet<u64> = [2, 3, 6].into();
        let got = short_files(&nodes, &queued, 10);
        let want = [("/a", 2, 3), ("/c", 1, 2)];
        assert_eq!(got.iter().map(|f| (f.path.as_str(), f.short_chunks, f.chunks)).collect::<Vec<_>>(), want);
        assert_eq!(short_files(&nodes, &queued, 1).len(), 1, "the walk stops at the limit");
        assert!(short_files(&nodes, &HashSet::new(), 10).is_empty());
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
