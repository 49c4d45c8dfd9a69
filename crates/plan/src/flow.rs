//! Minimum-cost flow by the primal network simplex, for the planner's transportation
//! relaxation (classes of units → offers → sink, in chips).
//!
//! Why a network simplex: the relaxation has thousands of supply and capacity nodes and
//! hundreds of thousands of arcs; a general LP solver takes minutes on it, a subgradient
//! method converges slowly, while the network simplex solves it exactly in a fraction of a
//! second and hands back node potentials, which become per-offer prices.
//!
//! The method follows LEMON's `NetworkSimplex` (block-search pivoting, strongly feasible
//! spanning trees, an artificial root), with one change of representation: the spanning
//! tree keeps explicit child lists instead of a thread index, so re-rooting the subtree cut
//! off by a pivot is a walk over that subtree. Integer costs and flows keep it exact and
//! deterministic.

// Parallel arrays indexed by node / arc read more clearly as index loops.
#![allow(clippy::needless_range_loop)]

const STATE_UPPER: i8 = -1;
const STATE_TREE: i8 = 0;
const STATE_LOWER: i8 = 1;
/// The tree arc to a node's parent leaves the node (`UP`) or enters it (`DOWN`).
const DIR_UP: i64 = 1;
const DIR_DOWN: i64 = -1;

/// A flow network under construction: arcs with integer capacity and cost, node supplies.
#[derive(Debug, Clone, Default)]
pub struct Network {
    nodes: usize,
    src: Vec<u32>,
    dst: Vec<u32>,
    cap: Vec<i64>,
    cost: Vec<i64>,
    supply: Vec<i64>,
}

/// An optimal flow with the potentials that prove it optimal.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Flow on each arc, in the order the arcs were added.
    pub flow: Vec<i64>,
    /// Node potentials π: every arc's reduced cost `cost + π[src] − π[dst]` is ≥ 0 where the
    /// flow is below capacity and ≤ 0 where it is above zero.
    pub potential: Vec<i64>,
    /// Σ cost × flow.
    pub cost: i128,
    /// Whether the simplex started from the basis given to `solve_from` (not refused).
    pub started: bool,
}

/// Capacity that never binds.
pub const INF: i64 = i64::MAX / 4;

impl Network {
    /// An empty network of `nodes` nodes with zero supplies.
    pub fn new(nodes: usize) -> Network {
        Network {
            nodes,
            supply: vec![0; nodes],
            ..Network::default()
        }
    }

    /// Add an arc; returns its index.
    pub fn add_arc(&mut self, from: usize, to: usize, cap: i64, cost: i64) -> usize {
        debug_assert!(from < self.nodes && to < self.nodes && cap >= 0);
        self.src.push(from as u32);
        self.dst.push(to as u32);
        self.cap.push(cap);
        self.cost.push(cost);
        self.src.len() - 1
    }

    /// Set a node's supply (positive) or demand (negative).
    pub fn set_supply(&mut self, node: usize, supply: i64) {
        self.supply[node] = supply;
    }

    /// Arcs added so far.
    pub fn arcs(&self) -> usize {
        self.src.len()
    }

    /// Solve. `None` if supplies do not balance, no flow meets them, or costs are so large
    /// that potentials could overflow.
    pub fn solve(&self) -> Option<Flow> {
        self.solve_from(&[])
    }

