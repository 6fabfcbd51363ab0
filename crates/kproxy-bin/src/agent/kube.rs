//! The `kube` source: kube-rs runtime watchers (list, then watch) on
//! Services, EndpointSlices, ServiceCIDRs (when the API serves
//! `networking.k8s.io/v1` `servicecidrs`) and the agent's own Node, on a
//! tokio runtime of their own thread.
//!
//! * The API connection is kube-proxy's ([`Connection`]): a kubeconfig
//!   (`--kubeconfig`, else the configuration's
//!   `clientConnection.kubeconfig`) with `--master` overriding its server;
//!   `--master` alone; else the in-cluster configuration.
//! * Services, EndpointSlices and ServiceCIDRs are listed with kube-proxy's
//!   label selector ([`service_selector`]): no Service meant for another
//!   proxy (`service.kubernetes.io/service-proxy-name`), no headless one
//!   (`service.kubernetes.io/headless`), filtered by the API server.
//!
//! * The first sync waits until every watcher's initial list is complete.
//! * A relist (after a 410 Gone, or when a watch cannot be resumed)
//!   replaces that kind's objects wholesale, so objects deleted while the
//!   watch was down go away.
//! * Watch errors are logged and retried with kube-rs' default backoff;
//!   the source never gives up on a transient API error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kproxy_core::convert::{Inventory, Object, Store};
use kproxy_core::model::NamespacedName;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    EndpointSlice,
    Node,
    ServiceCidr,
}

/// kube-proxy's label selector for Services, EndpointSlices and
/// ServiceCIDRs, as its client sends it (requirements sorted by key):
/// neither label set. `proxy_name`: kproxy's `serviceProxyName`, whose
/// Services are selected instead of unlabelled ones.
///
/// ```
/// use kproxy_bin::agent::kube::service_selector;
/// assert_eq!(
///     service_selector(None),
///     "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
/// );
/// ```
pub fn service_selector(proxy_name: Option<&str>) -> String {
    use kproxy_core::convert::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME};
    let proxy = match proxy_name {
        Some(name) => format!("{LABEL_SERVICE_PROXY_NAME}={name}"),
        None => format!("!{LABEL_SERVICE_PROXY_NAME}"),
    };
    format!("!{LABEL_HEADLESS},{proxy}")
}

/// How to reach the API server, as kube-proxy does (`clientConnection`
/// and `--master`).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The kubeconfig file (`--kubeconfig`, else
    /// `clientConnection.kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// `--master`: the API server's URL, over the kubeconfig's.
    pub master: Option<String>,
    /// `serviceProxyName` (kproxy's): the Services of that proxy name.
    pub service_proxy_name: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    objects: BTreeMap<Kind, BTreeMap<String, Object>>,
    /// Objects added, changed or deleted since the last poll.
    dirty: BTreeSet<(Kind, String)>,
    /// Kinds relisted since the last poll (every object replaced).
    relisted: BTreeSet<Kind>,
    synced: BTreeMap<Kind, bool>,
    generation: u64,
    errors: Vec<String>,
    node_eligible: bool,
    /// The kinds watched (every initial list must complete).
    kinds: Vec<Kind>,
}

/// A running Kubernetes source.
pub struct KubeSource {
    shared: Arc<Mutex<Shared>>,
    /// The objects converted, one bucket per object (`Kind ns/name`).
    store: Store,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: u64,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// `--master` as a URL (`https://` when it has no scheme, as client-go).
fn master_url(master: &str) -> String {
    if master.contains("://") {
        master.to_string()
    } else {
        format!("https://{master}")
    }
}

async fn client(conn: &Connection) -> Result<Client> {
    let master = conn.master.as_deref().map(master_url);
    let bad = |m: &String| format!("--master: {m:?} is not a URL");
    let mut config = match (&conn.kubeconfig, &master) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("{}: cannot read kubeconfig", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("{}: bad kubeconfig", path.display()))?
        }
        (None, Some(url)) => kube::Config::new(url.parse().with_context(|| bad(url))?),
        (None, None) => {
            info!(
                "neither kubeconfig file nor master URL was specified, falling back to in-cluster config"
            );
            kube::Config::infer().await.context(
                "no in-cluster configuration and no kubeconfig (--kubeconfig or clientConnection.kubeconfig)",
            )?
        }
    };
    if let Some(url) = &master {
        config.cluster_url = url.parse().with_context(|| bad(url))?;
    }
    info!(server = %config.cluster_url, "API server");
    Client::try_from(config).context("cannot build the Kubernetes client")
}

