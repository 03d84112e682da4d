//! Output formatting: JSON shapes, tables and times.

use gfs_proto::{ChunkLocation, ClusterStatusResponse, FileInfo, FileType, MasterInfo, MasterRole, ServerState};
use serde_json::{Value, json};

use crate::size::format_size;

/// `"file"` or `"directory"`.
pub fn type_name(info: &FileInfo) -> &'static str {
    match info.r#type() {
        FileType::Directory => "directory",
        _ => "file",
    }
}

/// Last path component (`/` for the root).
pub fn name_of(path: &str) -> &str {
    match gfs_common::path::file_name(path) {
        "" => "/",
        n => n,
    }
}

/// `drwxr-xr-x` / `-rw-r--r--` for an entry.
pub fn permission(info: &FileInfo) -> String {
    gfs_common::perm::mode_string(info.r#type() == FileType::Directory, info.mode)
}

/// One `ls --json` entry. `mode` is octal text (`"0644"`), as chmod takes it.
pub fn entry_json(info: &FileInfo) -> Value {
    json!({
        "path": info.path,
        "name": name_of(&info.path),
        "type": type_name(info),
        "size": info.size,
        "replication": info.replication,
        "mtime_ms": info.mtime_ms,
        "owner": info.owner,
        "group": info.group,
        "mode": gfs_common::perm::octal(info.mode),
        "permission": permission(info),
    })
}

/// Chunks listing fewer live replicas than the file's replication.
fn under_replicated(info: &FileInfo, chunks: &[ChunkLocation]) -> usize {
    chunks.iter().filter(|c| c.replicas.len() < info.replication as usize).count()
}

/// The `stat --json` object.
pub fn stat_json(info: &FileInfo, chunks: &[ChunkLocation]) -> Value {
    let short = under_replicated(info, chunks);
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| {
            json!({
                "index": c.index,
                "handle": c.handle,
                "version": c.version,
                "length": c.length,
                "replicas": c.replicas.iter().map(|r| r.address.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "path": info.path,
        "type": type_name(info),
        "size": info.size,
        "replication": info.replication,
        "chunk_size": info.chunk_size,
        "mtime_ms": info.mtime_ms,
        "owner": info.owner,
        "group": info.group,
        "mode": gfs_common::perm::octal(info.mode),
        "permission": permission(info),
        "under_replicated_chunks": short,
        "chunks": chunks,
    })
}

/// Human-readable `stat`.
pub fn stat_text(info: &FileInfo, chunks: &[ChunkLocation]) -> String {
    let mut s = String::new();
    s.push_str(&format!("path:        {}\n", info.path));
    s.push_str(&format!("type:        {}\n", type_name(info)));
    s.push_str(&format!("mtime:       {}\n", format_time_ms(info.mtime_ms)));
    s.push_str(&format!("owner:       {}\n", info.owner));
    s.push_str(&format!("group:       {}\n", info.group));
    s.push_str(&format!("mode:        {} ({})\n", permission(info), gfs_common::perm::octal(info.mode)));
    if info.r#type() == FileType::Directory {
        s.push_str(&format!("entries:     {}\n", info.children));
        return s;
    }
    s.push_str(&format!("size:        {} ({})\n", info.size, format_size(info.size)));
    s.push_str(&format!("replication: {}\n", info.replication));
    s.push_str(&format!("chunk size:  {} ({})\n", info.chunk_size, format_size(info.chunk_size)));
    s.push_str(&format!("chunks:      {}\n", chunks.len()));
    let short = under_replicated(info, chunks);
    if short > 0 {
        s.push_str(&format!("under-replicated: {short} chunk(s) with fewer than {} replicas\n", info.replication));
    }
    for c in chunks {
        let replicas: Vec<&str> = c.replicas.iter().map(|r| r.address.as_str()).collect();
        s.push_str(&format!(
            "  #{:<5} handle {:#018x}  version {:<4} length {:<10} replicas {}\n",
            c.index,
            c.handle,
            c.version,
            c.length,
            if replicas.is_empty() { "-".to_string() } else { replicas.join(",") }
        ));
    }
    s
}

/// `ls -l` table, as HDFS's: permissions, replication (`-` for
/// directories), owner, group, size, mtime, name. Rows are formatted a
/// page at a time: the owner and group columns
/// are as wide as the widest seen so far (they only grow), so a listing
/// streams without first holding every entry.
#[derive(Debug, Default)]
pub struct LongFormat {
    owner_w: usize,
    group_w: usize,
    /// Name entries by full path (`ls -R`) instead of their last component.
    full_paths: bool,
}

impl LongFormat {
    /// Rows naming entries by their last component, or by full path.
    pub fn new(full_paths: bool) -> Self {
        LongFormat { full_paths, ..Default::default() }
    }

    /// The rows of `entries`.
    pub fn rows(&mut self, entries: &[FileInfo]) -> String {
        self.owner_w = entries.iter().map(|e| e.owner.len()).fold(self.owner_w, usize::max);
        self.group_w = entries.iter().map(|e| e.group.len()).fold(self.group_w, usize::max);
        let (owner_w, group_w) = (self.owner_w, self.group_w);
        let mut s = String::new();
        for e in entries {
            let dir = e.r#type() == FileType::Directory;
            let repl = if dir { "-".to_string() } else { e.replication.to_string() };
            s.push_str(&format!(
                "{} {:>3} {:<owner_w$} {:<group_w$} {:>14} {} {}\n",
                permission(e),
                repl,
                e.owner,
                e.group,
                e.size,
                format_time_ms(e.mtime_ms),
                self.name(e)
            ));
        }
        s
    }

    /// The short form (`ls`): one name a line, `/` after directories.
    pub fn names(&self, entries: &[FileInfo]) -> String {
        entries.iter().map(|e| self.name(e) + "\n").collect()
    }

    fn name(&self, e: &FileInfo) -> String {
        let name = if self.full_paths { e.path.as_str() } else { name_of(&e.path) };
        match e.r#type() == FileType::Directory && name != "/" {
            true => format!("{name}/"),
            false => name.to_string(),
        }
    }
}

/// A JSON array of `ls --json` entries written a page at a time, the same
/// text as the whole array pretty-printed at once.
#[derive(Debug, Default)]
pub struct JsonArray {
    items: u64,
}

impl JsonArray {
    /// The text of `entries`, after those written before.
    pub fn items(&mut self, entries: &[FileInfo]) -> serde_json::Result<String> {
        let mut s = String::new();
        for e in entries {
            s.push_str(if self.items == 0 { "[\n" } else { ",\n" });
            let item = serde_json::to_string_pretty(&entry_json(e))?;
            for (i, line) in item.lines().enumerate() {
                s.push_str(if i == 0 { "  " } else { "\n  " });
                s.push_str(line);
            }
            self.items += 1;
        }
        Ok(s)
    }

    /// The end of the array.
    pub fn end(&self) -> &'static str {
        if self.items == 0 { "[]\n" } else { "\n]\n" }
    }
}