    /// Solve from a starting basis: `tree[v]` is the arc joining node `v` to its parent, or
    /// `None` to hang `v` from the artificial root (as every node is without a start). The
    /// flow on each tree arc is what the supplies below it must send, every other arc is
    /// empty. A good start saves most of the pivots: the transportation relaxation starts
    /// with every unit on its floor arc (left out) and needs about a tenth of the pivots of
    /// the artificial start, which first routes everything through big-M arcs (35,000–45,000
    /// instead of 390,000 on a contended 10,000-workload set's 640,000 arcs). A start that is
    /// not a strongly feasible spanning tree (a cycle, an arc not touching its node, a flow
    /// out of bounds, an arc that cannot carry more towards the root) is ignored: the
    /// artificial start is used. Either way the result is an optimal flow with potentials
    /// that prove it; when the optimum is not unique, the start can change which optimum is
    /// returned.
    pub fn solve_from(&self, tree: &[Option<usize>]) -> Option<Flow> {
        if self.supply.iter().sum::<i64>() != 0 {
            return None;
        }
        let art = self.artificial_cost()?;
        let mut s = Simplex::new(self, art);
        let started = !tree.is_empty() && s.start_from(self, tree, art);
        if !tree.is_empty() && !started {
            s = Simplex::new(self, art);
        }
        s.run().map(|f| Flow { started, ..f })
    }

    /// The cost of an artificial arc: more than any path of real arcs, and small enough that
    /// potentials (within a few times it) and reduced costs stay far from `i64` limits.
    fn artificial_cost(&self) -> Option<i64> {
        let max_cost = self
            .cost
            .iter()
            .map(|c| c.unsigned_abs())
            .max()
            .unwrap_or(0);
        let art = max_cost
            .checked_add(1)?
            .checked_mul(self.nodes as u64 + 1)?;
        i64::try_from(art).ok().filter(|&a| a <= i64::MAX / 8)
    }
}

struct Simplex {
    n: usize,
    /// Arcs searched for entering (the real ones); artificial arcs follow them.
    search: usize,
    src: Vec<u32>,
    dst: Vec<u32>,
    cap: Vec<i64>,
    cost: Vec<i64>,
    flow: Vec<i64>,
    state: Vec<i8>,
    pi: Vec<i64>,
    parent: Vec<u32>,
    pred: Vec<u32>,
    pred_dir: Vec<i64>,
    depth: Vec<u32>,
    children: Vec<Vec<u32>>,
    /// Index of a node in its parent's child list.
    slot: Vec<u32>,
    next_arc: usize,
    block: usize,
    stack: Vec<u32>,
}

impl Simplex {
    fn new(net: &Network, art: i64) -> Simplex {
        let n = net.nodes;
        let m = net.src.len();
        let root = n;
        let mut s = Simplex {
            n,
            search: m,
            src: net.src.clone(),
            dst: net.dst.clone(),
            cap: net.cap.clone(),
            cost: net.cost.clone(),
            flow: vec![0; m],
            state: vec![STATE_LOWER; m],
            pi: vec![0; n + 1],
            parent: vec![root as u32; n + 1],
            pred: vec![u32::MAX; n + 1],
            pred_dir: vec![DIR_UP; n + 1],
            depth: vec![1; n + 1],
            children: vec![Vec::new(); n + 1],
            slot: vec![0; n + 1],
            next_arc: 0,
            block: ((m as f64).sqrt() as usize).max(10),
            stack: Vec::new(),
        };
        s.depth[root] = 0;
        // Artificial arcs: a supply node sends its supply up to the root for free; the root
        // feeds a demand node at a cost no real path reaches, so they end with no flow when
        // a feasible flow exists.
        for u in 0..n {
            let e = s.src.len() as u32;
            let b = net.supply[u];
            if b >= 0 {
                s.src.push(u as u32);
                s.dst.push(root as u32);
                s.flow.push(b);
                s.cost.push(0);
                s.pred_dir[u] = DIR_UP;
                s.pi[u] = 0;
            } else {
                s.src.push(root as u32);
                s.dst.push(u as u32);
                s.flow.push(-b);
                s.cost.push(art);
                s.pred_dir[u] = DIR_DOWN;
                s.pi[u] = art;
            }
            s.cap.push(INF);
            s.state.push(STATE_TREE);
            s.pred[u] = e;
            s.slot[u] = s.children[root].len() as u32;
            s.children[root].push(u as u32);
        }
        s
    }

