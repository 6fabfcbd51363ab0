//! `iptables-restore --noflush` inputs made fast for iptables-nft.
//!
//! iptables-nft (1.8.x) keeps, for each table section of a restore input,
//! the list of chains its commands name (each command's chain and jump
//! target), to fetch only those from the kernel at `COMMIT`. That list is a
//! sorted linked list searched from its head for every command, so a
//! `--noflush` restore costs commands x chains string comparisons: a fresh
//! node's first sync of 10,000 Services (435k rules, 110k chains) does not
//! finish in ten minutes, where a plain restore (whose table flush names no
//! chain) takes seconds. One command that names no chain switches the list
//! off for the rest of the section: iptables-nft then fetches the whole
//! table once.
//!
//! [`with_table_listing`] adds such a command, `-S` (list the table's rules;
//! it reads and writes nothing else), right after the `*TABLE` line of the
//! sections where the list would cost more than reading the whole table.
//! Not to a section that names a built-in chain (`PREROUTING`, `INPUT`,
//! ...): to list a table, iptables-nft puts the built-in chains the kernel
//! does not hold into its cache as if they existed, so a later `-A
//! FORWARD` would not create the missing chain and fail. kproxy's payloads
//! name none (the agent ensures its jumps from the built-in chains one by
//! one afterwards).
//! The restore stays one transaction per table, checked against the
//! ruleset generation like any other, and writes exactly the same rules;
//! the listing goes to the tool's standard output, which the caller drops.
//! iptables-legacy has no such list: its inputs are left as they are.
//!
//! ```
//! use kproxy_iptables::noflush::with_table_listing;
//!
//! let input = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n";
//! // A fresh node: listing its empty table costs nothing.
//! let out = with_table_listing(input, |_| 0);
//! assert_eq!(out, "*nat\n-S\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n");
//! // A node holding 400k rules in nat: a small input is cheaper as it is.
//! assert_eq!(with_table_listing(input, |_| 400_000), input);
//! ```

use std::collections::HashSet;

/// The command added after a section's `*TABLE` line: lists the table's
/// rules (it names no chain).
pub const TABLE_LISTING: &str = "-S";

/// How many chain-list steps (string comparisons) cost about as much as
/// listing one rule of the table: measured with iptables 1.8.9 on the
/// synthetic cluster, about 17 ns per step against 5-10 us per listed rule.
pub const STEPS_PER_LISTED_RULE: u64 = 1000;

/// What one table section of a restore input costs iptables-nft's chain
/// list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SectionCost {
    /// Commands (chain declarations and rule commands).
    pub commands: u64,
    /// Distinct chains named (declared, written or jumped to).
    pub chains: u64,
    /// Whether a command already names no chain (the list is off).
    pub chainless: bool,
    /// Whether a command names a built-in chain (no listing then).
    pub builtin: bool,
}

impl SectionCost {
    /// The list's cost in string comparisons, at most: every command walks
    /// up to the whole list (twice with a jump target).
    ///
    /// ```
    /// use kproxy_iptables::noflush::SectionCost;
    ///
    /// let c = SectionCost { commands: 10, chains: 4, ..Default::default() };
    /// assert_eq!(c.steps(), 40);
    /// assert_eq!(SectionCost { chainless: true, ..c }.steps(), 0);
    /// ```
    pub fn steps(&self) -> u64 {
        if self.chainless {
            0
        } else {
            self.commands.saturating_mul(self.chains)
        }
    }

    /// Whether listing a table of `node_rules` rules is cheaper than the
    /// list.
    ///
    /// ```
    /// use kproxy_iptables::noflush::SectionCost;
    ///
    /// let first_sync = SectionCost { commands: 435_000, chains: 110_000, ..Default::default() };
    /// assert!(first_sync.worth_listing(400_000));
    /// let partial = SectionCost { commands: 40, chains: 12, ..Default::default() };
    /// assert!(!partial.worth_listing(400_000));
    /// assert!(partial.worth_listing(0));
    /// // A built-in chain written: never (see the module documentation).
    /// assert!(!SectionCost { builtin: true, ..first_sync }.worth_listing(0));
    /// ```
    pub fn worth_listing(&self, node_rules: usize) -> bool {
        if self.builtin {
            return false;
        }
        let listing = (node_rules as u64).saturating_mul(STEPS_PER_LISTED_RULE);
        self.steps() > listing
    }
}