/// `admin status --json`.
pub fn status_json(st: &ClusterStatusResponse) -> Value {
    let servers: Vec<Value> = st
        .servers
        .iter()
        .map(|s| {
            let info = s.server.clone().unwrap_or_default();
            json!({
                "id": info.id,
                "address": info.address,
                "zone": info.zone,
                "alive": s.alive,
                "capacity_bytes": s.capacity_bytes,
                "used_bytes": s.used_bytes,
                "chunk_count": s.chunk_count,
                "last_heartbeat_ms_ago": s.last_heartbeat_ms_ago,
                "load": s.load,
                "state": state_name(s.state()),
                "full": s.full,
                "free_bytes": s.free_bytes,
                "disk_id": s.disk_id,
            })
        })
        .collect();
    json!({
        "servers": servers,
        "live_servers": st.servers.iter().filter(|s| s.alive).count(),
        "file_count": st.file_count,
        "directory_count": st.directory_count,
        "chunk_count": st.chunk_count,
        "under_replicated_chunks": st.under_replicated_chunks,
        "corrupt_replicas_kept": st.corrupt_replicas_kept,
        "epoch": st.epoch,
        "chunk_size": st.chunk_size,
        "deficits": st.deficits.iter().map(|d| json!({"missing": d.missing, "chunks": d.chunks})).collect::<Vec<_>>(),
        "replication_backlog_chunks": st.replication_backlog_chunks,
        "replication_backlog_bytes": st.replication_backlog_bytes,
        "active_clones": st.active_clones,
        "oldest_pending_repair_ms": st.oldest_pending_repair_ms,
        "capacity_bytes": st.capacity_bytes,
        "used_bytes": st.used_bytes,
        "free_bytes": st.free_bytes,
        "masters": st.masters.iter().map(master_json).collect::<Vec<_>>(),
        "leader_id": st.leader_id,
    })
}