    /// Replace the artificial start by the spanning tree `tree` (see `Network::solve_from`);
    /// `false`, leaving `self` unusable, when it is not a strongly feasible basis.
    fn start_from(&mut self, net: &Network, tree: &[Option<usize>], art: i64) -> bool {
        let (n, m, root) = (self.n, self.search, self.n);
        if tree.len() != n {
            return false;
        }
        for ch in &mut self.children {
            ch.clear();
        }
        for v in 0..n {
            let (p, a, dir) = match tree[v] {
                Some(a) if a < m && self.src[a] as usize == v => (self.dst[a] as usize, a, DIR_UP),
                Some(a) if a < m && self.dst[a] as usize == v => {
                    (self.src[a] as usize, a, DIR_DOWN)
                }
                Some(_) => return false,
                None => (root, m + v, DIR_UP),
            };
            self.parent[v] = p as u32;
            self.pred[v] = a as u32;
            self.pred_dir[v] = dir;
            self.slot[v] = self.children[p].len() as u32;
            self.children[p].push(v as u32);
        }
        // Breadth-first from the root: each node has one parent, so it is reached at most
        // once; a node on a cycle is never reached.
        let mut order = Vec::with_capacity(n + 1);
        order.push(root as u32);
        let mut i = 0;
        while i < order.len() {
            let x = order[i] as usize;
            i += 1;
            order.extend_from_slice(&self.children[x]);
        }
        if order.len() != n + 1 {
            return false;
        }
        // What each subtree must send up (negative: receive), leaves first.
        let mut sub = net.supply.clone();
        sub.push(0);
        for &x in order[1..].iter().rev() {
            let x = x as usize;
            let p = self.parent[x] as usize;
            sub[p] += sub[x];
        }
        self.flow.fill(0);
        self.state.fill(STATE_LOWER);
        for &x in &order[1..] {
            let x = x as usize;
            let a = self.pred[x] as usize;
            if a >= m {
                // The artificial arc points the way the subtree's flow goes.
                if sub[x] >= 0 {
                    (self.src[a], self.dst[a], self.cost[a]) = (x as u32, root as u32, 0);
                    self.pred_dir[x] = DIR_UP;
                } else {
                    (self.src[a], self.dst[a], self.cost[a]) = (root as u32, x as u32, art);
                    self.pred_dir[x] = DIR_DOWN;
                }
            }
            // Within bounds, and strongly feasible: more can always be sent from the node
            // towards the root (an arc up is not full, an arc down is not empty).
            let f = self.pred_dir[x] * sub[x];
            let ok = if self.pred_dir[x] == DIR_UP {
                0 <= f && f < self.cap[a]
            } else {
                0 < f && f <= self.cap[a]
            };
            if !ok {
                return false;
            }
            self.flow[a] = f;
            self.state[a] = STATE_TREE;
            let p = self.parent[x] as usize;
            self.depth[x] = self.depth[p] + 1;
            self.pi[x] = self.pi[p] - self.pred_dir[x] * self.cost[a];
        }
        #[cfg(test)]
        self.check_tree();
        true
    }

    /// Reduced cost of arc `e` (`entering` computes it inline, over slices).
    #[cfg(test)]
    fn reduced(&self, e: usize) -> i64 {
        self.cost[e] + self.pi[self.src[e] as usize] - self.pi[self.dst[e] as usize]
    }

    /// Block search: the most violating arc of the first block that has one. Blocks run
    /// from where the last search stopped, wrapping; within a block the first most violating
    /// arc wins.
    fn entering(&mut self) -> Option<usize> {
        let m = self.search;
        let (src, dst) = (&self.src[..m], &self.dst[..m]);
        let (cost, state, pi) = (&self.cost[..m], &self.state[..m], &self.pi[..]);
        let mut best = 0i64;
        let mut arc = usize::MAX;
        let mut e = self.next_arc;
        let mut scanned = 0;
        while scanned < m {
            let mut left = self.block.min(m - scanned);
            scanned += left;
            while left > 0 {
                // The block's part before the end of the arcs, then (wrapped) the rest.
                let end = (e + left).min(m);
                let arcs = src[e..end]
                    .iter()
                    .zip(&dst[e..end])
                    .zip(cost[e..end].iter().zip(&state[e..end]));
                for (k, ((&a, &b), (&c, &st))) in arcs.enumerate() {
                    let v = st as i64 * (c + pi[a as usize] - pi[b as usize]);
                    if v < best {
                        best = v;
                        arc = e + k;
                    }
                }
                left -= end - e;
                e = if end == m { 0 } else { end };
            }
            if arc != usize::MAX {
                self.next_arc = e;
                return Some(arc);
            }
        }
        None
    }