/// Whether `chain` is a built-in chain (`PREROUTING`, ...).
fn is_builtin(chain: &str) -> bool {
    use kproxy_core::ir::Hook;
    [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ]
    .iter()
    .any(|h| h.as_iptables() == chain)
}

/// The chain a restore command line names first, if it is a command that
/// names one (`:CHAIN`, `-A CHAIN`, ...); `Err(())` for a command without
/// a chain (`-S`, `-F`, ...); `Ok(None)` for anything else.
fn command_chain(line: &str) -> Result<Option<&str>, ()> {
    if let Some(decl) = line.strip_prefix(':') {
        return Ok(decl.split_whitespace().next());
    }
    if !line.starts_with('-') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let _command = words.next();
    match words.next() {
        Some(w) if !w.starts_with('-') => Ok(Some(w)),
        _ => Err(()),
    }
}

/// The jump or goto target of a rule line.
fn jump_target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if matches!(w, "-j" | "-g" | "--jump" | "--goto") {
            return words.next();
        }
    }
    None
}

/// The cost of each table section of `input`, in order: (table, cost).
///
/// ```
/// use kproxy_iptables::noflush::{section_costs, SectionCost};
///
/// let input = "*filter\n:A - [0:0]\n-A A -j B\n-A A -j ACCEPT\nCOMMIT\n";
/// let costs = section_costs(input);
/// assert_eq!(costs[0].0, "filter");
/// assert_eq!((costs[0].1.commands, costs[0].1.chains), (3, 3));
/// ```
pub fn section_costs(input: &str) -> Vec<(String, SectionCost)> {
    let mut out = Vec::new();
    let mut current: Option<(String, SectionCost, HashSet<&str>)> = None;
    for line in input.lines() {
        let line = line.trim();
        if let Some(table) = line.strip_prefix('*') {
            current = Some((table.to_string(), SectionCost::default(), HashSet::new()));
            continue;
        }
        let Some((table, cost, names)) = current.as_mut() else {
            continue;
        };
        if line == "COMMIT" {
            cost.chains = names.len() as u64;
            out.push((std::mem::take(table), *cost));
            current = None;
            continue;
        }
        match command_chain(line) {
            Ok(None) => {}
            Ok(Some(chain)) => {
                cost.commands += 1;
                cost.builtin |= is_builtin(chain);
                names.insert(chain);
                // Built-in targets (ACCEPT, DNAT...) are names too, for
                // iptables-nft: counting them over-estimates by a few.
                if let Some(target) = jump_target(line) {
                    names.insert(target);
                }
            }
            Err(()) => {
                cost.commands += 1;
                cost.chainless = true;
            }
        }
    }
    out
}

/// `input` with [`TABLE_LISTING`] after the `*TABLE` line of every section
/// whose chain list costs more than listing the table, given how many
/// rules the node holds in each table (`node_rules`, an estimate). See the
/// [module documentation](self).
pub fn with_table_listing(input: &str, node_rules: impl Fn(&str) -> usize) -> String {
    let costs = section_costs(input);
    let mut sections = costs.iter();
    let mut out = String::with_capacity(input.len() + 8 * costs.len());
    for line in input.split_inclusive('\n') {
        out.push_str(line);
        let Some(table) = line.trim().strip_prefix('*') else {
            continue;
        };
        // The sections come in input order; a section without COMMIT
        // (the tool rejects the input anyway) gets nothing.
        let Some((name, cost)) = sections.next() else {
            continue;
        };
        if name == table && cost.worth_listing(node_rules(table)) {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(TABLE_LISTING);
            out.push('\n');
        }
    }
    out
}

