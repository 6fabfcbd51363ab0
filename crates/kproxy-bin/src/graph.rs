//! `kproxy graph`: the chain graph of the rules, as Graphviz DOT or SVG.
//!
//! The graph is built from the rule IR ([`kproxy_core::graph`]); iptables
//! rules are built standalone, so that the built-in chains (the hooks) and
//! their jumps lead the picture. SVG is laid out by Graphviz `dot` when it
//! is on PATH, else in-process (layout-rs).
//!
//! Layout time grows much faster than the graph, so a graph bigger than the
//! layout's budget ([`DOT_BUDGET`], [`EMBEDDED_BUDGET`]: nodes plus edges)
//! is summarised ([`Graph::within`]): each Service's endpoint chains folded
//! into one node, then, if that is still too big, every Service's chains
//! folded into one node per table. `--service` and `--detail full` draw everything;
//! `--format dot` is summarised as for `dot`, which is what renders it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use kproxy_core::convert::Inventory;
use kproxy_core::graph::{Detail, Graph, NodeKind};
use kproxy_core::owners::parse_service;

use crate::compile::{Output, ir_rulesets};
use crate::settings::NodeArgs;

/// Output formats of `kproxy graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GraphFormat {
    /// Graphviz DOT (`dot -Tsvg` renders it).
    #[default]
    Dot,
    /// SVG, laid out by Graphviz `dot` when it is on PATH, else in-process
    /// (see --layout).
    Svg,
}

/// Who lays out `--format svg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Layout {
    /// Graphviz `dot` when it is on PATH, else the embedded layout.
    #[default]
    Auto,
    /// Graphviz `dot` (an error when it is not on PATH).
    Dot,
    /// The embedded layout (layout-rs): no Graphviz needed, slower.
    Embedded,
}

/// How much `kproxy graph` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DetailArg {
    /// As much as the layout's budget allows.
    #[default]
    Auto,
    /// Everything.
    Full,
    /// Each Service's endpoint chains and endpoints folded into one node.
    EndpointsFolded,
    /// Every Service's chains folded into one node per table.
    NodeLevel,
}

/// The biggest graph (nodes plus edges) drawn in full for Graphviz `dot`
/// (and `--format dot`); bigger ones are summarised.
pub const DOT_BUDGET: usize = 2_500;

/// The biggest graph (nodes plus edges) drawn in full by the embedded
/// layout; bigger ones are summarised.
pub const EMBEDDED_BUDGET: usize = 600;

