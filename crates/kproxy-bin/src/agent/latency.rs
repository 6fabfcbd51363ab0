//! Network programming latency (`kubeproxy_network_programming_duration_seconds`)
//! from EndpointSlices' `endpoints.kubernetes.io/last-change-trigger-time`.
//!
//! kube-proxy's change tracker (`pkg/proxy/endpointschangetracker.go`):
//! every EndpointSlice update that changes the slice (its ports and
//! endpoints, not its annotations) adds the slice's trigger time, if later
//! than the tracker's start, to its Service's pending times; a slice deleted
//! drops its Service's pending times (the deletion's trigger time says
//! nothing about now). At the start of a sync the pending times are taken;
//! after the sync succeeds `now - t` is observed for each (a failed sync
//! loses them). [`Tracker`] does the same with what the agent sees: the
//! slices after each poll of its source (several updates of one slice
//! between two polls count once; polls are much more frequent than syncs).

use std::collections::{BTreeMap, BTreeSet};
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

/// kube-proxy's trigger-time bookkeeping (see the module documentation).
#[derive(Debug)]
pub struct Tracker {
    since: Timestamp,
    /// Each slice as last seen, without its trigger time, by slice.
    seen: BTreeMap<NamespacedName, EndpointSlice>,
    /// The trigger times of the changes not yet synced, by Service.
    pending: BTreeMap<NamespacedName, Vec<Timestamp>>,
}

/// The Services to look at (`None`: all), by (namespace, name).
struct Filter<'a>(Option<BTreeSet<(&'a str, &'a str)>>);

impl<'a> Filter<'a> {
    fn new(services: Option<&'a BTreeSet<NamespacedName>>) -> Self {
        Self(services.map(|set| {
            set.iter()
                .map(|n| (n.namespace.as_str(), n.name.as_str()))
                .collect()
        }))
    }

    /// Whether `slice` belongs to one of the Services.
    fn has(&self, slice: &EndpointSlice) -> bool {
        self.0.as_ref().is_none_or(|set| {
            set.contains(&(slice.id.namespace.as_str(), slice.service_name.as_str()))
        })
    }
}

impl Tracker {
    /// A tracker that ignores changes triggered before `since` (the agent's
    /// start, as kube-proxy's tracker ignores those before its own).
    pub fn new(since: SystemTime) -> Self {
        Self {
            since: timestamp(since),
            seen: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// After a poll: `slices` are every slice now; only those of `services`
    /// (the Services the poll changed; `None`: any) may differ from the
    /// last call. A deleted slice drops its Service's pending times; a new
    /// or changed one adds its trigger time.
    pub fn observe(
        &mut self,
        slices: &[EndpointSlice],
        services: Option<&BTreeSet<NamespacedName>>,
    ) {
        let of = Filter::new(services);
        let now: BTreeSet<&NamespacedName> =
            slices.iter().filter(|s| of.has(s)).map(|s| &s.id).collect();
        let gone: Vec<NamespacedName> = self
            .seen
            .iter()
            .filter(|(id, s)| of.has(s) && !now.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(s) = self.seen.remove(&id) {
                self.pending.remove(&s.service_id());
            }
        }
        for slice in slices.iter().filter(|s| of.has(s)) {
            let unchanged = self.seen.get(&slice.id).is_some_and(|old| {
                old.service_name == slice.service_name
                    && old.address_type == slice.address_type
                    && old.ports == slice.ports
                    && old.endpoints == slice.endpoints
            });
            if unchanged {
                continue;
            }
            if let Some(t) = slice.trigger_time.filter(|t| *t > self.since) {
                self.pending.entry(slice.service_id()).or_default().push(t);
            }
            let mut bare = slice.clone();
            bare.trigger_time = None;
            self.seen.insert(slice.id.clone(), bare);
        }
    }

    /// At the start of a sync: the pending trigger times, taken (to observe
    /// as `now - t` once the sync has succeeded).
    pub fn take(&mut self) -> Vec<SystemTime> {
        std::mem::take(&mut self.pending)
            .into_values()
            .flatten()
            .filter_map(system_time)
            .collect()
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

    fn secs(ts: &[&str]) -> Vec<SystemTime> {
        ts.iter().filter_map(|t| system_time(at(t))).collect()
    }

    #[test]
    fn trigger_times_as_kube_proxy_counts_them() {
        let since = at("2026-11-26T10:00:00Z");
        let mut tr = Tracker::new(system_time(since).expect("time"));
        let with_ep = |name: &str, t: Option<&str>, ip: &str| {
            let mut s = slice(name, t);
            s.endpoints
                .push(kproxy_core::model::Endpoint::ready(ip.parse().expect("ip")));
            s
        };
        // The initial state: a change from before the start, one after, one
        // slice without the annotation.
        let mut state = vec![
            with_ep("old", Some("2026-11-26T09:59:59.999Z"), "10.0.0.1"),
            with_ep("new", Some("2026-11-26T10:00:01Z"), "10.0.0.2"),
            with_ep("plain", None, "10.0.0.3"),
        ];
        tr.observe(&state, None);
        assert_eq!(tr.take(), secs(&["2026-11-26T10:00:01Z"]));
        // Taken: nothing more, and nothing when nothing changed.
        tr.observe(&state, None);
        assert!(tr.take().is_empty());
        // Two updates of one slice between two syncs count twice.
        state[1] = with_ep("new", Some("2026-11-26T10:00:02Z"), "10.0.0.4");
        tr.observe(&state, Some(&[NamespacedName::new("ns", "svc")].into()));
        state[1] = with_ep("new", Some("2026-11-26T10:00:03Z"), "10.0.0.5");
        tr.observe(&state, None);
        assert_eq!(
            tr.take(),
            secs(&["2026-11-26T10:00:02Z", "2026-11-26T10:00:03Z"])
        );
        // A new trigger time without a change counts not; a change without
        // a new trigger time counts its time again.
        state[1].trigger_time = Some(at("2026-11-26T10:00:04Z"));
        tr.observe(&state, None);
        assert!(tr.take().is_empty());
        state[1].endpoints.clear();
        tr.observe(&state, None);
        assert_eq!(tr.take(), secs(&["2026-11-26T10:00:04Z"]));
        // A slice deleted drops its Service's pending times.
        state[2] = with_ep("plain", Some("2026-11-26T10:00:05Z"), "10.0.0.6");
        tr.observe(&state, None);
        state.remove(0);
        tr.observe(&state, None);
        assert!(tr.take().is_empty());
        // Slices of other Services than the changed ones are not looked at.
        let mut other = with_ep("x", Some("2026-11-26T10:00:06Z"), "10.0.0.7");
        other.service_name = "other".into();
        state.push(other);
        tr.observe(&state, Some(&[NamespacedName::new("ns", "svc")].into()));
        assert!(tr.take().is_empty());
        tr.observe(&state, Some(&[NamespacedName::new("ns", "other")].into()));
        assert_eq!(tr.take(), secs(&["2026-11-26T10:00:06Z"]));
    }

    #[test]
    fn tracker_and_conversions() {
        let start = UNIX_EPOCH + Duration::new(1_795_687_200, 0);
        let mut tr = Tracker::new(start);
        let s = [slice("a", Some("2026-11-26T10:00:00.5Z"))];
        tr.observe(&s, None);
        assert_eq!(
            tr.take(),
            [UNIX_EPOCH + Duration::new(1_795_687_200, 500_000_000)]
        );
        tr.observe(&s, None);
        assert!(tr.take().is_empty());
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
