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
//! FQDN slices are not tracked, as kube-proxy ignores them; each trigger
//! time carries its slice's IP family (kube-proxy's per-family proxiers
//! each observe their own).
//!
//! The `dir:` source's changed files are timed by their modification
//! times ([`Tracker::changed_at`]) with the same rule: a time before the
//! tracker's start is a file's age, not a change (the first poll sees every
//! file), and is not observed.
//!
//! The tracker also counts changes as kube-proxy's change trackers do
//! (`kubeproxy_sync_proxy_rules_{endpoint,service}_changes_{total,pending}`):
//! each EndpointSlice added, changed or deleted is an endpoint change, each
//! Service added, changed or deleted a Service change; pending are the
//! endpoint changes and the Services changed since the last sync started.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{AddressType, EndpointSlice, IpFamily, NamespacedName, Service, Timestamp};

/// Counts of changes: EndpointSlices and Services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// EndpointSlice changes.
    pub endpoints: u64,
    /// Service changes.
    pub services: u64,
}

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

/// kube-proxy's trigger-time bookkeeping (see the module documentation),
/// and its change counts (`kubeproxy_sync_proxy_rules_{endpoint,service}_changes_*`).
#[derive(Debug)]
pub struct Tracker {
    since: Timestamp,
    /// Each slice as last seen, without its trigger time, by slice.
    seen: BTreeMap<NamespacedName, EndpointSlice>,
    /// Each Service as last seen.
    services: BTreeMap<NamespacedName, Service>,
    /// The trigger times of the changes not yet synced, by Service.
    pending: BTreeMap<NamespacedName, Vec<(IpFamily, Timestamp)>>,
    /// The times of changes of any family (the `dir:` source's files), not
    /// yet synced.
    untagged: Vec<SystemTime>,
    /// Changes counted since [`Tracker::counted`] last ran.
    counted: Changes,
    /// EndpointSlice changes since the last sync.
    endpoints_pending: u64,
    /// The Services changed since the last sync.
    services_pending: BTreeSet<NamespacedName>,
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

    /// Whether the Service `namespace/name` is looked at.
    fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|set| set.contains(&(namespace, name)))
    }

    /// Whether `slice` belongs to one of the Services.
    fn has(&self, slice: &EndpointSlice) -> bool {
        self.has_service(&slice.id.namespace, &slice.service_name)
    }
}

/// The IP family of a slice kube-proxy tracks (`None`: an FQDN slice,
/// which kube-proxy ignores).
fn slice_family(slice: &EndpointSlice) -> Option<IpFamily> {
    match slice.address_type {
        AddressType::Ip(f) => Some(f),
        AddressType::Fqdn => None,
    }
}

impl Tracker {
    /// A tracker that ignores changes triggered before `since` (the agent's
    /// start, as kube-proxy's tracker ignores those before its own).
    pub fn new(since: SystemTime) -> Self {
        Self {
            since: timestamp(since),
            seen: BTreeMap::new(),
            services: BTreeMap::new(),
            pending: BTreeMap::new(),
            untagged: Vec::new(),
            counted: Changes::default(),
            endpoints_pending: 0,
            services_pending: BTreeSet::new(),
        }
    }

    /// After a poll: `slices` are every slice now; only those of `services`
    /// (the Services the poll changed; `None`: any) may differ from the
    /// last call. A deleted slice drops its Service's pending times; a new
    /// or changed one adds its trigger time. Each is an endpoint change.
    pub fn observe(
        &mut self,
        slices: &[EndpointSlice],
        services: Option<&BTreeSet<NamespacedName>>,
    ) {
        let of = Filter::new(services);
        let tracked = |s: &&EndpointSlice| of.has(s) && slice_family(s).is_some();
        let now: BTreeSet<&NamespacedName> = slices.iter().filter(tracked).map(|s| &s.id).collect();
        let gone: Vec<NamespacedName> = self
            .seen
            .iter()
            .filter(|(id, s)| of.has(s) && !now.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(s) = self.seen.remove(&id) {
                self.pending.remove(&s.service_id());
                self.endpoint_changed();
            }
        }
        for slice in slices.iter().filter(tracked) {
            let unchanged = self.seen.get(&slice.id).is_some_and(|old| {
                old.service_name == slice.service_name
                    && old.address_type == slice.address_type
                    && old.ports == slice.ports
                    && old.endpoints == slice.endpoints
            });
            if unchanged {
                continue;
            }
            self.endpoint_changed();
            if let (Some(t), Some(f)) = (
                slice.trigger_time.filter(|t| *t > self.since),
                slice_family(slice),
            ) {
                self.pending
                    .entry(slice.service_id())
                    .or_default()
                    .push((f, t));
            }
            let mut bare = slice.clone();
            bare.trigger_time = None;
            self.seen.insert(slice.id.clone(), bare);
        }
    }

