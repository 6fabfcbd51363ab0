//! Network programming latency (`kubeproxy_network_programming_duration_seconds`)
//! from EndpointSlices' `endpoints.kubernetes.io/last-change-trigger-time`.
//!
//! kube-proxy (`pkg/proxy/endpointschangetracker.go`) records the trigger
//! time of every EndpointSlice change it receives, if the time is later
//! than its own start, and after each successful sync observes
//! `now - trigger time` for every change that sync applied. The agent sees
//! states, not change events, so a change is a slice whose `(id, trigger
//! time)` was not there at the last successful sync: [`new_trigger_times`].
//! Several updates of one slice between two syncs count once (the last);
//! a slice whose content changes while its trigger time stays counts no
//! more.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kproxy_core::model::{EndpointSlice, NamespacedName, Timestamp};

/// The trigger time of a [`SystemTime`].
pub fn timestamp(t: SystemTime) -> Timestamp {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (secs(d), d.subsec_nanos()),
        Err(e) => match e.duration() {
            d if d.subsec_nanos() == 0 => (-secs(d), 0),
            d => (-secs(d) - 1, 1_000_000_000 - d.subsec_nanos()),
        },
    };
    // The nanoseconds are below a second: never the fallback.
    Timestamp::from_unix(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The [`SystemTime`] of a trigger time (`None` before the epoch).
pub fn system_time(t: Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.unix_seconds()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.subsec_nanos()))
}

/// The trigger times in effect at the last successful sync, by slice.
pub type Applied = BTreeMap<NamespacedName, Timestamp>;

/// The trigger times of `slices` that are new since `applied` (the slice
/// was not there, or had another trigger time) and later than `since` (the
/// agent's start: kube-proxy ignores changes triggered before its change
/// tracker existed), and the trigger times of `slices` to keep as
/// `applied` once the sync that applies them has succeeded.
pub fn new_trigger_times(
    applied: &Applied,
    slices: &[EndpointSlice],
    since: Timestamp,
) -> (Vec<Timestamp>, Applied) {
    let mut fresh = Vec::new();
    let mut next = Applied::new();
    for s in slices {
        let Some(t) = s.trigger_time else { continue };
        if applied.get(&s.id) != Some(&t) && t > since {
            fresh.push(t);
        }
        next.insert(s.id.clone(), t);
    }
    (fresh, next)
}

/// The trigger times of the slices applied by successful syncs.
#[derive(Debug)]
pub struct Tracker {
    since: Timestamp,
    applied: Applied,
}

impl Tracker {
    /// A tracker that ignores changes triggered before `since`.
    pub fn new(since: SystemTime) -> Self {
        Self {
            since: timestamp(since),
            applied: Applied::new(),
        }
    }

    /// After a successful sync of `slices`: the trigger times it applied
    /// (to observe as `now - t`).
    pub fn synced(&mut self, slices: &[EndpointSlice]) -> Vec<SystemTime> {
        let (fresh, next) = new_trigger_times(&self.applied, slices, self.since);
        self.applied = next;
        fresh.into_iter().filter_map(system_time).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::model::IpFamily;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn slice(name: &str, t: Option<&str>) -> EndpointSlice {
        let mut s = EndpointSlice::new("ns", name, "svc", IpFamily::V4);
        s.trigger_time = t.map(at);
        s
    }

    #[test]
    fn only_new_trigger_times_after_the_start() {
        let since = at("2026-11-26T10:00:00Z");
        // The initial state: a change from before the start, one after, one
        // slice without the annotation.
        let state = [
            slice("old", Some("2026-11-26T09:59:59.999Z")),
            slice("new", Some("2026-11-26T10:00:01Z")),
            slice("plain", None),
        ];
        let (fresh, applied) = new_trigger_times(&Applied::new(), &state, since);
        assert_eq!(fresh, [at("2026-11-26T10:00:01Z")]);
        assert_eq!(applied.len(), 2);

        // Nothing changed: nothing new.
        let (fresh, applied) = new_trigger_times(&applied, &state, since);
        assert!(fresh.is_empty());

        // "new" updated, "old" gone, "added" added, "plain" annotated.
        let state = [
            slice("new", Some("2026-11-26T10:00:05Z")),
            slice("added", Some("2026-11-26T10:00:04Z")),
            slice("plain", Some("2026-11-26T10:00:03Z")),
        ];
        let (fresh, applied) = new_trigger_times(&applied, &state, since);
        assert_eq!(
            fresh,
            [
                at("2026-11-26T10:00:05Z"),
                at("2026-11-26T10:00:04Z"),
                at("2026-11-26T10:00:03Z")
            ]
        );
        assert!(!applied.contains_key(&NamespacedName::new("ns", "old")));

        // A slice that comes back with the trigger time it had before it
        // went away counts again.
        let (fresh, applied) = new_trigger_times(&applied, &[], since);
        assert!(fresh.is_empty() && applied.is_empty());
        let (fresh, _) = new_trigger_times(&applied, &state[..1], since);
        assert_eq!(fresh, [at("2026-11-26T10:00:05Z")]);
    }

    #[test]
    fn tracker_and_conversions() {
        let start = UNIX_EPOCH + Duration::new(1_795_687_200, 0);
        let mut tr = Tracker::new(start);
        let s = [slice("a", Some("2026-11-26T10:00:00.5Z"))];
        assert_eq!(
            tr.synced(&s),
            [UNIX_EPOCH + Duration::new(1_795_687_200, 500_000_000)]
        );
        assert!(tr.synced(&s).is_empty());
        let t = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(timestamp(t), Timestamp::from_unix(5, 7).expect("valid"));
        assert_eq!(system_time(timestamp(t)), Some(t));
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(timestamp(before), at("1969-12-31T23:59:58.5Z"));
        let before = UNIX_EPOCH - Duration::from_secs(2);
        assert_eq!(timestamp(before), at("1969-12-31T23:59:58Z"));
        assert_eq!(system_time(timestamp(before)), None);
    }
}
