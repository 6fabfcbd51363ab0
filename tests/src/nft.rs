//! Helpers for the nftables goldens: replaying a transaction as knftables'
//! fake does, and upstream's `sortNFTablesTransaction` normalisation.

use std::collections::BTreeMap;

/// The state of one table after a transaction, as `add ...` lines.
#[derive(Debug, Default)]
struct Fake {
    table: Option<String>,
    /// (kind, name) -> definition line, in creation order.
    objects: Vec<((String, String), String)>,
    rules: BTreeMap<String, Vec<String>>,
    elements: BTreeMap<String, Vec<String>>,
}

impl Fake {
    fn has(&self, kind: &str, name: &str) -> bool {
        self.objects
            .iter()
            .any(|((k, n), _)| k == kind && n == name)
    }
}

/// Replays an `nft -f` transaction (kproxy's output) on an empty ruleset and
/// dumps the resulting state as knftables' `Fake.Dump()` would: table,
/// chains, sets, maps, counters (each by name), rules chain by chain, then
/// elements. Fails on a command that names a missing object.
pub fn replay(tx: &str) -> Result<String, String> {
    let mut f = Fake::default();
    for line in tx.lines().map(str::trim_end) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split(' ').collect();
        let (verb, kind) = match (w.first(), w.get(1)) {
            (Some(v), Some(k)) => (*v, *k),
            _ => return Err(format!("bad line {line:?}")),
        };
        if kind == "table" {
            if verb == "add" && f.table.is_none() {
                f.table = Some(line.to_string());
            }
            continue;
        }
        let name = w
            .get(4)
            .ok_or_else(|| format!("no object name in {line:?}"))?
            .to_string();
        let container = match kind {
            "rule" | "element" => None,
            _ => Some(kind),
        };
        match (verb, kind) {
            ("add", "rule") => {
                if !f.has("chain", &name) {
                    return Err(format!("rule for missing chain: {line}"));
                }
                f.rules.entry(name).or_default().push(line.to_string());
            }
            ("add", "element") => {
                if !f.has("set", &name) && !f.has("map", &name) {
                    return Err(format!("element for missing set/map: {line}"));
                }
                let list = f.elements.entry(name).or_default();
                if !list.iter().any(|l| l == line) {
                    list.push(line.to_string());
                }
            }
            ("add", k) => {
                if !f.has(k, &name) {
                    f.objects.push(((k.to_string(), name), line.to_string()));
                }
            }
            ("flush", "chain") => {
                if !f.has("chain", &name) {
                    return Err(format!("flush of missing chain: {line}"));
                }
                f.rules.remove(&name);
            }
            ("flush", "set") | ("flush", "map") => {
                if !f.has(kind, &name) {
                    return Err(format!("flush of missing {kind}: {line}"));
                }
                f.elements.remove(&name);
            }
            ("delete", k) if container.is_some() => {
                if !f.has(k, &name) {
                    return Err(format!("delete of missing {k}: {line}"));
                }
                f.objects.retain(|((ok, on), _)| !(ok == k && *on == name));
                match k {
                    "chain" => {
                        f.rules.remove(&name);
                    }
                    "set" | "map" => {
                        f.elements.remove(&name);
                    }
                    _ => {}
                }
            }
            _ => return Err(format!("unsupported command {line:?}")),
        }
    }
    let mut out = String::new();
    if let Some(t) = &f.table {
        out.push_str(t);
        out.push('\n');
    }
    for kind in ["chain", "set", "map", "counter"] {
        let mut defs: Vec<&((String, String), String)> =
            f.objects.iter().filter(|((k, _), _)| k == kind).collect();
        defs.sort_by(|a, b| a.0.1.cmp(&b.0.1));
        for (_, line) in defs {
            out.push_str(line);
            out.push('\n');
        }
    }
    for rules in f.rules.values() {
        for r in rules {
            out.push_str(r);
            out.push('\n');
        }
    }
    for elems in f.elements.values() {
        for e in elems {
            out.push_str(e);
            out.push('\n');
        }
    }
    Ok(out)
}

fn object_order(kind: &str) -> i32 {
    match kind {
        "table" => 10,
        "chain" => 9,
        "rule" => 8,
        "set" => 7,
        "map" => 6,
        "element" => 5,
        _ => 0,
    }
}

/// Upstream's `sortNFTablesTransaction`: blank and `#` lines dropped, lines
/// stable-sorted by object type, then object name (5th word); rules of a
/// chain keep their order, other lines of one object sort by text.
pub fn sort_transaction(tx: &str) -> String {
    let mut lines: Vec<&str> = tx
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    lines.sort_by(|a, b| {
        let wa: Vec<&str> = a.split(' ').collect();
        let wb: Vec<&str> = b.split(' ').collect();
        if wa.len() < 5 || wb.len() < 5 {
            return std::cmp::Ordering::Equal;
        }
        object_order(wb[1])
            .cmp(&object_order(wa[1]))
            .then_with(|| wa[4].cmp(wb[4]))
            .then_with(|| {
                if wa[1] == "rule" {
                    std::cmp::Ordering::Equal
                } else {
                    a.cmp(b)
                }
            })
    });
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_applies_flush_and_delete() {
        let tx = "add table ip t\nadd chain ip t a\nadd rule ip t a drop\nflush chain ip t a\nadd rule ip t a accept\nadd chain ip t b\ndelete chain ip t b\n";
        assert_eq!(
            replay(tx).unwrap(),
            "add table ip t\nadd chain ip t a\nadd rule ip t a accept\n"
        );
        assert!(replay("add table ip t\nadd rule ip t x drop\n").is_err());
    }
}