/// How many rules each table section of an `iptables-save` text holds:
/// (table, rules), e.g. to estimate what [`with_table_listing`] would list.
///
/// ```
/// use kproxy_iptables::noflush::saved_rules;
///
/// let save = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j X\nCOMMIT\n*filter\nCOMMIT\n";
/// assert_eq!(saved_rules(save), vec![("nat".to_string(), 1), ("filter".to_string(), 0)]);
/// ```
pub fn saved_rules(save: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in save.lines() {
        if let Some(table) = line.strip_prefix('*') {
            out.push((table.trim().to_string(), 0));
        } else if line.starts_with("-A ")
            && let Some(last) = out.last_mut()
        {
            last.1 += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_TABLES: &str = "*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\nCOMMIT\n\
                              *nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n\
                              -A KUBE-SERVICES -d 10.0.0.1 -j KUBE-SVC-X\n-X KUBE-SVC-Y\nCOMMIT\n";

    #[test]
    fn counts_commands_and_distinct_chains_per_section() {
        let costs = section_costs(TWO_TABLES);
        assert_eq!(
            costs,
            vec![
                (
                    "filter".to_string(),
                    SectionCost {
                        commands: 2,
                        chains: 2,
                        ..Default::default()
                    }
                ),
                (
                    "nat".to_string(),
                    SectionCost {
                        commands: 4,
                        chains: 3,
                        ..Default::default()
                    }
                ),
            ]
        );
    }

    #[test]
    fn sections_naming_a_builtin_chain_are_not_listed() {
        let input = "*nat\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n\
                     *filter\n-D INPUT -j KUBE-FIREWALL\nCOMMIT\n\
                     *mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n";
        let costs = section_costs(input);
        assert!(costs[0].1.builtin && costs[1].1.builtin && !costs[2].1.builtin);
        assert_eq!(
            with_table_listing(input, |_| 0),
            input.replace("*mangle\n", "*mangle\n-S\n")
        );
    }

    #[test]
    fn a_chainless_command_makes_the_section_free() {
        let costs = section_costs("*nat\n-S\n:A - [0:0]\n-A A -j B\nCOMMIT\n");
        assert!(costs[0].1.chainless);
        assert_eq!(costs[0].1.steps(), 0);
        assert!(!costs[0].1.worth_listing(0));
    }

    #[test]
    fn listing_goes_right_after_the_table_line_of_the_sections_worth_it() {
        // Fresh node: every section.
        let out = with_table_listing(TWO_TABLES, |_| 0);
        assert_eq!(
            out,
            TWO_TABLES
                .replace("*filter\n", "*filter\n-S\n")
                .replace("*nat\n", "*nat\n-S\n")
        );
        // Only nat is cheap to list.
        let out = with_table_listing(TWO_TABLES, |t| if t == "nat" { 0 } else { 1_000_000 });
        assert_eq!(out, TWO_TABLES.replace("*nat\n", "*nat\n-S\n"));
        // Nothing is.
        assert_eq!(with_table_listing(TWO_TABLES, |_| 1_000_000), TWO_TABLES);
    }

    #[test]
    fn the_rest_of_the_input_is_unchanged() {
        let out = with_table_listing(TWO_TABLES, |_| 0);
        let without: String = out
            .lines()
            .filter(|l| *l != TABLE_LISTING)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(without, TWO_TABLES);
        assert_eq!(with_table_listing("", |_| 0), "");
        // No COMMIT: nothing added (the tool rejects it as it is).
        assert_eq!(
            with_table_listing("*nat\n-A A -j B\n", |_| 0),
            "*nat\n-A A -j B\n"
        );
        // No final newline.
        assert_eq!(
            with_table_listing("*nat\n-A A -j B\nCOMMIT", |_| 0),
            "*nat\n-S\n-A A -j B\nCOMMIT"
        );
    }

    #[test]
    fn a_first_sync_sized_input_is_listed_even_on_a_full_node() {
        let mut input = String::from("*nat\n");
        for i in 0..2000 {
            input.push_str(&format!(":KUBE-SEP-{i} - [0:0]\n"));
        }
        for i in 0..2000 {
            input.push_str(&format!(
                "-A KUBE-SEP-{i} -j DNAT --to-destination 10.0.0.1:80\n"
            ));
        }
        input.push_str("COMMIT\n");
        let cost = section_costs(&input)[0].1;
        assert_eq!(cost.commands, 4000);
        assert_eq!(cost.chains, 2001);
        assert!(cost.worth_listing(4000));
        assert!(!cost.worth_listing(10_000));
    }

    #[test]
    fn saved_rules_counts_rules_per_table() {
        let save = "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j A\n-A INPUT -j B\nCOMMIT\n\
                    *nat\nCOMMIT\n";
        assert_eq!(
            saved_rules(save),
            vec![("filter".to_string(), 2), ("nat".to_string(), 0)]
        );
    }
}