    fn join(&self, mut u: usize, mut v: usize) -> usize {
        while u != v {
            if self.depth[u] > self.depth[v] {
                u = self.parent[u] as usize;
            } else if self.depth[v] > self.depth[u] {
                v = self.parent[v] as usize;
            } else {
                u = self.parent[u] as usize;
                v = self.parent[v] as usize;
            }
        }
        u
    }

    fn run(self) -> Option<Flow> {
        self.run_counted().0
    }

    /// The optimum, and how many pivots reached it.
    fn run_counted(mut self) -> (Option<Flow>, usize) {
        let mut pivots = 0;
        while let Some(e) = self.entering() {
            pivots += 1;
            if self.pivot(e).is_none() {
                return (None, pivots);
            }
            #[cfg(test)]
            self.check_tree();
        }
        // Any flow left on an artificial arc means the supplies cannot be met.
        if (self.search..self.src.len()).any(|e| self.flow[e] != 0) {
            return (None, pivots);
        }
        let m = self.search;
        let cost = (0..m)
            .map(|e| self.cost[e] as i128 * self.flow[e] as i128)
            .sum();
        self.flow.truncate(m);
        self.pi.truncate(self.n);
        let flow = Flow {
            flow: self.flow,
            potential: self.pi,
            cost,
            started: false,
        };
        (Some(flow), pivots)
    }

    /// One pivot on entering arc `e`; `None` if the cycle is unbounded.
    fn pivot(&mut self, e: usize) -> Option<()> {
        let (first, second) = if self.state[e] == STATE_LOWER {
            (self.src[e] as usize, self.dst[e] as usize)
        } else {
            (self.dst[e] as usize, self.src[e] as usize)
        };
        let join = self.join(first, second);
        // Leaving arc: the last blocking arc in cycle order keeps the tree strongly feasible.
        let mut delta = self.cap[e];
        let mut u_out = usize::MAX;
        let mut side = 0;
        let mut u = first;
        while u != join {
            let a = self.pred[u] as usize;
            let d = if self.pred_dir[u] == DIR_DOWN {
                residual(self.cap[a], self.flow[a])
            } else {
                self.flow[a]
            };
            if d < delta {
                delta = d;
                u_out = u;
                side = 1;
            }
            u = self.parent[u] as usize;
        }
        let mut u = second;
        while u != join {
            let a = self.pred[u] as usize;
            let d = if self.pred_dir[u] == DIR_UP {
                residual(self.cap[a], self.flow[a])
            } else {
                self.flow[a]
            };
            if d <= delta {
                delta = d;
                u_out = u;
                side = 2;
            }
            u = self.parent[u] as usize;
        }
        if delta >= INF {
            return None;
        }
        if delta > 0 {
            let val = self.state[e] as i64 * delta;
            self.flow[e] += val;
            let mut u = self.src[e] as usize;
            while u != join {
                let a = self.pred[u] as usize;
                self.flow[a] -= self.pred_dir[u] * val;
                u = self.parent[u] as usize;
            }
            let mut u = self.dst[e] as usize;
            while u != join {
                let a = self.pred[u] as usize;
                self.flow[a] += self.pred_dir[u] * val;
                u = self.parent[u] as usize;
            }
        }
        if side == 0 {
            // The entering arc itself blocks: it only switches bound.
            self.state[e] = -self.state[e];
            return Some(());
        }
        let a_out = self.pred[u_out] as usize;
        self.state[a_out] = if self.flow[a_out] == 0 {
            STATE_LOWER
        } else {
            STATE_UPPER
        };
        self.state[e] = STATE_TREE;
        let (u_in, v_in) = if side == 1 {
            (first, second)
        } else {
            (second, first)
        };
        self.reroot(e, u_in, v_in, u_out);
        Some(())
    }

