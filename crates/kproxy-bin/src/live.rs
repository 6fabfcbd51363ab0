//! The live cluster as input: `--kubeconfig FILE` / `--context NAME` (or a
//! PATH `kube:` / `kube:CONTEXT`) on `compile`, `trace`, `graph`, `check`
//! and either side of `diff`.
//!
//! One read of the API server gives what the file readers give: Services
//! and EndpointSlices (with kube-proxy's informer label selector,
//! [`crate::agent::kube::service_selector`]), the
//! node's Node (`--hostname-override`, else the configuration's
//! `hostnameOverride`, else every Node, the only one being the node),
//! ServiceCIDRs, and kube-proxy's configuration from the
//! `kube-system/kube-proxy` ConfigMap (`--kube-proxy-configmap NS/NAME`;
//! not read when `--config` is given, which wins as always). The objects
//! are converted by [`kproxy_core::convert::inventory`], as files are.
//!
//! Lists are paginated (`limit` / `continue`); the whole read is bounded by
//! `--request-timeout`. Errors are one line naming the resource, the server
//! and the HTTP status.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kproxy_core::config::parse_go_duration;
use kproxy_core::convert::{Inventory, Object, configmap_proxy_config, inventory};
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

use crate::compile::load;
use crate::settings::NodeArgs;

/// The PATH that names the live cluster (`kube:` for the kubeconfig's
/// context, `kube:CONTEXT` for another).
pub const LIVE_PATH_PREFIX: &str = "kube:";

/// The ConfigMap kube-proxy's configuration is read from by default.
pub const DEFAULT_CONFIGMAP: &str = "kube-system/kube-proxy";

/// The log filter without `KPROXY_LOG`: warnings, but not kube-rs' own
/// ERROR line for every failed request (the command's error, or `run`'s
/// watch warning, already names the request and its HTTP status).
pub const DEFAULT_LOG_FILTER: &str = "warn,kube_client::client::builder=off";

/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// Pages per list at most (5 million objects): a server that never ends a
/// list is an error, not a loop.
const MAX_PAGES: usize = 10_000;

/// Options of the commands that can read the cluster from the API server.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Input: the live cluster")]
pub struct LiveArgs {
    /// Read the cluster state from the API server of this kubeconfig (the
    /// PATHs are then left out; `kube:` as a PATH, or a `diff` side, names
    /// the live cluster with the default kubeconfig: $KUBECONFIG,
    /// ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context);
    /// reads the live cluster, as --kubeconfig does.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The ConfigMap holding kube-proxy's configuration (its `config.conf`)
    /// in the live cluster. Default: kube-system/kube-proxy, skipped with a
    /// warning when absent. --config FILE wins over it.
    #[arg(long, value_name = "NS/NAME")]
    pub kube_proxy_configmap: Option<String>,
    /// How long reading the live cluster may take in all (Go duration).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: String,
}

/// `--request-timeout`'s default.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "60s";

impl Default for LiveArgs {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            kube_proxy_configmap: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT.into(),
        }
    }
}

/// Where a command's cluster state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Manifests (files, directories, `-`).
    Files(&'a [PathBuf]),
    /// The API server; `context`: the kubeconfig context (else --context,
    /// else the current one).
    Cluster {
        /// The context named by `kube:CONTEXT`.
        context: Option<String>,
    },
}

/// What `paths` name, given the live options: `kube:` / `kube:CONTEXT`
/// alone is the live cluster, and so are no PATHs at all with
/// `--kubeconfig` or `--context`.
///
/// ```
/// use std::path::PathBuf;
/// use kproxy_bin::live::{Input, LiveArgs, input};
/// let live = LiveArgs::default();
/// let p = [PathBuf::from("kube:prod")];
/// assert_eq!(input(&live, &p).unwrap(), Input::Cluster { context: Some("prod".into()) });
/// let files = [PathBuf::from("cluster.yaml")];
/// assert_eq!(input(&live, &files).unwrap(), Input::Files(&files));
/// ```
pub fn input<'a>(live: &LiveArgs, paths: &'a [PathBuf]) -> Result<Input<'a>> {
    fn live_path(p: &Path) -> Option<&str> {
        p.to_str().and_then(|s| s.strip_prefix(LIVE_PATH_PREFIX))
    }
    match paths {
        [] if live.kubeconfig.is_some() || live.context.is_some() => {
            Ok(Input::Cluster { context: None })
        }
        [one] if live_path(one).is_some() => Ok(Input::Cluster {
            context: live_path(one).filter(|c| !c.is_empty()).map(str::to_string),
        }),
        _ => {
            if let Some(p) = paths.iter().find(|p| live_path(p).is_some()) {
                bail!(
                    "{}: the live cluster cannot be mixed with files (give it alone)",
                    p.display()
                );
            }
            Ok(Input::Files(paths))
        }
    }
}

