//! kube-proxy releases and the rule layouts ("profiles") kproxy models.
//!
//! Rules kube-proxy writes changed over its releases. kproxy models a few
//! layouts per backend and maps every release to the one that covers it:
//!
//! | backend | releases | profile |
//! |---|---|---|
//! | iptables | 1.5.x | [`IptablesProfile::V1_5`] (the 2017 seed article's layout) |
//! | iptables | 1.34 and later | [`IptablesProfile::Current`] |
//! | nftables | 1.29 to 1.35 | [`NftablesProfile::Pre1_36`] (the layout before the 2026 rework) |
//! | nftables | 1.36 and later | [`NftablesProfile::Current`] |
//!
//! Other releases are an error that lists these ranges (nftables mode does
//! not exist before 1.29). Kubernetes decisions that an old release took
//! differently are planner options ([`crate::plan::Release`]); each profile
//! names the one it needs.
//!
//! ```
//! use kproxy_core::profile::{IptablesProfile, KubeProxyVersion, NftablesProfile};
//! let v: KubeProxyVersion = "v1.5.2".parse().unwrap();
//! assert_eq!(v.iptables_profile().unwrap(), IptablesProfile::V1_5);
//! assert!(v.nftables_profile().is_err());
//! let v: KubeProxyVersion = "1.35".parse().unwrap();
//! assert_eq!(v.nftables_profile().unwrap(), NftablesProfile::Pre1_36);
//! assert!(v.iptables_profile().is_ok());
//! let v: KubeProxyVersion = "current".parse().unwrap();
//! assert_eq!(v.iptables_profile().unwrap(), IptablesProfile::Current);
//! assert!("1.20".parse::<KubeProxyVersion>().unwrap().iptables_profile().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use std::borrow::Cow;

use crate::model::{ClusterState, NodeConfig};
use crate::plan::{Plan, Release, plan_release};

/// The supported iptables releases, for error messages.
pub const IPTABLES_SUPPORTED: &str = "1.5.x (the 1.5 layout) and 1.34 or later (current)";
/// The supported nftables releases, for error messages.
pub const NFTABLES_SUPPORTED: &str =
    "1.29 to 1.35 (the pre-1.36 layout) and 1.36 or later (current)";

/// A kube-proxy release (`--kube-proxy-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KubeProxyVersion {
    /// The newest layout kproxy models (`current`, `latest`).
    #[default]
    Current,
    /// Release 1.MINOR[.PATCH].
    Release {
        /// The minor version.
        minor: u32,
        /// The patch version, when given.
        patch: Option<u32>,
    },
}

/// Errors of version parsing and profile selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Not a version.
    #[error("{input:?} is not a kube-proxy version (examples: 1.5, v1.5.2, 1.35, current)")]
    Parse {
        /// What was given.
        input: String,
    },
    /// A release whose layout kproxy does not model for this backend.
    #[error("kube-proxy {version} is not supported in {backend} mode; supported: {supported}")]
    Unsupported {
        /// The release.
        version: KubeProxyVersion,
        /// `iptables` or `nftables`.
        backend: &'static str,
        /// The supported ranges.
        supported: &'static str,
    },
}

impl FromStr for KubeProxyVersion {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ProfileError::Parse {
            input: s.to_string(),
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("current") || t.eq_ignore_ascii_case("latest") {
            return Ok(Self::Current);
        }
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        // Build metadata and pre-releases (v1.5.2-gke.0, v1.35.0+k3s1) name
        // the same layout.
        let core = t.split(['-', '+']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        let num = |p: &str| -> Result<u32, ProfileError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        let (major, minor, patch) = match parts.as_slice() {
            [ma, mi] => (num(ma)?, num(mi)?, None),
            [ma, mi, pa] => (num(ma)?, num(mi)?, Some(num(pa)?)),
            _ => return Err(err()),
        };
        if major != 1 {
            return Err(err());
        }
        Ok(Self::Release { minor, patch })
    }
}

impl fmt::Display for KubeProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("current"),
            Self::Release { minor, patch: None } => write!(f, "1.{minor}"),
            Self::Release {
                minor,
                patch: Some(p),
            } => write!(f, "1.{minor}.{p}"),
        }
    }
}

