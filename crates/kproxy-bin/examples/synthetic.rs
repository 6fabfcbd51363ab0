//! Prints the rules of kproxy's synthetic cluster (for load experiments):
//!
//! ```sh
//! cargo run --release -p kproxy-bin --example synthetic -- 10000 10 nftables > rules.nft
//! ```
//!
//! Arguments: Services, endpoints per Service, backend (`iptables`, the
//! standalone `iptables-restore` input, or `nftables`, `nft -f` input).
//! The node is `node-3` with the pod CIDR `10.0.0.0/8`.

use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
use kproxy_core::synthetic::cluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let services: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let endpoints: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let state = cluster(services, endpoints);
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse()?);
    let text = match args.get(3).map(String::as_str) {
        Some("nftables") => kproxy_nft::compile(&state, &node, kproxy_nft::Options::default())?,
        _ => kproxy_iptables::compile(
            &state,
            &node,
            kproxy_iptables::Options {
                standalone: true,
                ..Default::default()
            },
        )?,
    };
    print!("{text}");
    Ok(())
}