/// Reads the cluster state the PATHs name: the live cluster (see
/// [`input`]) or the manifests.
pub fn load_input(live: &LiveArgs, node: &NodeArgs, paths: &[PathBuf]) -> Result<Inventory> {
    match input(live, paths)? {
        Input::Files(p) => {
            if live.kubeconfig.is_some() || live.context.is_some() {
                bail!(
                    "--kubeconfig/--context read the live cluster: leave out the PATHs (or give `kube:`)"
                );
            }
            load(p)
        }
        Input::Cluster { context } => read_cluster(live, node, context.as_deref()),
    }
}

/// Both states of `kproxy diff`; either may be the live cluster (read once
/// when both are the same one).
pub fn load_sides(
    live: &LiveArgs,
    node: &NodeArgs,
    before: &[PathBuf],
    after: &[PathBuf],
) -> Result<(Inventory, Inventory)> {
    load_sides_then(live, node, before, after, |_, inv| Ok(inv))
}

/// [`load_sides`], handing each state to `then` (`true`: the old state) on
/// the thread that loaded it, as soon as it is loaded: each side's memory
/// is freed and reused where it was allocated, and neither side waits for
/// the other. Loading errors come first (the old state's first), as with
/// [`load_sides`], then `then`'s.
pub fn load_sides_then<T: Send>(
    live: &LiveArgs,
    node: &NodeArgs,
    before: &[PathBuf],
    after: &[PathBuf],
    then: impl Fn(bool, Inventory) -> Result<T> + Sync,
) -> Result<(T, T)> {
    let (b, a) = (input(live, before)?, input(live, after)?);
    let is_cluster = |i: &Input<'_>| matches!(i, Input::Cluster { .. });
    if (live.kubeconfig.is_some() || live.context.is_some()) && !is_cluster(&b) && !is_cluster(&a) {
        bail!(
            "--kubeconfig/--context read the live cluster: name it as a side (--before kube: or --after kube:)"
        );
    }
    let read = |i: &Input<'_>| match i {
        Input::Files(p) => load(p),
        Input::Cluster { context } => read_cluster(live, node, context.as_deref()),
    };
    let then = &then;
    if a == b {
        let before = read(&b)?;
        let after = before.clone();
        let (b, a) = std::thread::scope(|s| {
            let b = s.spawn(move || then(true, before));
            let a = then(false, after);
            let b = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (b, a)
        });
        return Ok((b?, a?));
    }
    // Both sides at the same time (the machine's second core).
    let (b, a) = std::thread::scope(|s| {
        let b = s.spawn(|| read(&b).map(|inv| then(true, inv)));
        let a = read(&a).map(|inv| then(false, inv));
        let b = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (b, a)
    });
    let (b, a) = (b?, a?);
    Ok((b?, a?))
}

/// `NS/NAME` of `--kube-proxy-configmap`.
fn configmap_name(spec: &str) -> Result<(&str, &str)> {
    match spec.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => bail!("--kube-proxy-configmap: {spec:?} is not NAMESPACE/NAME"),
    }
}

/// The request timeout of `--request-timeout`.
fn request_timeout(live: &LiveArgs) -> Result<Duration> {
    let d =
        parse_go_duration(&live.request_timeout).map_err(|e| anyhow!("--request-timeout: {e}"))?;
    if d.is_zero() {
        bail!("--request-timeout: must be more than 0");
    }
    Ok(d)
}

/// One request's context for its errors: what was asked of which server,
/// and until when.
struct Reader {
    client: Client,
    server: String,
    deadline: Instant,
    timeout: Duration,
}

impl Reader {
    /// `cannot list Services (/api/v1/services) from URL`.
    fn what(&self, verb: &str, kind: &str, path: &str) -> String {
        format!("cannot {verb} {kind} ({path}) from {}", self.server)
    }