impl KubeProxyVersion {
    /// The iptables layout of this release.
    pub fn iptables_profile(self) -> Result<IptablesProfile, ProfileError> {
        match self {
            Self::Current => Ok(IptablesProfile::Current),
            Self::Release { minor: 5, .. } => Ok(IptablesProfile::V1_5),
            Self::Release { minor, .. } if minor >= 34 => Ok(IptablesProfile::Current),
            _ => Err(ProfileError::Unsupported {
                version: self,
                backend: "iptables",
                supported: IPTABLES_SUPPORTED,
            }),
        }
    }

    /// The nftables layout of this release (nftables mode exists since 1.29).
    pub fn nftables_profile(self) -> Result<NftablesProfile, ProfileError> {
        match self {
            Self::Current => Ok(NftablesProfile::Current),
            Self::Release { minor, .. } if (29..=35).contains(&minor) => {
                Ok(NftablesProfile::Pre1_36)
            }
            Self::Release { minor, .. } if minor >= 36 => Ok(NftablesProfile::Current),
            _ => Err(ProfileError::Unsupported {
                version: self,
                backend: "nftables",
                supported: NFTABLES_SUPPORTED,
            }),
        }
    }

    /// The minor version, if a release was named.
    pub fn minor(self) -> Option<u32> {
        match self {
            Self::Current => None,
            Self::Release { minor, .. } => Some(minor),
        }
    }
}

/// An iptables rule layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IptablesProfile {
    /// kube-proxy 1.5 (`pkg/proxy/iptables/proxier.go` of the 1.5 era):
    /// chains hashed from `ns/name:port` (always with the colon), cluster-IP
    /// masquerading in `KUBE-SERVICES`, `KUBE-FW-*` for every load balancer
    /// IP ending in `KUBE-MARK-DROP`, `KUBE-XLB-*` for OnlyLocal services,
    /// `KUBE-MARK-MASQ` with `--set-xmark`, probabilities with 5 decimals.
    V1_5,
    /// kube-proxy 1.34 and later (`KUBE-EXT-*`, `KUBE-SVL-*`,
    /// `KUBE-PROXY-FIREWALL`, ...).
    #[default]
    Current,
}

impl IptablesProfile {
    /// The planner semantics the layout was written for.
    pub fn release(self) -> Release {
        match self {
            Self::V1_5 => Release::V1_5,
            Self::Current => Release::Current,
        }
    }
    /// The releases it covers.
    pub fn covers(self) -> &'static str {
        match self {
            Self::V1_5 => "1.5.x",
            Self::Current => "1.34 and later",
        }
    }
}

/// An nftables rule layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NftablesProfile {
    /// Before the 2026 rework (modelled on upstream's
    /// `TestOverallNFTablesRules` of the v1.33-v1.35 era): a
    /// `mark-for-masquerade` chain, one `endpoint-*` chain per endpoint,
    /// `numgen random mod N vmap` dispatch even for one endpoint and the
    /// three-rule `masquerading` chain.
    Pre1_36,
    /// kube-proxy 1.36 and later.
    #[default]
    Current,
}