/// Arguments of `kproxy graph`.
#[derive(Args, Debug, Clone)]
pub struct GraphArgs {
    /// Node-level configuration.
    #[command(flatten)]
    pub node: NodeArgs,
    /// The backend: iptables or nftables. Default: the proxy mode.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Output format.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Who lays out --format svg: `dot` (Graphviz), `embedded` (in-process,
    /// slower) or `auto` (dot when on PATH).
    #[arg(help_heading = "Output", long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,
    /// Only this Service's chains (`namespace/name`) and the paths to them,
    /// in full.
    #[arg(help_heading = "Output", long, value_name = "NS/NAME")]
    pub service: Option<String>,
    /// How much to draw: `full` (every chain and endpoint, however big),
    /// `endpoints-folded` (each Service's endpoint chains and endpoints
    /// folded into one node with a count), `node-level` (every Service's
    /// chains folded into one node per table, the endpoints into one; the
    /// node-level chains stay) or `auto`: full unless the graph is too big
    /// for the layout (over 2500 nodes plus edges for dot and for --format
    /// dot, 600 for the embedded layout; 30 Services of 10 endpoints are
    /// about 2100), then the first summary that fits, with a note
    /// (--service always draws in full).
    #[arg(help_heading = "Output", long, value_enum, default_value_t = DetailArg::Auto)]
    pub detail: DetailArg,
    /// Draw a node's rules instead of compiled ones: `iptables-save` or
    /// `nft -j list ruleset` output (detected; repeatable).
    #[arg(help_heading = "Input", long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Manifests: files, directories or `-` for stdin (as `kproxy compile`).
    #[arg(help_heading = "Input", required_unless_present_any = ["rules", "kubeconfig", "context"], value_name = "PATH")]
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
    let dot = match (args.format, args.layout) {
        (GraphFormat::Dot, _) | (GraphFormat::Svg, Layout::Embedded) => None,
        (GraphFormat::Svg, Layout::Dot) => Some(
            dot_on_path().ok_or_else(|| anyhow!("--layout dot: Graphviz `dot` is not on PATH"))?,
        ),
        (GraphFormat::Svg, Layout::Auto) => dot_on_path(),
    };
    let budget = match (args.format, &dot) {
        (GraphFormat::Dot, _) | (GraphFormat::Svg, Some(_)) => DOT_BUDGET,
        (GraphFormat::Svg, None) => EMBEDDED_BUDGET,
    };
    let fixed = match args.detail {
        _ if args.service.is_some() => Some(Detail::Full),
        DetailArg::Auto => None,
        DetailArg::Full => Some(Detail::Full),
        DetailArg::EndpointsFolded => Some(Detail::FoldedEndpoints),
        DetailArg::NodeLevel => Some(Detail::NodeLevel),
    };
    let g = match fixed {
        Some(detail) => g.at(detail),
        None => {
            let size = g.size();
            let (small, detail) = g.within(budget);
            if detail != Detail::Full {
                out.warnings.push(format!(
                    "the graph ({size} nodes and edges) is bigger than the layout's budget ({budget}): {}; \
                     --detail full draws everything",
                    small.note.as_deref().unwrap_or("summarised"),
                ));
            }
            small
        }
    };
    out.stdout = match (args.format, dot) {
        (GraphFormat::Dot, _) => g.to_dot(),
        (GraphFormat::Svg, Some(dot)) => run_dot(&dot, &g.to_dot())?,
        (GraphFormat::Svg, None) => svg(&g)?,
    };
    Ok(out)
}

/// Graphviz `dot` on PATH, if any.
fn dot_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("dot"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Lays DOT text out with Graphviz (`dot -Tsvg`, the text on stdin).
fn run_dot(dot: &Path, text: &str) -> Result<String> {
    let mut child = Command::new(dot)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", dot.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("{}: no stdin", dot.display()))?;
    // Written from another thread: dot may fill its stdout before it has
    // read all of stdin.
    let written = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(text.as_bytes()));
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let (written, output) = written;
    let output = output.with_context(|| format!("running {}", dot.display()))?;
    if !output.status.success() {
        bail!(
            "{} -Tsvg failed ({}): {}",
            dot.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("writing to {}: {e}", dot.display()),
        Err(_) => bail!("writing to {}: the writer thread panicked", dot.display()),
    }
    String::from_utf8(output.stdout).with_context(|| format!("{}: output", dot.display()))
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
        if let Some(note) = &g.note {
            let shape = ShapeKind::Box(format!("note: {note}"));
            let size = get_shape_size(dir.flip(), &shape, FONT, false);
            let look = StyleAttr::new(Color::fast("#999999"), 1, None, 0, FONT);
            vg.add_node(Element::create(shape, look, dir.flip(), size));
        }
        let mut w = SVGWriter::new();
        vg.do_it(false, false, false, &mut w);
        w.finalize()
    };
    let svg = std::panic::catch_unwind(render).map_err(|_| anyhow!("SVG layout failed"))?;
    let svg = sorted_styles(&svg);
    Ok(match &g.note {
        Some(note) => with_comment(&svg, note),
        None => svg,
    })
}

/// `svg` with `<!-- note -->` after its first line.
fn with_comment(svg: &str, note: &str) -> String {
    let comment = format!("<!-- kproxy: {} -->\n", note.replace("--", "- -"));
    match svg.find('\n') {
        Some(i) => format!("{}{comment}{}", &svg[..=i], &svg[i + 1..]),
        None => format!("{comment}{svg}"),
    }
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