/// One master group member, as in `admin status --json`.
pub fn master_json(m: &MasterInfo) -> Value {
    json!({
        "id": m.id,
        "address": m.address,
        "role": role_name(m.role()),
        "term": m.term,
        "voter": m.voter,
        "last_applied": m.last_applied,
        "reachable": m.reachable,
    })
}

/// Lowercase name of a master's Raft role.
pub fn role_name(r: MasterRole) -> &'static str {
    match r {
        MasterRole::Leader => "leader",
        MasterRole::Follower => "follower",
        MasterRole::Candidate => "candidate",
        MasterRole::Learner => "learner",
        MasterRole::Shutdown => "shutdown",
        MasterRole::Unspecified => "unknown",
    }
}

/// The member that reports itself leader. Ids start at 0 (a StatefulSet's
/// pod 0), so `leader_id == 0` alone cannot tell "member 0" from "none".
pub fn leader_of(masters: &[MasterInfo]) -> Option<&MasterInfo> {
    masters.iter().find(|m| m.role() == MasterRole::Leader)
}

/// The master group table; the leader (by role) is starred.
pub fn masters_text(masters: &[MasterInfo]) -> String {
    let leader = leader_of(masters).map(|m| m.id);
    let rows: Vec<[String; 7]> = masters
        .iter()
        .map(|m| {
            let id = if leader == Some(m.id) { format!("{}*", m.id) } else { m.id.to_string() };
            [
                id,
                m.address.clone(),
                role_name(m.role()).into(),
                if m.voter { "yes" } else { "no" }.into(),
                m.term.to_string(),
                m.last_applied.to_string(),
                if m.reachable { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    table(&["ID", "ADDRESS", "ROLE", "VOTER", "TERM", "LAST APPLIED", "REACHABLE"], &rows)
}

/// Lowercase name of a server state, as in `admin status --json`.
pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Live => "live",
        ServerState::Dead => "dead",
        ServerState::Decommissioning => "decommissioning",
        ServerState::Decommissioned => "decommissioned",
        ServerState::Lost => "lost",
        ServerState::Unspecified => "unknown",
    }
}

/// `admin status` table.
pub fn status_text(st: &ClusterStatusResponse) -> String {
    let rows: Vec<[String; 10]> = st
        .servers
        .iter()
        .map(|s| {
            let info = s.server.clone().unwrap_or_default();
            [
                info.id,
                info.address,
                info.zone,
                state_name(s.state()).into(),
                format_size(s.used_bytes),
                format_size(s.capacity_bytes),
                if s.full { format!("{} FULL", format_size(s.free_bytes)) } else { format_size(s.free_bytes) },
                s.chunk_count.to_string(),
                s.load.to_string(),
                format!("{} ms", s.last_heartbeat_ms_ago),
            ]
        })
        .collect();
    let header = ["ID", "ADDRESS", "ZONE", "STATE", "USED", "CAPACITY", "FREE", "CHUNKS", "LOAD", "LAST HEARTBEAT"];
    let mut s = table(&header, &rows);
    let live = st.servers.iter().filter(|s| s.alive).count();
    s.push_str(&format!(
        "\nservers: {live} live / {} total\nfiles: {}  directories: {}  chunks: {}  under-replicated: {}\nepoch: {}  chunk size: {}\n",
        st.servers.len(),
        st.file_count,
        st.directory_count,
        st.chunk_count,
        st.under_replicated_chunks,
        st.epoch,
        format_size(st.chunk_size)
    ));
    let deficits: Vec<String> = st.deficits.iter().map(|d| format!("-{}: {}", d.missing, d.chunks)).collect();
    s.push_str(&format!(
        "capacity: {}  used: {}  free: {}\nreplication backlog: {} chunks, {}  (by missing replicas: {})\nactive clones: {}  oldest pending repair: {} ms\n",
        format_size(st.capacity_bytes),
        format_size(st.used_bytes),
        format_size(st.free_bytes),
        st.replication_backlog_chunks,
        format_size(st.replication_backlog_bytes),
        if deficits.is_empty() { "none".to_string() } else { deficits.join(", ") },
        st.active_clones,
        st.oldest_pending_repair_ms,
    ));
    if st.corrupt_replicas_kept > 0 {
        s.push_str(&format!("corrupt replicas kept (last copies, not deleted): {}\n", st.corrupt_replicas_kept));
    }
    if !st.masters.is_empty() {
        let leader = match leader_of(&st.masters) {
            Some(m) => format!("{} ({})", m.id, m.address),
            None => "unknown".to_string(),
        };
        s.push_str(&format!("\nmasters: {}  leader: {leader}\n", st.masters.len()));
        s.push_str(&masters_text(&st.masters));
    }
    s
}

/// A left-aligned text table.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut s = line(header.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(|c| c.as_str()).collect()));
    }
    s
}

