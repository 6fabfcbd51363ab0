//! Myers' shortest edit script, with common prefix and suffix trimmed and
//! a bound past which the middle is replaced wholesale.

/// One step of an edit script (positions in the old and new sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Delete(usize),
    Insert(usize),
}

/// Past this many differences, the middle of two sequences is replaced
/// wholesale instead of searched for a shortest script.
const MAX_EDIT_DISTANCE: usize = 1000;

/// A shortest edit script from `a` to `b` (Myers), after trimming the
/// common prefix and suffix. Deletes and inserts come in sequence order.
pub(super) fn edit_script<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Step> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a1, b1) = (&a[prefix..], &b[prefix..]);
    let suffix = a1
        .iter()
        .rev()
        .zip(b1.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a2, b2) = (&a1[..a1.len() - suffix], &b1[..b1.len() - suffix]);
    let steps = myers(a2, b2, MAX_EDIT_DISTANCE).unwrap_or_else(|| {
        (0..a2.len())
            .map(Step::Delete)
            .chain((0..b2.len()).map(Step::Insert))
            .collect()
    });
    steps
        .into_iter()
        .map(|s| match s {
            Step::Delete(i) => Step::Delete(i + prefix),
            Step::Insert(j) => Step::Insert(j + prefix),
        })
        .collect()
}

/// Myers' O((N+M)·D) shortest edit script, or `None` past `limit` differences.
fn myers<T: PartialEq>(a: &[T], b: &[T], limit: usize) -> Option<Vec<Step>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    if max == 0 {
        return Some(Vec::new());
    }
    let off = max + 1;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    // trace[d]: v over k in -(d+1)..=d+1 before round d.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let at = |k: isize| (k + off) as usize;
    let max_d = max.min(limit as isize);
    for d in 0..=max_d {
        trace.push(v[at(-d - 1)..=at(d + 1)].to_vec());
        let mut k = -d;
        while k <= d {
            let mut x = if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) {
                v[at(k + 1)]
            } else {
                v[at(k - 1)] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                return Some(backtrack(&trace, n, m));
            }
            k += 2;
        }
    }
    None
}

fn backtrack(trace: &[Vec<isize>], n: isize, m: isize) -> Vec<Step> {
    let mut steps = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, snap) in trace.iter().enumerate().rev() {
        let d = d as isize;
        if d == 0 {
            break;
        }
        let get = |k: isize| snap[(k + d + 1) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = get(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
        }
        if x == prev_x {
            steps.push(Step::Insert((y - 1) as usize));
        } else {
            steps.push(Step::Delete((x - 1) as usize));
        }
        x = prev_x;
        y = prev_y;
    }
    steps.reverse();
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(a: &[char], b: &[char], steps: &[Step]) -> Vec<char> {
        // Replays a script: deletes by old index, inserts by new index.
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        let mut it = steps.iter().peekable();
        while i < a.len() || j < b.len() {
            match it.peek() {
                Some(Step::Delete(d)) if *d == i => {
                    i += 1;
                    it.next();
                }
                Some(Step::Insert(n)) if *n == j => {
                    out.push(b[j]);
                    j += 1;
                    it.next();
                }
                _ => {
                    assert_eq!(a[i], b[j], "kept elements must agree");
                    out.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        out
    }

    #[test]
    fn myers_finds_shortest_scripts() {
        let cases = [
            ("", "", 0),
            ("abc", "abc", 0),
            ("", "abc", 3),
            ("abc", "", 3),
            ("abcabba", "cbabac", 5),
            ("kitten", "sitting", 5),
            ("a1b2c3", "abc", 3),
            ("xaaaay", "aaaa", 2),
        ];
        for (a, b, d) in cases {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            let s = edit_script(&a, &b);
            assert_eq!(s.len(), d, "{a:?} -> {b:?}: {s:?}");
            assert_eq!(apply(&a, &b, &s), b);
        }
    }

    /// Length of a longest common subsequence (quadratic DP, for checking).
    fn lcs(a: &[char], b: &[char]) -> usize {
        let mut dp = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                dp[i][j] = if a[i] == b[j] {
                    dp[i + 1][j + 1] + 1
                } else {
                    dp[i + 1][j].max(dp[i][j + 1])
                };
            }
        }
        dp[0][0]
    }

    #[test]
    fn myers_scripts_are_valid_and_shortest_on_random_input() {
        // A small LCG: deterministic, no dependency.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let la = next(20) as usize;
            let lb = next(20) as usize;
            let a: Vec<char> = (0..la).map(|_| (b'a' + next(4) as u8) as char).collect();
            let b: Vec<char> = (0..lb).map(|_| (b'a' + next(4) as u8) as char).collect();
            let s = edit_script(&a, &b);
            assert_eq!(apply(&a, &b, &s), b, "{a:?} -> {b:?}");
            assert_eq!(s.len(), la + lb - 2 * lcs(&a, &b), "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn myers_falls_back_past_the_limit() {
        let a: Vec<u32> = (0..10).collect();
        let b: Vec<u32> = (100..110).collect();
        assert!(myers(&a, &b, 3).is_none());
        assert!(myers(&a, &b, 20).is_some());
    }
}