impl NftablesProfile {
    /// The planner semantics the layout was written for.
    pub fn release(self) -> Release {
        match self {
            Self::Pre1_36 => Release::V1_35,
            Self::Current => Release::Current,
        }
    }
    /// The releases it covers.
    pub fn covers(self) -> &'static str {
        match self {
            Self::Pre1_36 => "1.29 to 1.35",
            Self::Current => "1.36 and later",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Result<KubeProxyVersion, ProfileError> {
        s.parse()
    }

    #[test]
    fn versions_parse_in_their_usual_spellings() {
        for (s, minor, patch) in [
            ("1.5", 5, None),
            ("v1.5.2", 5, Some(2)),
            (" 1.35 ", 35, None),
            ("V1.36.0", 36, Some(0)),
            ("v1.5.2-gke.0", 5, Some(2)),
            ("1.35.1+k3s1", 35, Some(1)),
        ] {
            assert_eq!(v(s), Ok(KubeProxyVersion::Release { minor, patch }), "{s}");
        }
        assert_eq!(v("current"), Ok(KubeProxyVersion::Current));
        assert_eq!(v("Latest"), Ok(KubeProxyVersion::Current));
        for bad in [
            "", "1", "2.0", "1.x", "v", "1.5.2.1", "1..5", "-1.5", "1.-5",
        ] {
            assert!(v(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn releases_map_to_the_profile_that_covers_them() {
        let ipt = |s: &str| v(s).unwrap().iptables_profile();
        let nft = |s: &str| v(s).unwrap().nftables_profile();
        assert_eq!(ipt("1.5.2"), Ok(IptablesProfile::V1_5));
        assert_eq!(ipt("1.34"), Ok(IptablesProfile::Current));
        assert_eq!(ipt("1.40"), Ok(IptablesProfile::Current));
        assert!(ipt("1.4").is_err());
        assert!(ipt("1.6").is_err());
        assert!(ipt("1.33").is_err());
        assert_eq!(nft("1.29"), Ok(NftablesProfile::Pre1_36));
        assert_eq!(nft("1.35.3"), Ok(NftablesProfile::Pre1_36));
        assert_eq!(nft("1.36"), Ok(NftablesProfile::Current));
        assert!(nft("1.28").is_err());
        assert!(nft("1.5").is_err());
    }

    #[test]
    fn errors_list_the_supported_ranges() {
        let e = v("1.20")
            .unwrap()
            .iptables_profile()
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.20") && e.contains(IPTABLES_SUPPORTED), "{e}");
        let e = v("1.28")
            .unwrap()
            .nftables_profile()
            .unwrap_err()
            .to_string();
        assert!(e.contains(NFTABLES_SUPPORTED), "{e}");
        let e = v("two").unwrap_err().to_string();
        assert!(e.contains("\"two\""), "{e}");
    }
}

/// A backend's rule layout: which mode, and which release's rules it
/// writes. The one place that turns a layout into planner input: the
/// release ([`Layout::release`]) and the node configuration as the mode
/// reads it ([`Layout::node_config`]); [`Layout::plan`] plans with both.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::Release;
/// use kproxy_core::profile::{Layout, NftablesProfile};
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let layout = Layout::Nftables(NftablesProfile::Pre1_36);
/// // iptables.localhostNodePorts is an iptables setting.
/// assert!(node.localhost_node_ports);
/// assert!(!layout.node_config(&node).localhost_node_ports);
/// let plan = layout.plan(&ClusterState::default(), &node);
/// assert_eq!(plan.release, Release::V1_35);
/// assert_eq!(layout.describe(), "nftables (1.29 to 1.35)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// iptables.
    Iptables(IptablesProfile),
    /// nftables (text or JSON).
    Nftables(NftablesProfile),
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Iptables(IptablesProfile::Current)
    }
}

impl Layout {
    /// `iptables (1.5.x)`, `nftables (1.36 and later)`, ...
    pub fn describe(self) -> String {
        match self {
            Layout::Iptables(p) => format!("iptables ({})", p.covers()),
            Layout::Nftables(p) => format!("nftables ({})", p.covers()),
        }
    }
    /// The release whose decisions the layout needs from the planner.
    pub fn release(self) -> Release {
        match self {
            Layout::Iptables(p) => p.release(),
            Layout::Nftables(p) => p.release(),
        }
    }
    /// The iptables profile (the current one for nftables).
    pub fn iptables(self) -> IptablesProfile {
        match self {
            Layout::Iptables(p) => p,
            Layout::Nftables(_) => IptablesProfile::Current,
        }
    }
    /// The node configuration as this mode reads it:
    /// `iptables.localhostNodePorts` is an iptables-only setting (nftables
    /// mode has its own feature gate,
    /// [`NodeConfig::nftables_localhost_node_ports`]).
    pub fn node_config(self, node: &NodeConfig) -> Cow<'_, NodeConfig> {
        match self {
            Layout::Iptables(_) => Cow::Borrowed(node),
            Layout::Nftables(_) => {
                let mut n = node.clone();
                n.localhost_node_ports = false;
                Cow::Owned(n)
            }
        }
    }
    /// Plans `state` for this layout: [`Self::node_config`] planned with
    /// the decisions of [`Self::release`].
    pub fn plan(self, state: &ClusterState, node: &NodeConfig) -> Plan {
        plan_release(state, &self.node_config(node), self.release())
    }
}