    fn error(&self, what: &str, e: kube::Error) -> anyhow::Error {
        match e {
            kube::Error::Api(s) => {
                let mut m = format!("{what}: HTTP {}", s.code);
                if !s.reason.is_empty() {
                    m.push_str(&format!(" {}", s.reason));
                }
                if !s.message.is_empty() {
                    m.push_str(&format!(": {}", s.message));
                }
                anyhow!(one_line(&m))
            }
            other => anyhow!(one_line(&format!(
                "{what}: {:#}",
                anyhow::Error::from(other)
            ))),
        }
    }

    fn timed_out(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{what}: no answer within {:?} (--request-timeout)",
            self.timeout
        )
    }

    /// Every object of `api`, page by page.
    async fn list<K>(
        &self,
        api: Api<K>,
        kind: &str,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Vec<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let what = self.what("list", kind, &K::url_path(&(), None));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut lp = ListParams::default().limit(PAGE_SIZE);
            if let Some(l) = labels {
                lp = lp.labels(l);
            }
            if let Some(f) = fields {
                lp = lp.fields(f);
            }
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = timeout_at(self.deadline, api.list(&lp))
                .await
                .map_err(|_| self.timed_out(&what))?
                .map_err(|e| self.error(&what, e))?;
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
        bail!("{what}: more than {MAX_PAGES} pages of {PAGE_SIZE}")
    }

    /// The configuration in ConfigMap `ns/name`; `explicit`: named by the
    /// flag (then a missing ConfigMap or configuration is an error, else a
    /// warning).
    async fn proxy_config(
        &self,
        ns: &str,
        name: &str,
        explicit: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(String, Object)>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let path = format!("{}/{name}", ConfigMap::url_path(&(), Some(ns)));
        let what = self.what("read", "ConfigMap", &path);
        let got = timeout_at(self.deadline, api.get_opt(name))
            .await
            .map_err(|_| self.timed_out(&what))?
            .map_err(|e| self.error(&what, e))?;
        let Some(cm) = got else {
            if explicit {
                bail!("{what}: HTTP 404 NotFound");
            }
            warnings.push(format!(
                "{path}: no ConfigMap {ns}/{name}: kube-proxy's defaults and the flags apply (--config FILE, --kube-proxy-configmap NS/NAME)"
            ));
            return Ok(None);
        };
        match configmap_proxy_config(&cm).map_err(|e| anyhow!("{path}: {e}"))? {
            Some(c) => Ok(Some((path, Object::ProxyConfig(Box::new(c))))),
            None if explicit => {
                bail!("{path}: ConfigMap {ns}/{name} holds no KubeProxyConfiguration")
            }
            None => {
                warnings.push(format!(
                    "{path}: ConfigMap {ns}/{name} holds no KubeProxyConfiguration: kube-proxy's defaults and the flags apply"
                ));
                Ok(None)
            }
        }
    }
}

/// The kubeconfig's client (`kubeconfig`: a file, else $KUBECONFIG /
/// ~/.kube/config, else in-cluster), with `context`, and the server's URL.
async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<(Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow!("{}: cannot read kubeconfig: {}", path.display(), one_line(&e.to_string())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| anyhow!("kubeconfig: {}", one_line(&e.to_string())))?,
        (None, None) => kube::Config::infer().await.map_err(|e| {
            anyhow!(
                "no kubeconfig ($KUBECONFIG, ~/.kube/config, --kubeconfig) and no in-cluster configuration: {}",
                one_line(&e.to_string())
            )
        })?,
    };
    // No client timeouts: the caller bounds every request by the
    // --request-timeout deadline, and names the request that ran out.
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = Client::try_from(config).context("cannot build the Kubernetes client")?;
    Ok((client, server))
}