    /// The spanning tree's invariants, checked after every pivot in tests: child lists and
    /// slots agree with parents, depths, tree arcs join a node to its parent in the recorded
    /// direction with zero reduced cost, flows within bounds, every node reachable.
    #[cfg(test)]
    fn check_tree(&self) {
        let root = self.n;
        let mut seen = 0;
        let mut stack = vec![root];
        while let Some(x) = stack.pop() {
            seen += 1;
            for (i, &c) in self.children[x].iter().enumerate() {
                let c = c as usize;
                assert_eq!(self.parent[c] as usize, x);
                assert_eq!(self.slot[c] as usize, i);
                assert_eq!(self.depth[c], self.depth[x] + 1);
                let a = self.pred[c] as usize;
                let (s, d) = (self.src[a] as usize, self.dst[a] as usize);
                if self.pred_dir[c] == DIR_UP {
                    assert_eq!((s, d), (c, x));
                } else {
                    assert_eq!((s, d), (x, c));
                }
                assert_eq!(self.state[a], STATE_TREE);
                assert_eq!(self.reduced(a), 0, "tree arc {a}");
                stack.push(c);
            }
        }
        assert_eq!(seen, self.n + 1, "every node in the tree");
        for e in 0..self.src.len() {
            assert!(self.flow[e] >= 0 && self.flow[e] <= self.cap[e], "arc {e}");
        }
    }

    fn detach(&mut self, v: usize) {
        let p = self.parent[v] as usize;
        let i = self.slot[v] as usize;
        self.children[p].swap_remove(i);
        if let Some(&moved) = self.children[p].get(i) {
            self.slot[moved as usize] = i as u32;
        }
    }

    fn attach(&mut self, v: usize, p: usize) {
        self.parent[v] = p as u32;
        self.slot[v] = self.children[p].len() as u32;
        self.children[p].push(v as u32);
    }

    /// Cut the subtree under `u_out`'s tree arc, hang it from `v_in` by arc `e` with `u_in` as
    /// its new root, and shift its potentials so `e` has zero reduced cost.
    fn reroot(&mut self, e: usize, u_in: usize, v_in: usize, u_out: usize) {
        // Reverse the path u_in → … → u_out.
        let mut w = u_in;
        let mut carry_arc = e as u32;
        let mut carry_dir = if self.src[e] as usize == u_in {
            DIR_UP
        } else {
            DIR_DOWN
        };
        let mut new_parent = v_in;
        loop {
            let old_parent = self.parent[w] as usize;
            let old_arc = self.pred[w];
            let old_dir = self.pred_dir[w];
            self.detach(w);
            self.attach(w, new_parent);
            self.pred[w] = carry_arc;
            self.pred_dir[w] = carry_dir;
            if w == u_out {
                break;
            }
            carry_arc = old_arc;
            carry_dir = -old_dir;
            new_parent = w;
            w = old_parent;
        }
        // Potentials and depths of the moved subtree.
        let sigma = self.pi[v_in] - self.pi[u_in] - self.pred_dir[u_in] * self.cost[e];
        self.stack.clear();
        self.stack.push(u_in as u32);
        while let Some(x) = self.stack.pop() {
            let x = x as usize;
            self.pi[x] += sigma;
            self.depth[x] = self.depth[self.parent[x] as usize] + 1;
            for i in 0..self.children[x].len() {
                let c = self.children[x][i];
                self.stack.push(c);
            }
        }
    }
}