    fn endpoint_changed(&mut self) {
        self.counted.endpoints += 1;
        self.endpoints_pending += 1;
    }

    /// After a poll: `all` are every Service now; only `changed` (`None`:
    /// any) may differ from the last call. Each new, changed or deleted
    /// Service is a Service change.
    pub fn observe_services(
        &mut self,
        all: &[Service],
        changed: Option<&BTreeSet<NamespacedName>>,
    ) {
        let of = Filter::new(changed);
        let now: BTreeSet<&NamespacedName> = all
            .iter()
            .filter(|s| of.has_service(&s.id.namespace, &s.id.name))
            .map(|s| &s.id)
            .collect();
        let gone: Vec<NamespacedName> = self
            .services
            .keys()
            .filter(|id| of.has_service(&id.namespace, &id.name) && !now.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.services.remove(&id);
            self.service_changed(id);
        }
        for svc in all
            .iter()
            .filter(|s| of.has_service(&s.id.namespace, &s.id.name))
        {
            if self.services.get(&svc.id) != Some(svc) {
                self.services.insert(svc.id.clone(), svc.clone());
                self.service_changed(svc.id.clone());
            }
        }
    }

    fn service_changed(&mut self, id: NamespacedName) {
        self.counted.services += 1;
        self.services_pending.insert(id);
    }

    /// A change of any family at `t` (a file of the `dir:` source changed):
    /// ignored when before the tracker's start (a file's age is no change).
    pub fn changed_at(&mut self, t: SystemTime) {
        if timestamp(t) > self.since {
            self.untagged.push(t);
        }
    }

    /// The changes counted since the last call, and those pending now
    /// (EndpointSlice changes, Services changed).
    pub fn counted(&mut self) -> (Changes, Changes) {
        let pending = Changes {
            endpoints: self.endpoints_pending,
            services: u64::try_from(self.services_pending.len()).unwrap_or(u64::MAX),
        };
        (std::mem::take(&mut self.counted), pending)
    }