/// Formats unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_time_ms(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn stat_json_shape() {
        let info = FileInfo {
            path: "/a/b".into(),
            r#type: FileType::File as i32,
            size: 5,
            replication: 3,
            chunk_size: 64,
            mtime_ms: 7,
            ..Default::default()
        };
        let c = ChunkLocation {
            index: 0,
            handle: 9,
            version: 2,
            length: 5,
            replicas: vec![gfs_proto::ServerInfo { id: "x".into(), address: "h:1".into(), zone: "z".into() }],
            token: None,
        };
        let v = stat_json(&info, std::slice::from_ref(&c));
        assert_eq!(v["type"], "file");
        assert_eq!(v["under_replicated_chunks"], 1);
        assert!(stat_text(&info, &[c]).contains("under-replicated: 1 chunk(s) with fewer than 3 replicas"));
        assert_eq!(v["chunks"][0]["replicas"][0], "h:1");
        assert_eq!(entry_json(&info)["name"], "b");
    }

    #[test]
    fn permissions_show_in_ls_and_json() {
        let f = FileInfo {
            path: "/d/f".into(),
            r#type: FileType::File as i32,
            size: 12,
            replication: 3,
            mtime_ms: 0,
            owner: "alice".into(),
            group: "eng".into(),
            mode: 0o640,
            ..Default::default()
        };
        let d = FileInfo {
            path: "/d/sub".into(),
            r#type: FileType::Directory as i32,
            owner: "bob".into(),
            group: "supergroup".into(),
            mode: 0o1777,
            ..Default::default()
        };
        let t = LongFormat::default().rows(&[f.clone(), d.clone()]);
        assert_eq!(
            t,
            "-rw-r-----   3 alice eng                    12 1970-01-01 00:00:00 f\n\
             drwxrwxrwt   - bob   supergroup              0 1970-01-01 00:00:00 sub/\n"
        );
        let j = entry_json(&f);
        assert_eq!((j["owner"].as_str(), j["group"].as_str()), (Some("alice"), Some("eng")));
        assert_eq!((j["mode"].as_str(), j["permission"].as_str()), (Some("0640"), Some("-rw-r-----")));
        assert_eq!(stat_json(&d, &[])["mode"], "1777");
        assert!(stat_text(&d, &[]).contains("mode:        drwxrwxrwt (1777)\n"));
    }

    fn masters() -> Vec<MasterInfo> {
        vec![
            MasterInfo {
                id: 1,
                address: "m1:9700".into(),
                role: MasterRole::Leader as i32,
                term: 4,
                voter: true,
                last_applied: 120,
                reachable: true,
            },
            MasterInfo {
                id: 2,
                address: "m2:9700".into(),
                role: MasterRole::Follower as i32,
                term: 4,
                voter: true,
                last_applied: 118,
                reachable: false,
            },
        ]
    }

    #[test]
    fn status_shows_the_master_group() {
        let st = ClusterStatusResponse { masters: masters(), leader_id: 1, ..Default::default() };
        let v = status_json(&st);
        assert_eq!(v["leader_id"], 1);
        assert_eq!(v["masters"][0]["role"], "leader");
        assert_eq!(v["masters"][0]["address"], "m1:9700");
        assert_eq!(v["masters"][0]["last_applied"], 120);
        assert_eq!(v["masters"][1]["role"], "follower");
        assert_eq!(v["masters"][1]["reachable"], false);
        assert_eq!(v["masters"][1]["voter"], true);
        assert_eq!(v["masters"][1]["term"], 4);
        let t = status_text(&st);
        assert!(t.contains("masters: 2  leader: 1 (m1:9700)"), "{t}");
        assert!(t.contains("ID  ADDRESS  ROLE      VOTER  TERM  LAST APPLIED  REACHABLE\n"), "{t}");
        assert!(t.contains("1*  m1:9700  leader    yes    4     120           yes\n"), "{t}");
        assert!(t.contains("2   m2:9700  follower  yes    4     118           no\n"), "{t}");
        // Ids start at 0 (a StatefulSet's pod 0): member 0 leading is named.
        let mut zero = masters();
        zero[0].id = 0;
        let t = status_text(&ClusterStatusResponse { masters: zero, leader_id: 0, ..Default::default() });
        assert!(t.contains("masters: 2  leader: 0 (m1:9700)"), "{t}");
        assert!(t.contains("0*  m1:9700  leader"), "{t}");
        // No member reports itself leader: unknown, nobody starred.
        let mut none = masters();
        none[0].role = MasterRole::Candidate as i32;
        let t = status_text(&ClusterStatusResponse { masters: none, leader_id: 0, ..Default::default() });
        assert!(t.contains("leader: unknown") && !t.contains('*'), "{t}");
        // A master without a group (older master) prints no master table.
        let t = status_text(&ClusterStatusResponse::default());
        assert!(!t.contains("masters:"), "{t}");
        assert_eq!(status_json(&ClusterStatusResponse::default())["masters"], json!([]));
    }

    #[test]
    fn streamed_json_and_rows_match_whole_listings() {
        let e = |p: &str, owner: &str, dir: bool| FileInfo {
            path: p.into(),
            r#type: if dir { FileType::Directory } else { FileType::File } as i32,
            owner: owner.into(),
            group: "g".into(),
            ..Default::default()
        };
        let all = [e("/d/a", "al", false), e("/d/b", "bob", true), e("/d/c", "c", false)];
        let whole = serde_json::to_string_pretty(&all.iter().map(entry_json).collect::<Vec<_>>()).unwrap() + "\n";
        let mut j = JsonArray::default();
        let streamed = j.items(&all[..1]).unwrap() + &j.items(&[]).unwrap() + &j.items(&all[1..]).unwrap() + j.end();
        assert_eq!(streamed, whole);
        assert_eq!(JsonArray::default().end(), "[]\n");
        // Widths grow with the pages: a later wider owner widens later rows.
        let mut f = LongFormat::default();
        let (first, second) = (f.rows(&all[..1]), f.rows(&all[1..]));
        assert!(first.contains(" al g ") && second.contains(" bob g ") && second.contains(" c   g "), "{second}");
        assert_eq!(f.names(&all), "a\nb/\nc\n");
        f.full_paths = true;
        assert_eq!(f.names(&all[1..2]), "/d/b/\n");
        assert!(f.rows(&all[1..2]).ends_with(" /d/b/\n"));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[["xyz".to_string(), "1".to_string()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
