//! Which chains of one ruleset another holds the same: a class whose
//! trace through the first enters none of the others takes the same path
//! through the second, and need not be traced there.

use std::collections::{HashMap, HashSet};

use crate::ir::{Chain, Match, Ruleset, Table, TableFamily, Verdict};

/// Whether a rule of `c` reads a set or map of its table.
fn reads_lookups(c: &Chain) -> bool {
    c.rules.iter().any(|r| {
        r.matches.iter().any(|m| matches!(m, Match::InSet { .. }))
            || matches!(r.verdict, Some(Verdict::VerdictMap { .. }))
    })
}

/// The key a tracer finds a table's chains under: its family and name.
fn key(t: &Table) -> (u8, u8, &str) {
    let (kind, family) = match t.family {
        TableFamily::Iptables(f) => (0, f),
        TableFamily::Nft(f) => (1, f),
    };
    (kind, family as u8, t.name.as_str())
}

/// The chains of `left` that `right` does not hold the same: a chain is
/// the same when `right`'s table of that family and name has a chain of
/// that name (the first, as the tracer takes) with the same kind and
/// rules, and, if its rules read sets or maps, the table's sets and maps
/// are the same too. `None` when a ruleset holds two tables of one family
/// and name (then chains cannot be paired).
pub(super) fn differing<'a>(left: &'a Ruleset, right: &Ruleset) -> Option<Vec<&'a Chain>> {
    let mut rights: HashMap<(u8, u8, &str), &Table> = HashMap::new();
    for t in &right.tables {
        if rights.insert(key(t), t).is_some() {
            return None;
        }
    }
    let mut lefts = HashSet::new();
    let mut out = Vec::new();
    for t in &left.tables {
        if !lefts.insert(key(t)) {
            return None;
        }
        let theirs = rights.get(&key(t));
        let lookups_same = theirs.is_some_and(|r| t.sets == r.sets && t.maps == r.maps);
        let mut chains: HashMap<&str, &Chain> = HashMap::new();
        for c in theirs.iter().flat_map(|r| &r.chains) {
            chains.entry(c.name.as_str()).or_insert(c);
        }
        let mut first = HashSet::new();
        for c in &t.chains {
            if !first.insert(c.name.as_str()) {
                // The tracer never enters a later chain of the same name.
                continue;
            }
            let same = chains
                .get(c.name.as_str())
                .is_some_and(|r| *r == c && (lookups_same || !reads_lookups(c)));
            if !same {
                out.push(c);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Hook, Rule};
    use crate::model::IpFamily;

    fn ruleset(drop_in: &[&str]) -> Ruleset {
        let mut t = Table::new("filter", TableFamily::Iptables(IpFamily::V4));
        for name in ["A", "B"] {
            let mut c = Chain::new(name);
            if drop_in.contains(&name) {
                c.push(Rule::new().verdict(Verdict::Drop));
            }
            t.chains.push(c);
        }
        t.chains.push(Chain::builtin(Hook::Input));
        Ruleset { tables: vec![t] }
    }

    #[test]
    fn pairs_chains_by_table_and_name() {
        let (a, b) = (ruleset(&["A"]), ruleset(&["A", "B"]));
        let names = |v: Vec<&Chain>| v.iter().map(|c| c.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(differing(&a, &a).unwrap()), Vec::<String>::new());
        assert_eq!(names(differing(&a, &b).unwrap()), vec!["B"]);
        // A chain the other lacks differs; the other's extra chains are
        // not the first's to enter.
        let mut c = a.clone();
        c.tables[0].chains.remove(0);
        assert_eq!(names(differing(&a, &c).unwrap()), vec!["A"]);
        assert_eq!(names(differing(&c, &a).unwrap()), Vec::<String>::new());
        // Two tables of one name: no pairing.
        let mut twice = a.clone();
        twice.tables.push(a.tables[0].clone());
        assert!(differing(&twice, &a).is_none());
        assert!(differing(&a, &twice).is_none());
    }
}
