//! `kproxy graph`: the chain graph of the rules, as Graphviz DOT or SVG.
//!
//! The graph is built from the rule IR ([`kproxy_core::graph`]); iptables
//! rules are built standalone, so that the built-in chains (the hooks) and
//! their jumps lead the picture. SVG is laid out in-process (layout-rs), so
//! no Graphviz is needed.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use kproxy_core::convert::Inventory;
use kproxy_core::graph::{Graph, NodeKind};
use kproxy_core::owners::parse_service;

use crate::compile::{Output, ir_rulesets};
use crate::settings::NodeArgs;

/// Output formats of `kproxy graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GraphFormat {
    /// Graphviz DOT (`dot -Tsvg` renders it).
    #[default]
    Dot,
    /// SVG, laid out without Graphviz.
    Svg,
}

/// Arguments of `kproxy graph`.
#[derive(Args, Debug, Clone)]
pub struct GraphArgs {
    /// Node-level configuration.
    #[command(flatten)]
    pub node: NodeArgs,
    /// The backend: iptables or nftables. Default: the proxy mode.
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Only this Service's chains (`namespace/name`) and the paths to them.
    #[arg(long, value_name = "NS/NAME")]
    pub service: Option<String>,
    /// Draw a node's rules instead of compiled ones: `iptables-save` or
    /// `nft -j list ruleset` output (detected; repeatable).
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Manifests: files, directories or `-` for stdin (as `kproxy compile`).
    #[arg(required_unless_present_any = ["rules", "kubeconfig", "context"], value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The live cluster as input (--kubeconfig, --context).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

/// The graph of an already loaded inventory.
pub fn build_graph(args: &GraphArgs, inv: &Inventory) -> Result<(Graph, Vec<String>)> {
    let (rulesets, warnings) = if args.rules.is_empty() {
        let (_, families, warnings) = ir_rulesets(&args.node, args.backend.as_deref(), true, inv)?;
        (families.into_iter().map(|f| f.ruleset).collect(), warnings)
    } else {
        let d = crate::check::read_dumps(&args.rules)?;
        let per_family: Vec<_> = d.families().into_iter().map(|f| d.family(f)).collect();
        (per_family, d.notes)
    };
    let mut graph = Graph::from_rulesets(&rulesets);
    if let Some(s) = &args.service {
        let svc =
            parse_service(s).ok_or_else(|| anyhow!("--service: {s:?} is not namespace/name"))?;
        let sub = graph.service(&svc);
        if sub.nodes.is_empty() {
            let known: Vec<String> = graph.services().iter().map(|s| s.to_string()).collect();
            bail!(
                "--service: no rules for {svc} (services with rules: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        graph = sub;
    }
    Ok((graph, warnings))
}

/// Runs `kproxy graph` on an already loaded inventory.
pub fn graph(args: &GraphArgs, inv: &Inventory) -> Result<Output> {
    let (g, warnings) = build_graph(args, inv)?;
    let mut out = Output {
        warnings: inv.warnings.clone(),
        ..Output::default()
    };
    out.warnings.extend(warnings);
    out.stdout = match args.format {
        GraphFormat::Dot => g.to_dot(),
        GraphFormat::Svg => svg(&g)?,
    };
    Ok(out)
}

/// Runs `kproxy graph` from its arguments.
pub fn run(args: &GraphArgs) -> Result<Output> {
    let inv = crate::live::load_input(&args.live, &args.node, &args.paths)?;
    graph(args, &inv)
}

/// Lays `g` out top to bottom and renders it as SVG (the same graph always
/// gives the same bytes).
///
/// ```
/// use kproxy_core::graph::Graph;
/// let svg = kproxy_bin::graph::svg(&Graph::default()).unwrap();
/// assert!(svg.starts_with("<svg"));
/// ```
pub fn svg(g: &Graph) -> Result<String> {
    use layout::backends::svg::SVGWriter;
    use layout::core::base::Orientation;
    use layout::core::color::Color;
    use layout::core::style::{LineStyleKind, StyleAttr};
    use layout::std_shapes::render::get_shape_size;
    use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
    use layout::topo::layout::VisualGraph;

    if g.nodes.is_empty() {
        return Ok(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"0\"></svg>\n".into(),
        );
    }
    const FONT: usize = 14;
    let render = || {
        let dir = Orientation::TopToBottom;
        let mut vg = VisualGraph::new(dir);
        let handles: Vec<_> = g
            .nodes
            .iter()
            .map(|n| {
                let fill = match n.kind {
                    NodeKind::Hook => "#dde8ff",
                    NodeKind::Chain => "#ffffff",
                    NodeKind::Map => "#fff2cc",
                    NodeKind::Endpoint => "#d9f2d9",
                    NodeKind::Verdict => "#f2dede",
                };
                let shape = ShapeKind::Box(n.label.clone());
                // As layout-rs' own DOT front end: shapes of a left-to-right
                // graph are sized top to bottom.
                let size = get_shape_size(dir.flip(), &shape, FONT, false);
                let look = StyleAttr::new(
                    Color::fast("black"),
                    1,
                    Some(Color::fast(fill)),
                    if n.kind == NodeKind::Endpoint { 10 } else { 0 },
                    FONT,
                );
                vg.add_node(Element::create(shape, look, dir.flip(), size))
            })
            .collect();
        for e in &g.edges {
            let look = StyleAttr::new(Color::fast("#333333"), 1, None, 0, FONT - 2);
            let arrow = Arrow::new(
                LineEndKind::None,
                LineEndKind::Arrow,
                LineStyleKind::Normal,
                &e.label,
                &look,
                &None,
                &None,
            );
            vg.add_edge(arrow, handles[e.from], handles[e.to]);
        }
        let mut w = SVGWriter::new();
        vg.do_it(false, false, false, &mut w);
        w.finalize()
    };
    let svg = std::panic::catch_unwind(render).map_err(|_| anyhow!("SVG layout failed"))?;
    Ok(sorted_styles(&svg))
}

/// layout-rs writes its font classes in hash order; sorts them so that the
/// same graph always gives the same bytes.
fn sorted_styles(svg: &str) -> String {
    let (Some(start), Some(end)) = (svg.find("<style>\n"), svg.find("</style>")) else {
        return svg.to_string();
    };
    let body_start = start + "<style>\n".len();
    if end < body_start {
        return svg.to_string();
    }
    let mut lines: Vec<&str> = svg[body_start..end].lines().collect();
    lines.sort_unstable();
    let mut out = String::with_capacity(svg.len());
    out.push_str(&svg[..body_start]);
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&svg[end..]);
    out
}
