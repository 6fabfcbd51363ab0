use kproxy_core::model::*;
use kproxy_core::synthetic::cluster;
#[test]
fn perf() {
    let node = NodeConfig::new(IpFamily::V4, "node-3");
    let a = cluster(5000, 4);
    let b = cluster(5001, 5);
    for standalone in [true] {
        let ra = kproxy_iptables::build(&kproxy_core::plan::plan(&a, &node), kproxy_iptables::LayoutOptions{standalone});
        let rb = kproxy_iptables::build(&kproxy_core::plan::plan(&b, &node), kproxy_iptables::LayoutOptions{standalone});
        let t = std::time::Instant::now();
        let g = kproxy_core::graph::Graph::from_rulesets(&[ra.clone()]);
        eprintln!("graph {} nodes {:?}", g.nodes.len(), t.elapsed());
        let svc = g.services().into_iter().next().unwrap();
        let t = std::time::Instant::now();
        let s = g.service(&svc);
        eprintln!("sub {} nodes {:?}", s.nodes.len(), t.elapsed());
        let t = std::time::Instant::now();
        let d = kproxy_core::diff::diff(&ra, &rb);
        eprintln!("diff {} tables {:?} services {}", d.tables.len(), t.elapsed(), d.services().len());
        let t = std::time::Instant::now();
        for s in d.services() { let _ = d.for_service(s.as_ref()); }
        eprintln!("for_service all {:?}", t.elapsed());
    }
}