#[inline]
fn residual(cap: i64, flow: i64) -> i64 {
    if cap >= INF {
        INF
    } else {
        cap - flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over every integral flow of a tiny network (arcs of capacity ≤ 3).
    fn brute(net: &Network) -> Option<i128> {
        let m = net.arcs();
        let mut best: Option<i128> = None;
        let mut f = vec![0i64; m];
        loop {
            let mut bal = net.supply.clone();
            for e in 0..m {
                bal[net.src[e] as usize] -= f[e];
                bal[net.dst[e] as usize] += f[e];
            }
            if bal.iter().all(|&b| b == 0) {
                let c: i128 = (0..m).map(|e| f[e] as i128 * net.cost[e] as i128).sum();
                best = Some(best.map_or(c, |b: i128| b.min(c)));
            }
            let mut i = 0;
            loop {
                if i == m {
                    return best;
                }
                if f[i] < net.cap[i] {
                    f[i] += 1;
                    break;
                }
                f[i] = 0;
                i += 1;
            }
        }
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn matches_brute_force_on_random_small_networks() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut solved = 0;
        for _ in 0..400 {
            let n = 3 + (rng(&mut seed) % 3) as usize;
            let mut net = Network::new(n);
            let m = 3 + (rng(&mut seed) % 4) as usize;
            for _ in 0..m {
                let a = (rng(&mut seed) % n as u64) as usize;
                let b = (rng(&mut seed) % n as u64) as usize;
                if a != b {
                    let cap = (rng(&mut seed) % 4) as i64;
                    let cost = (rng(&mut seed) % 11) as i64 - 3;
                    net.add_arc(a, b, cap, cost);
                }
            }
            let s = (rng(&mut seed) % 3) as i64;
            net.set_supply(0, s);
            net.set_supply(n - 1, -s);
            // Negative cycles of unbounded capacity cannot occur: every arc is capped.
            let want = brute(&net);
            let got = net.solve();
            assert_eq!(want, got.as_ref().map(|f| f.cost), "{net:?}");
            if let Some(f) = got {
                solved += 1;
                // Optimality certificate: reduced costs agree with the flow's bounds.
                for e in 0..net.arcs() {
                    let rc = net.cost[e] + f.potential[net.src[e] as usize]
                        - f.potential[net.dst[e] as usize];
                    if f.flow[e] < net.cap[e] {
                        assert!(rc >= 0, "arc {e} below capacity with rc {rc}");
                    }
                    if f.flow[e] > 0 {
                        assert!(rc <= 0, "arc {e} carrying flow with rc {rc}");
                    }
                }
            }
        }
        assert!(solved > 100, "only {solved} feasible cases");
    }

    /// On networks too big for brute force (with negative costs, empty and parallel arcs),
    /// the returned flow proves itself: it conserves flow, respects capacities, and no arc's
    /// reduced cost could improve it. The tree's invariants are checked after every pivot.
    #[test]
    fn larger_random_networks_satisfy_the_optimality_conditions() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for case in 0..60 {
            let n = 10 + (rng(&mut seed) % 60) as usize;
            let mut net = Network::new(n);
            for _ in 0..n * (2 + case % 6) {
                let a = (rng(&mut seed) % n as u64) as usize;
                let b = (rng(&mut seed) % n as u64) as usize;
                if a != b {
                    // Negative costs only where capacity is finite: no unbounded cycle.
                    let (cap, cost) = if rng(&mut seed).is_multiple_of(5) {
                        (INF, (rng(&mut seed) % 1000) as i64)
                    } else {
                        let cap = (rng(&mut seed) % 40) as i64;
                        (cap, (rng(&mut seed) % 1200) as i64 - 200)
                    };
                    net.add_arc(a, b, cap, cost);
                }
            }
            // Balanced supplies, and a dear uncapacitated way out so every case is feasible.
            let mut total = 0;
            for v in 0..n - 1 {
                let b = (rng(&mut seed) % 50) as i64 - 25;
                net.set_supply(v, b);
                total += b;
                if b > 0 {
                    net.add_arc(v, n - 1, INF, 100_000);
                } else {
                    net.add_arc(n - 1, v, INF, 100_000);
                }
            }
            net.set_supply(n - 1, -total);
            let f = net.solve().expect("feasible by construction");
            let mut bal = net.supply.clone();
            let mut cost = 0i128;
            for e in 0..net.arcs() {
                let (s, d) = (net.src[e] as usize, net.dst[e] as usize);
                assert!(
                    f.flow[e] >= 0 && f.flow[e] <= net.cap[e],
                    "case {case} arc {e}"
                );
                bal[s] -= f.flow[e];
                bal[d] += f.flow[e];
                cost += f.flow[e] as i128 * net.cost[e] as i128;
                let rc = net.cost[e] + f.potential[s] - f.potential[d];
                assert!(f.flow[e] == net.cap[e] || rc >= 0, "case {case} arc {e}");
                assert!(f.flow[e] == 0 || rc <= 0, "case {case} arc {e}");
            }
            assert!(
                bal.iter().all(|&b| b == 0),
                "case {case}: flow not conserved"
            );
            assert_eq!(cost, f.cost, "case {case}");
        }
    }

    /// A start hung from the last node by each node's way out (the shape of the planner's
    /// floor arcs) reaches the artificial start's optimum, in fewer pivots, on ordinary and on
    /// degenerate networks (tied costs, tiny capacities); starts that are not strongly
    /// feasible bases (a cycle, an arc that is not the node's, a wrong length) are refused
    /// and the result is still optimal.
    #[test]
    fn a_start_basis_reaches_the_same_optimum_in_fewer_pivots() {
        let mut seed = 0x6a09_e667_f3bc_c909u64;
        let (mut fewer, mut cases) = (0, 0);
        for case in 0..60 {
            let n = 10 + (rng(&mut seed) % 60) as usize;
            let t = n - 1;
            let mut net = Network::new(n);
            for _ in 0..n * (2 + case % 6) {
                let a = (rng(&mut seed) % t as u64) as usize;
                let b = (rng(&mut seed) % t as u64) as usize;
                if a != b {
                    // Every third case is degenerate: costs of 0–2 and capacities of 0–3, so
                    // ties and zero-flow pivots abound.
                    let (cap, cost) = if case % 3 == 0 {
                        ((rng(&mut seed) % 4) as i64, (rng(&mut seed) % 3) as i64)
                    } else {
                        ((rng(&mut seed) % 40) as i64, (rng(&mut seed) % 900) as i64)
                    };
                    net.add_arc(a, b, cap, cost);
                }
            }
            let mut tree = vec![None; n];
            let mut total = 0;
            for v in 0..t {
                let b = (rng(&mut seed) % 50) as i64 - 20;
                net.set_supply(v, b);
                total += b;
                let out = if b >= 0 {
                    net.add_arc(v, t, INF, 5_000)
                } else {
                    net.add_arc(t, v, INF, 5_000)
                };
                // A zero-flow arc into the node cannot carry more towards the root.
                if b != 0 {
                    tree[v] = Some(out);
                }
            }
            net.set_supply(t, -total);
            let (plain, plain_pivots) =
                Simplex::new(&net, net.artificial_cost().unwrap()).run_counted();
            let (started, started_pivots) = {
                let mut s = Simplex::new(&net, net.artificial_cost().unwrap());
                assert!(
                    s.start_from(&net, &tree, net.artificial_cost().unwrap()),
                    "case {case}"
                );
                s.run_counted()
            };
            let (plain, started) = (plain.unwrap(), started.unwrap());
            assert_eq!(plain.cost, started.cost, "case {case}");
            let again = net.solve_from(&tree).unwrap();
            assert!(again.started && !plain.started);
            assert_eq!(again.cost, plain.cost);
            let (s, d) = (&net.src, &net.dst);
            for e in 0..net.arcs() {
                let rc = net.cost[e] + started.potential[s[e] as usize]
                    - started.potential[d[e] as usize];
                assert!(
                    started.flow[e] == net.cap[e] || rc >= 0,
                    "case {case} arc {e}"
                );
                assert!(started.flow[e] == 0 || rc <= 0, "case {case} arc {e}");
            }
            cases += 1;
            fewer += (started_pivots < plain_pivots) as usize;
            // Not bases: each is refused, and the solve falls back to the artificial start.
            let v = tree
                .iter()
                .position(|a| a.is_some())
                .expect("a node with supply");
            let mut cycle = tree.clone();
            cycle[t] = tree[v];
            let mut foreign = tree.clone();
            foreign[v] = (0..net.arcs()).find(|&a| s[a] as usize != v && d[a] as usize != v);
            let short = vec![None; n - 1];
            for bad in [cycle, foreign, short] {
                let art = net.artificial_cost().unwrap();
                assert!(
                    !Simplex::new(&net, art).start_from(&net, &bad, art),
                    "case {case}"
                );
                let f = net.solve_from(&bad).unwrap();
                assert!(!f.started);
                assert_eq!(f.cost, plain.cost, "case {case}");
            }
        }
        assert!(
            fewer * 4 >= cases * 3,
            "fewer pivots on only {fewer} of {cases}"
        );
    }

    #[test]
    fn a_full_arc_in_the_start_is_not_a_basis() {
        // Node 0 sends 2 to node 1 by an arc of capacity 2: full, so it cannot carry more
        // towards the root (node 1), and the start is refused; the solve still succeeds.
        let mut net = Network::new(2);
        net.set_supply(0, 2);
        net.set_supply(1, -2);
        let a = net.add_arc(0, 1, 2, 3);
        let art = net.artificial_cost().unwrap();
        let mut s = Simplex::new(&net, art);
        assert!(!s.start_from(&net, &[Some(a), None], art));
        assert_eq!(net.solve_from(&[Some(a), None]).unwrap().cost, 6);
        // With room to spare it is a basis, and already optimal.
        let mut net = Network::new(2);
        net.set_supply(0, 2);
        net.set_supply(1, -2);
        let a = net.add_arc(0, 1, 3, 3);
        let mut s = Simplex::new(&net, art);
        assert!(s.start_from(&net, &[Some(a), None], art));
        let (f, pivots) = s.run_counted();
        assert_eq!((f.unwrap().cost, pivots), (6, 0));
    }

    #[test]
    fn transportation_with_uncapacitated_arcs() {
        // Two sources, two capacitated sinks, a dear overflow.
        let mut net = Network::new(5);
        let t = 4;
        net.set_supply(0, 5);
        net.set_supply(1, 4);
        net.set_supply(t, -9);
        net.add_arc(0, 2, INF, 1);
        net.add_arc(0, 3, INF, 4);
        net.add_arc(1, 2, INF, 2);
        net.add_arc(1, 3, INF, 3);
        net.add_arc(2, t, 6, 0);
        net.add_arc(3, t, 6, 0);
        net.add_arc(0, t, INF, 100);
        net.add_arc(1, t, INF, 100);
        let f = net.solve().expect("feasible");
        // Sink 2 (cap 6): source 0 saves 3 per unit there, source 1 saves 1: 0 sends 5, 1 sends 1.
        assert_eq!(f.cost, 5 + 2 + 3 * 3);
    }

    #[test]
    fn costs_that_could_overflow_are_refused() {
        let mut net = Network::new(2);
        net.set_supply(0, 1);
        net.set_supply(1, -1);
        net.add_arc(0, 1, 1, i64::MAX / 4);
        assert!(net.solve().is_none());
        let mut net = Network::new(2);
        net.set_supply(0, 1);
        net.set_supply(1, -1);
        net.add_arc(0, 1, 1, 1_000_000_000_000);
        assert_eq!(net.solve().expect("within limits").cost, 1_000_000_000_000);
    }

    #[test]
    fn unbalanced_or_infeasible_is_none() {
        let mut net = Network::new(2);
        net.set_supply(0, 1);
        assert!(net.solve().is_none());
        net.set_supply(1, -1);
        assert!(net.solve().is_none(), "no arc");
        net.add_arc(0, 1, 1, 5);
        assert_eq!(net.solve().expect("feasible").cost, 5);
    }
}
