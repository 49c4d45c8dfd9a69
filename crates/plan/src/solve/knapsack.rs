//! Bounded knapsacks by dynamic programming: the most negative total reduced cost of items
//! that fit in a capacity, each item available a bounded number of times.
//!
//! `best[w]` is the optimum within capacity `w` for every `w ≤ C` at once, which a pool whose
//! committed nodes a blend could take needs: the on-demand knapsack is read at `C − n2` too.

/// One item: `count` copies of weight `weight` and value `value` (negative is worth taking).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    /// Weight (nodes).
    pub weight: u32,
    /// Value of one copy ($/h, a reduced cost).
    pub value: f64,
    /// Copies available.
    pub count: u32,
    /// Caller's tag.
    pub tag: u32,
}

/// A solved knapsack: values for every capacity and what to take.
pub(crate) struct Solved {
    /// `best[w]`: least total value within capacity `w` (0 if nothing helps).
    pub best: Vec<f64>,
    /// Chunks the DP used: (item index, copies, weight).
    chunks: Vec<(usize, u32, u32)>,
    /// Per chunk, per capacity: whether the chunk is taken at that capacity.
    take: Vec<Vec<u64>>,
    /// Cells the programme updated: its work.
    pub work: u64,
}

/// Solve for capacities `0..=capacity`. Items worth nothing (`value ≥ 0`) or heavier than the
/// capacity are ignored. With `record`, the choice can be read back by [`Solved::taken`].
pub(crate) fn solve(items: &[Item], capacity: u32, record: bool) -> Solved {
    let cap = capacity as usize;
    let mut best = vec![0.0f64; cap + 1];
    let mut chunks = Vec::new();
    let mut take = Vec::new();
    let words = cap / 64 + 1;
    let mut work = 0u64;
    for (i, it) in items.iter().enumerate() {
        if it.value >= 0.0 || it.weight as usize > cap || it.count == 0 {
            continue;
        }
        // Binary splitting: copies 1, 2, 4, … and the rest, so any count is a sum of chunks.
        let most = capacity
            .checked_div(it.weight)
            .map_or(it.count, |fit| it.count.min(fit).max(1));
        let mut left = most;
        let mut k = 1u32;
        while left > 0 {
            let c = k.min(left);
            left -= c;
            k = k.saturating_mul(2);
            let w = (it.weight * c) as usize;
            let v = it.value * c as f64;
            if w > cap {
                continue;
            }
            let mut bits = if record {
                vec![0u64; words]
            } else {
                Vec::new()
            };
            if it.weight == 0 {
                // Weightless: take it everywhere.
                for b in best.iter_mut() {
                    *b += v;
                }
                if record {
                    bits.iter_mut().for_each(|x| *x = u64::MAX);
                }
            } else {
                work += (cap + 1 - w) as u64;
                for cw in (w..=cap).rev() {
                    let cand = best[cw - w] + v;
                    if cand < best[cw] {
                        best[cw] = cand;
                        if record {
                            bits[cw / 64] |= 1 << (cw % 64);
                        }
                    }
                }
            }
            chunks.push((i, c, w as u32));
            take.push(bits);
        }
    }
    Solved {
        best,
        chunks,
        take,
        work,
    }
}

impl Solved {
    /// Copies of each item taken at capacity `w` (needs `record`): (item index, copies).
    pub(crate) fn taken(&self, mut w: usize) -> Vec<(usize, u32)> {
        let mut out: Vec<(usize, u32)> = Vec::new();
        for (k, &(i, c, wt)) in self.chunks.iter().enumerate().rev() {
            if self.take[k]
                .get(w / 64)
                .is_some_and(|b| b & (1 << (w % 64)) != 0)
            {
                match out.last_mut() {
                    Some(last) if last.0 == i => last.1 += c,
                    _ => out.push((i, c)),
                }
                w -= wt as usize;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way to take up to `count` copies of each item, by enumeration.
    fn brute(items: &[Item], cap: u32) -> f64 {
        fn go(items: &[Item], cap: i64, i: usize) -> f64 {
            if i == items.len() {
                return 0.0;
            }
            let it = items[i];
            let mut best = go(items, cap, i + 1);
            for c in 1..=it.count as i64 {
                let w = c * it.weight as i64;
                if w > cap {
                    break;
                }
                best = best.min(c as f64 * it.value + go(items, cap - w, i + 1));
            }
            best
        }
        go(items, cap as i64, 0)
    }

    #[test]
    fn matches_enumeration_and_reads_back_its_choice() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let n = 1 + next(6) as usize;
            let items: Vec<Item> = (0..n)
                .map(|t| Item {
                    weight: next(7) as u32,
                    value: next(200) as f64 - 150.0,
                    count: 1 + next(4) as u32,
                    tag: t as u32,
                })
                .collect();
            let cap = next(25) as u32;
            let s = solve(&items, cap, true);
            let want = brute(&items, cap);
            assert!(
                (s.best[cap as usize] - want).abs() < 1e-9,
                "{items:?} {cap}"
            );
            let taken = s.taken(cap as usize);
            let (mut w, mut v) = (0u32, 0.0);
            for (i, c) in taken {
                assert!(c <= items[i].count);
                w += items[i].weight * c;
                v += items[i].value * c as f64;
            }
            assert!(w <= cap && (v - want).abs() < 1e-9, "{items:?} {cap}");
            for small in 0..=cap {
                assert!((s.best[small as usize] - brute(&items, small)).abs() < 1e-9);
            }
        }
    }
}