/// Reads the live cluster: `context` (`kube:CONTEXT`) overrides
/// `--context`. Warnings (a missing ConfigMap, objects skipped) are in the
/// inventory's, prefixed with the resource path they come from.
pub fn read_cluster(live: &LiveArgs, node: &NodeArgs, context: Option<&str>) -> Result<Inventory> {
    let timeout = request_timeout(live)?;
    let configmap = match &live.kube_proxy_configmap {
        Some(c) => Some((configmap_name(c)?, true)),
        None if node.config.is_some() => None,
        None => Some((configmap_name(DEFAULT_CONFIGMAP)?, false)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let context = context.or(live.context.as_deref());
    let (objects, mut warnings) = rt.block_on(async {
        let deadline = Instant::now() + timeout;
        let (client, server) = timeout_at(deadline, client(live.kubeconfig.as_deref(), context))
            .await
            .map_err(|_| {
                anyhow!("kubeconfig: no client within {timeout:?} (--request-timeout)")
            })??;
        let r = Reader {
            client,
            server,
            deadline,
            timeout,
        };
        let mut warnings = Vec::new();
        let mut objects: Vec<(String, Object)> = Vec::new();
        // --config (read by the settings) wins over the ConfigMap.
        if let Some(((ns, name), explicit)) = configmap
            && let Some(cfg) = r.proxy_config(ns, name, explicit, &mut warnings).await?
        {
            objects.push(cfg);
        }
        let config = objects.iter().find_map(|(_, o)| match o {
            Object::ProxyConfig(c) => Some(c.as_ref()),
            _ => None,
        });
        let proxy_name = config
            .and_then(|c| c.service_proxy_name.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let selector = crate::agent::kube::service_selector(proxy_name);
        let node_name = node
            .hostname_override
            .as_deref()
            .or(config.and_then(|c| c.hostname_override.as_deref()))
            .map(|h| h.trim().to_lowercase())
            .filter(|h| !h.is_empty());
        let node_field = node_name.map(|n| format!("metadata.name={n}"));
        let c = &r.client;
        let (services, slices, nodes, cidrs) = futures::join!(
            r.list(
                Api::<Service>::all(c.clone()),
                "Services",
                Some(&selector),
                None
            ),
            r.list(
                Api::<EndpointSlice>::all(c.clone()),
                "EndpointSlices",
                Some(&selector),
                None
            ),
            r.list(
                Api::<Node>::all(c.clone()),
                "Nodes",
                None,
                node_field.as_deref()
            ),
            r.list(
                Api::<ServiceCIDR>::all(c.clone()),
                "ServiceCIDRs",
                None,
                None
            ),
        );
        let src = |p: String| p;
        let services_path = src(Service::url_path(&(), None));
        objects.extend(
            services?
                .into_iter()
                .map(|o| (services_path.clone(), Object::Service(Box::new(o)))),
        );
        let slices_path = EndpointSlice::url_path(&(), None);
        objects.extend(
            slices?
                .into_iter()
                .map(|o| (slices_path.clone(), Object::EndpointSlice(Box::new(o)))),
        );
        let nodes_path = Node::url_path(&(), None);
        objects.extend(
            nodes?
                .into_iter()
                .map(|o| (nodes_path.clone(), Object::Node(Box::new(o)))),
        );
        // Clusters before 1.33 serve no ServiceCIDRs (404): none, as kube-proxy has none.
        match cidrs {
            Ok(v) => {
                let path = ServiceCIDR::url_path(&(), None);
                objects.extend(
                    v.into_iter()
                        .map(|o| (path.clone(), Object::ServiceCidr(Box::new(o)))),
                );
            }
            Err(e) if e.to_string().contains(": HTTP 404") => {}
            Err(e) => return Err(e),
        }
        Ok::<_, anyhow::Error>((objects, warnings))
    })?;
    let mut inv = inventory(objects);
    warnings.append(&mut inv.warnings);
    inv.warnings = warnings;
    Ok(inv)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        let live = LiveArgs {
            kubeconfig: Some("k".into()),
            ..LiveArgs::default()
        };
        assert_eq!(input(&live, &[]).unwrap(), Input::Cluster { context: None });
        assert_eq!(input(&LiveArgs::default(), &[]).unwrap(), Input::Files(&[]));
        let p = [PathBuf::from("kube:")];
        assert_eq!(input(&live, &p).unwrap(), Input::Cluster { context: None });
        let mixed = [PathBuf::from("a.yaml"), PathBuf::from("kube:")];
        assert_eq!(
            input(&live, &mixed).unwrap_err().to_string(),
            "kube:: the live cluster cannot be mixed with files (give it alone)"
        );
    }

    #[test]
    fn flags() {
        assert_eq!(
            configmap_name("kube-system/kube-proxy").unwrap(),
            ("kube-system", "kube-proxy")
        );
        for bad in ["kube-proxy", "/x", "a/", "a/b/c"] {
            assert!(configmap_name(bad).is_err(), "{bad}");
        }
        let mut live = LiveArgs {
            request_timeout: "0s".into(),
            ..LiveArgs::default()
        };
        assert!(request_timeout(&live).is_err());
        live.request_timeout = "1m".into();
        assert_eq!(request_timeout(&live).unwrap(), Duration::from_secs(60));
    }
}
