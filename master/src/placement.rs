//! Replica placement for new chunks.
//!
//! Pure: given the live servers, choose `n` distinct ones. Zones are spread
//! first (one per zone per round), then servers whose disk use is below the
//! average are preferred, then those with fewer recent creations; servers
//! over the recent-creation limit are used only if nothing else fits. Ties
//! are broken at random.

use std::collections::HashSet;

use gfs_common::{Error, Result};
use rand::Rng;

/// A live server that may receive a new replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Server id.
    pub id: String,
    /// Failure domain.
    pub zone: String,
    /// Disk capacity in bytes.
    pub capacity: u64,
    /// Used bytes.
    pub used: u64,
    /// Chunks created on it in the current window.
    pub recent_creations: u32,
}

impl Candidate {
    fn use_fraction(&self) -> f64 {
        if self.capacity == 0 { 1.0 } else { self.used as f64 / self.capacity as f64 }
    }
}

/// Sort key: (over the creation limit, above average use, recent creations, random).
type Score = (bool, bool, u32, u64);

/// Chooses up to `n` servers. Fewer than `n` candidates: all of them (the
/// caller logs the under-replication). No candidates: `NoSpace`.
pub fn choose(cands: &[Candidate], n: usize, max_recent: u32, rng: &mut impl Rng) -> Result<Vec<String>> {
    if cands.is_empty() {
        return Err(Error::NoSpace { server: None, detail: "no live chunkserver with free space".into() });
    }
    let avg = cands.iter().map(Candidate::use_fraction).sum::<f64>() / cands.len() as f64;
    let mut scored: Vec<(Score, &Candidate)> = cands
        .iter()
        .map(|c| ((c.recent_creations >= max_recent, c.use_fraction() > avg, c.recent_creations, rng.random()), c))
        .collect();
    scored.sort_by_key(|a| a.0);
    let (normal, busy): (Vec<_>, Vec<_>) =
        scored.into_iter().map(|s| s.1).partition(|c| c.recent_creations < max_recent);
    let mut chosen: Vec<String> = Vec::with_capacity(n);
    let mut zones_this_round: HashSet<&str> = HashSet::new();
    for tier in [normal, busy] {
        let mut left = tier;
        while chosen.len() < n && !left.is_empty() {
            match left.iter().position(|c| !zones_this_round.contains(c.zone.as_str())) {
                Some(i) => {
                    let c = left.remove(i);
                    zones_this_round.insert(c.zone.as_str());
                    chosen.push(c.id.clone());
                }
                None => zones_this_round.clear(),
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, zone: &str, used: u64, recent: u32) -> Candidate {
        Candidate { id: id.into(), zone: zone.into(), capacity: 100, used, recent_creations: recent }
    }

    #[test]
    fn spreads_across_zones() {
        let cands =
            vec![c("a1", "a", 0, 0), c("a2", "a", 0, 0), c("a3", "a", 0, 0), c("b1", "b", 90, 5), c("c1", "c", 90, 5)];
        for _ in 0..50 {
            let got = choose(&cands, 3, 32, &mut rand::rng()).unwrap();
            let mut zones: Vec<char> = got.iter().map(|s| s.chars().next().unwrap()).collect();
            zones.sort();
            assert_eq!(zones, vec!['a', 'b', 'c'], "{got:?}");
        }
        let got = choose(&cands, 5, 32, &mut rand::rng()).unwrap();
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 5);
    }

    #[test]
    fn prefers_below_average_then_fewer_creations() {
        let cands = vec![c("full", "z", 90, 0), c("empty1", "z", 10, 3), c("empty2", "z", 10, 1), c("mid", "z", 60, 0)];
        for _ in 0..20 {
            let got = choose(&cands, 2, 32, &mut rand::rng()).unwrap();
            assert_eq!(got, vec!["empty2".to_string(), "empty1".to_string()]);
        }
    }

    #[test]
    fn busy_servers_only_as_last_resort() {
        let cands = vec![c("busy", "a", 0, 40), c("ok", "b", 50, 0)];
        assert_eq!(choose(&cands, 1, 32, &mut rand::rng()).unwrap(), vec!["ok".to_string()]);
        assert_eq!(choose(&cands, 2, 32, &mut rand::rng()).unwrap().len(), 2);
    }

    #[test]
    fn too_few_or_none() {
        let cands = vec![c("a", "a", 0, 0)];
        assert_eq!(choose(&cands, 3, 32, &mut rand::rng()).unwrap(), vec!["a".to_string()]);
        assert_eq!(choose(&[], 3, 32, &mut rand::rng()).unwrap_err().kind(), gfs_common::ErrorKind::NoSpace);
    }
}
