//! Choosing the closest replica: same zone first, then the lowest observed
//! latency (an exponentially weighted moving average per server), then
//! random.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gfs_proto::ServerInfo;
use rand::seq::SliceRandom;

/// Weight of a new sample in the moving average.
const ALPHA: f64 = 0.3;
/// Latency charged for a failed RPC so that failing servers sink.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Most servers tracked; the table is cleared when it grows past this.
const MAX_TRACKED: usize = 4096;

/// EWMA of RPC latency per server address, in milliseconds.
#[derive(Default)]
pub struct LatencyTracker {
    ewma: Mutex<HashMap<String, f64>>,
}

impl LatencyTracker {
    /// Records one observed latency for `addr`.
    pub fn record(&self, addr: &str, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let mut map = self.ewma.lock().expect("latency lock");
        if let Some(v) = map.get_mut(addr) {
            *v = ALPHA * ms + (1.0 - ALPHA) * *v;
            return;
        }
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
        map.insert(addr.to_string(), ms);
    }

    /// Records a failed RPC to `addr`.
    pub fn record_failure(&self, addr: &str) {
        self.record(addr, FAILURE_PENALTY);
    }

    /// Returns the average latency of `addr` in ms (0 when never observed).
    pub fn get(&self, addr: &str) -> f64 {
        self.ewma.lock().expect("latency lock").get(addr).copied().unwrap_or(0.0)
    }

    /// Orders `replicas` closest first.
    pub fn order(&self, replicas: &[ServerInfo], zone: Option<&str>) -> Vec<ServerInfo> {
        order_replicas(replicas, zone, |a| self.get(a))
    }

    /// Orders `replicas` for the `turn`-th piece of a larger read: as
    /// [`Self::order`], then the leading replicas that are about as close
    /// as the closest take turns in front, so that consecutive pieces are
    /// served by different servers (their disks and cores) instead of all by
    /// the one that happened to answer fastest.
    pub fn order_for_turn(&self, replicas: &[ServerInfo], zone: Option<&str>, turn: usize) -> Vec<ServerInfo> {
        let mut v = self.order(replicas, zone);
        let near = near_count(&v, zone, |a| self.get(a));
        if near > 1 {
            v[..near].rotate_left(turn % near);
        }
        v
    }
}

/// A replica counts as about as close as the closest when it is in the same
/// zone class and its latency is at most `NEAR_FACTOR` times the closest's
/// plus `NEAR_SLACK_MS`: generous, since the latencies are of reads of any
/// size on busy servers (HDFS does not weigh latency at all among replicas
/// at one network distance); a failing server (charged a second) or a
/// far one stays behind.
const NEAR_FACTOR: f64 = 4.0;
const NEAR_SLACK_MS: f64 = 20.0;

/// How many replicas at the front of `ordered` (closest first) are about as
/// close as the first one.
fn near_count(ordered: &[ServerInfo], zone: Option<&str>, latency: impl Fn(&str) -> f64) -> usize {
    let Some(first) = ordered.first() else {
        return 0;
    };
    let same_zone = |r: &ServerInfo| zone.is_none_or(|z| r.zone == z);
    let (zone0, bound) = (same_zone(first), NEAR_FACTOR * latency(&first.address) + NEAR_SLACK_MS);
    ordered.iter().take_while(|r| same_zone(r) == zone0 && latency(&r.address) <= bound).count()
}

/// Orders replicas: those in `zone` first, then by ascending latency
/// (unknown counts as 0, so untried servers get tried), ties broken at
/// random.
pub fn order_replicas(replicas: &[ServerInfo], zone: Option<&str>, latency: impl Fn(&str) -> f64) -> Vec<ServerInfo> {
    let mut v: Vec<(bool, f64, ServerInfo)> = replicas
        .iter()
        .map(|r| {
            let other_zone = match zone {
                Some(z) => r.zone != z,
                None => false,
            };
            (other_zone, latency(&r.address), r.clone())
        })
        .collect();
    v.shuffle(&mut rand::rng());
    // Stable sort keeps the random order among equals.
    v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    v.into_iter().map(|x| x.2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(addr: &str, zone: &str) -> ServerInfo {
        ServerInfo { id: addr.into(), address: addr.into(), zone: zone.into() }
    }

    fn addrs(v: &[ServerInfo]) -> Vec<&str> {
        v.iter().map(|s| s.address.as_str()).collect()
    }

    #[test]
    fn same_zone_first_then_latency() {
        let reps = vec![s("a", "z1"), s("b", "z2"), s("c", "z2"), s("d", "z1")];
        let lat = |a: &str| match a {
            "a" => 5.0,
            "b" => 1.0,
            "c" => 3.0,
            _ => 2.0,
        };
        assert_eq!(addrs(&order_replicas(&reps, Some("z2"), lat)), vec!["b", "c", "d", "a"]);
        assert_eq!(addrs(&order_replicas(&reps, Some("z1"), lat)), vec!["d", "a", "b", "c"]);
        assert_eq!(addrs(&order_replicas(&reps, None, lat)), vec!["b", "d", "c", "a"]);
    }

    #[test]
    fn unknown_latency_goes_first_and_ties_are_random() {
        let t = LatencyTracker::default();
        t.record("a", Duration::from_millis(10));
        let reps = vec![s("a", ""), s("b", "")];
        assert_eq!(addrs(&t.order(&reps, None)), vec!["b", "a"]);
        let reps = vec![s("x", ""), s("y", ""), s("z", "")];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            firsts.insert(order_replicas(&reps, None, |_| 0.0)[0].address.clone());
        }
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn consecutive_turns_spread_over_replicas_about_as_close() {
        let t = LatencyTracker::default();
        t.record("a", Duration::from_millis(10));
        t.record("b", Duration::from_millis(12));
        t.record("c", Duration::from_millis(300));
        let reps = vec![s("a", "z1"), s("b", "z1"), s("c", "z1")];
        let firsts: Vec<String> = (0..4).map(|turn| t.order_for_turn(&reps, None, turn)[0].address.clone()).collect();
        assert_eq!(firsts, ["a", "b", "a", "b"], "the slow replica never leads");
        for turn in 0..4 {
            assert_eq!(t.order_for_turn(&reps, None, turn)[2].address, "c", "and stays the last resort");
        }
        // Another zone never takes a turn in front of the client's own.
        let reps = vec![s("a", "z1"), s("b", "z2")];
        for turn in 0..4 {
            assert_eq!(t.order_for_turn(&reps, Some("z2"), turn)[0].address, "b");
        }
    }

    #[test]
    fn ewma_moves_toward_samples_and_failures_sink() {
        let t = LatencyTracker::default();
        t.record("a", Duration::from_millis(10));
        t.record("a", Duration::from_millis(20));
        assert!((t.get("a") - 13.0).abs() < 1e-9);
        t.record("b", Duration::from_millis(1));
        t.record_failure("b");
        let reps = vec![s("a", ""), s("b", "")];
        assert_eq!(addrs(&t.order(&reps, None)), vec!["a", "b"]);
    }
}