/// Whether the API server serves `networking.k8s.io/v1` ServiceCIDRs.
async fn serves_service_cidrs(client: &Client) -> bool {
    match client
        .list_api_group_resources("networking.k8s.io/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "servicecidrs"),
        Err(e) => {
            info!("networking.k8s.io/v1 not served ({e}): ServiceCIDRs not watched");
            false
        }
    }
}

/// Whether kube-proxy counts the node as eligible: not being deleted and
/// not tainted `ToBeDeletedByClusterAutoscaler`.
fn eligible(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && !node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"))
}

async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let stream = watch(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Option<BTreeMap<String, Object>> = None;
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(next) = next else { continue };
        let Some(ev) = next else { return };
        let mut s = lock(&shared);
        match ev {
            Ok(Event::Init) => buffer = Some(BTreeMap::new()),
            Ok(Event::InitApply(o)) => {
                let b = buffer.get_or_insert_with(BTreeMap::new);
                if kind == Kind::Node {
                    s.node_eligible = eligible_any(&o);
                }
                b.insert(key(&o), wrap(o));
            }
            Ok(Event::InitDone) => {
                let objects = buffer.take().unwrap_or_default();
                info!(?kind, objects = objects.len(), "initial list complete");
                s.objects.insert(kind, objects);
                s.relisted.insert(kind);
                s.synced.insert(kind, true);
                s.generation += 1;
            }
            Ok(Event::Apply(o)) => {
                if kind == Kind::Node {
                    s.node_eligible = eligible_any(&o);
                }
                let k = key(&o);
                s.objects
                    .entry(kind)
                    .or_default()
                    .insert(k.clone(), wrap(o));
                s.dirty.insert((kind, k));
                s.generation += 1;
            }
            Ok(Event::Delete(o)) => {
                if kind == Kind::Node {
                    s.node_eligible = false;
                }
                let k = key(&o);
                s.objects.entry(kind).or_default().remove(&k);
                s.dirty.insert((kind, k));
                s.generation += 1;
            }
            Err(e) => {
                warn!(?kind, "watch error (retrying with backoff): {e}");
                s.errors.push(format!("{kind:?} watch: {e}"));
            }
        }
    }
}

/// [`eligible`] for any watched type (only Nodes carry the fields).
fn eligible_any<K: 'static>(o: &K) -> bool {
    match (o as &dyn std::any::Any).downcast_ref::<Node>() {
        Some(n) => eligible(n),
        None => true,
    }
}

impl KubeSource {
    /// Starts the watchers (`kubeconfig`: a file, else the in-cluster
    /// configuration or the default kubeconfig). `node`: the node's name,
    /// whose Node object is watched. Fails only when no client can be built.
    pub fn start(kubeconfig: Option<&Path>, node: &str) -> Result<Self> {
        let conn = Connection {
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            ..Default::default()
        };
        Self::connect(&conn, node)
    }