    /// At the start of a sync: the pending trigger times by family, and
    /// the times of changes of any family, taken (to observe as `now - t`
    /// once the sync has succeeded); nothing is pending after.
    pub fn take(&mut self) -> (Vec<(IpFamily, SystemTime)>, Vec<SystemTime>) {
        self.endpoints_pending = 0;
        self.services_pending.clear();
        let tagged = std::mem::take(&mut self.pending)
            .into_values()
            .flatten()
            .filter_map(|(f, t)| Some((f, system_time(t)?)))
            .collect();
        (tagged, std::mem::take(&mut self.untagged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn slice(name: &str, t: Option<&str>) -> EndpointSlice {
        let mut s = EndpointSlice::new("ns", name, "svc", IpFamily::V4);
        s.trigger_time = t.map(at);
        s
    }

    /// The pending trigger times (all IPv4 here), taken.
    fn tagged(tr: &mut Tracker) -> Vec<SystemTime> {
        let (tagged, untagged) = tr.take();
        assert!(untagged.is_empty());
        assert!(tagged.iter().all(|(f, _)| *f == IpFamily::V4));
        tagged.into_iter().map(|(_, t)| t).collect()
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
                .push(crate::model::Endpoint::ready(ip.parse().expect("ip")));
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
        assert_eq!(tagged(&mut tr), secs(&["2026-11-26T10:00:01Z"]));
        // Taken: nothing more, and nothing when nothing changed.
        tr.observe(&state, None);
        assert!(tagged(&mut tr).is_empty());
        // Two updates of one slice between two syncs count twice.
        state[1] = with_ep("new", Some("2026-11-26T10:00:02Z"), "10.0.0.4");
        tr.observe(&state, Some(&[NamespacedName::new("ns", "svc")].into()));
        state[1] = with_ep("new", Some("2026-11-26T10:00:03Z"), "10.0.0.5");
        tr.observe(&state, None);
        assert_eq!(
            tagged(&mut tr),
            secs(&["2026-11-26T10:00:02Z", "2026-11-26T10:00:03Z"])
        );
        // A new trigger time without a change counts not; a change without
        // a new trigger time counts its time again.
        state[1].trigger_time = Some(at("2026-11-26T10:00:04Z"));
        tr.observe(&state, None);
        assert!(tagged(&mut tr).is_empty());
        state[1].endpoints.clear();
        tr.observe(&state, None);
        assert_eq!(tagged(&mut tr), secs(&["2026-11-26T10:00:04Z"]));
        // A slice deleted drops its Service's pending times.
        state[2] = with_ep("plain", Some("2026-11-26T10:00:05Z"), "10.0.0.6");
        tr.observe(&state, None);
        state.remove(0);
        tr.observe(&state, None);
        assert!(tagged(&mut tr).is_empty());
        // Slices of other Services than the changed ones are not looked at.
        let mut other = with_ep("x", Some("2026-11-26T10:00:06Z"), "10.0.0.7");
        other.service_name = "other".into();
        state.push(other);
        tr.observe(&state, Some(&[NamespacedName::new("ns", "svc")].into()));
        assert!(tagged(&mut tr).is_empty());
        tr.observe(&state, Some(&[NamespacedName::new("ns", "other")].into()));
        assert_eq!(tagged(&mut tr), secs(&["2026-11-26T10:00:06Z"]));
    }

    #[test]
    fn tracker_and_conversions() {
        let start = UNIX_EPOCH + Duration::new(1_795_687_200, 0);
        let mut tr = Tracker::new(start);
        let s = [slice("a", Some("2026-11-26T10:00:00.5Z"))];
        tr.observe(&s, None);
        assert_eq!(
            tagged(&mut tr),
            [UNIX_EPOCH + Duration::new(1_795_687_200, 500_000_000)]
        );
        tr.observe(&s, None);
        assert!(tagged(&mut tr).is_empty());
        let t = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(timestamp(t), Timestamp::from_unix(5, 7).expect("valid"));
        assert_eq!(system_time(timestamp(t)), Some(t));
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(timestamp(before), at("1969-12-31T23:59:58.5Z"));
        let before = UNIX_EPOCH - Duration::from_secs(2);
        assert_eq!(timestamp(before), at("1969-12-31T23:59:58Z"));
        assert_eq!(system_time(timestamp(before)), None);
    }

    /// The `dir:` source's files: their modification times before the
    /// tracker's start (the first poll sees every file) are no change; a
    /// file written after the start is timed, for any family.
    #[test]
    fn file_ages_are_no_programming_latency() {
        let start = UNIX_EPOCH + Duration::from_secs(1_795_687_200);
        let mut tr = Tracker::new(start);
        // The first poll: a file written 391 s before the agent started.
        tr.changed_at(start - Duration::from_secs(391));
        tr.changed_at(start);
        assert_eq!(tr.take(), (Vec::new(), Vec::new()));
        let later = start + Duration::from_secs(5);
        tr.changed_at(later);
        assert_eq!(tr.take(), (Vec::new(), vec![later]));
        assert_eq!(tr.take(), (Vec::new(), Vec::new()));
    }

    #[test]
    fn changes_counted_as_kube_proxy_counts_them() {
        let start = UNIX_EPOCH + Duration::from_secs(1_795_687_200);
        let mut tr = Tracker::new(start);
        let v6 = |name: &str| {
            let mut s = EndpointSlice::new("ns", name, "svc", IpFamily::V6);
            s.trigger_time = Some(at("2026-11-26T10:00:01Z"));
            s
        };
        let mut fqdn = v6("f");
        fqdn.address_type = AddressType::Fqdn;
        let slices = vec![v6("a"), v6("b"), fqdn];
        tr.observe(&slices, None);
        let svc = |name: &str| {
            crate::model::Service::cluster_ip("ns", name, "10.0.0.1".parse().expect("ip"))
        };
        let mut services = vec![svc("svc"), svc("other")];
        tr.observe_services(&services, None);
        // FQDN slices are not tracked; the trigger times carry the family.
        let counted = Changes {
            endpoints: 2,
            services: 2,
        };
        assert_eq!(tr.counted(), (counted, counted));
        let (tagged, _) = tr.take();
        assert_eq!(tagged.len(), 2);
        assert!(tagged.iter().all(|(f, _)| *f == IpFamily::V6));
        // Nothing new: nothing counted, nothing pending after the take.
        tr.observe(&slices, None);
        tr.observe_services(&services, None);
        assert_eq!(tr.counted(), (Changes::default(), Changes::default()));
        // A Service changed twice counts twice and is one pending change;
        // a deleted one counts.
        services[0]
            .external_ips
            .push("192.0.2.1".parse().expect("ip"));
        tr.observe_services(&services, None);
        services[0]
            .external_ips
            .push("192.0.2.2".parse().expect("ip"));
        tr.observe_services(&services, Some(&[NamespacedName::new("ns", "svc")].into()));
        services.pop();
        tr.observe_services(&services, None);
        assert_eq!(
            tr.counted(),
            (
                Changes {
                    endpoints: 0,
                    services: 3
                },
                Changes {
                    endpoints: 0,
                    services: 2
                }
            )
        );
        // A deleted slice is an endpoint change.
        tr.observe(&slices[..1], None);
        assert_eq!(tr.counted().0.endpoints, 1);
    }
}