    /// Starts the watchers on the API server `conn` reaches. `node`: the
    /// node's name, whose Node object is watched. Fails only when no client
    /// can be built.
    pub fn connect(conn: &Connection, node: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        let client = rt.block_on(client(conn))?;
        let cidrs = rt.block_on(serves_service_cidrs(&client));
        let selector = service_selector(conn.service_proxy_name.as_deref());
        let mut kinds = vec![Kind::Service, Kind::EndpointSlice, Kind::Node];
        if cidrs {
            kinds.push(Kind::ServiceCidr);
        }
        let shared = Arc::new(Mutex::new(Shared {
            node_eligible: true,
            kinds,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2, node) = (shared.clone(), stop.clone(), node.to_string());
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let labelled = || watcher::Config::default().labels(&selector);
                let services = watch_kind(
                    Api::<Service>::all(client.clone()),
                    labelled(),
                    Kind::Service,
                    |o| Object::Service(Box::new(o)),
                    s2.clone(),
                    stop2.clone(),
                );
                let slices = watch_kind(
                    Api::<EndpointSlice>::all(client.clone()),
                    labelled(),
                    Kind::EndpointSlice,
                    |o| Object::EndpointSlice(Box::new(o)),
                    s2.clone(),
                    stop2.clone(),
                );
                let nodes = watch_kind(
                    Api::<Node>::all(client.clone()),
                    watcher::Config::default().fields(&format!("metadata.name={node}")),
                    Kind::Node,
                    |o| Object::Node(Box::new(o)),
                    s2.clone(),
                    stop2.clone(),
                );
                let service_cidrs = async {
                    if cidrs {
                        watch_kind(
                            Api::<ServiceCIDR>::all(client),
                            labelled(),
                            Kind::ServiceCidr,
                            |o| Object::ServiceCidr(Box::new(o)),
                            s2,
                            stop2,
                        )
                        .await;
                    }
                };
                futures::join!(services, slices, nodes, service_cidrs);
            });
        });
        Ok(Self {
            shared,
            store: Store::new(),
            stop,
            thread: Some(thread),
            seen: 0,
        })
    }

    /// Whether every watcher has completed its initial list.
    pub fn synced(&self) -> bool {
        let s = lock(&self.shared);
        s.kinds
            .iter()
            .all(|k| s.synced.get(k).copied().unwrap_or(false))
    }

    /// Whether ServiceCIDRs are watched (the API server serves them).
    pub fn watches_service_cidrs(&self) -> bool {
        lock(&self.shared).kinds.contains(&Kind::ServiceCidr)
    }

    /// Whether something changed since the last call; with the watch
    /// errors seen meanwhile. The changes go into the inventory.
    pub fn poll(&mut self) -> (bool, Vec<String>) {
        let mut s = lock(&self.shared);
        let errors = std::mem::take(&mut s.errors);
        let changed = s.generation != self.seen;
        self.seen = s.generation;
        let bucket = |kind: Kind, key: &str| format!("{kind:?} {key}");
        if !s.relisted.is_empty() {
            s.relisted.clear();
            s.dirty.clear();
            let all: Vec<(String, Vec<Object>)> = s
                .objects
                .iter()
                .flat_map(|(kind, objs)| {
                    objs.iter()
                        .map(move |(k, o)| (bucket(*kind, k), vec![o.clone()]))
                })
                .collect();
            drop(s);
            self.store.replace_all(all);
        } else if !s.dirty.is_empty() {
            let dirty = std::mem::take(&mut s.dirty);
            let updates: Vec<(String, Option<Vec<Object>>)> = dirty
                .iter()
                .map(|(kind, k)| {
                    let o = s.objects.get(kind).and_then(|m| m.get(k));
                    (bucket(*kind, k), o.map(|o| vec![o.clone()]))
                })
                .collect();
            drop(s);
            self.store.apply(updates);
        }
        (changed, errors)
    }

    /// The Services whose objects changed since the last call (`None`:
    /// anything may have: a relist, the Node changed).
    pub fn take_changed(&mut self) -> Option<BTreeSet<NamespacedName>> {
        self.store.take_changed()
    }

    /// Whether the node is eligible (kube-proxy's `/healthz` `nodeEligible`).
    pub fn node_eligible(&self) -> bool {
        lock(&self.shared).node_eligible
    }

    /// The objects, converted.
    pub fn inventory(&self) -> &Inventory {
        self.store.inventory()
    }
}
