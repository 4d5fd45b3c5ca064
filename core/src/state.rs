//! Sliding event-time windows of one key. Semantics: the module docstring of ``window.py``.
//!
//! Representation: per window the maintained window values ``sums`` (one lane per column) and, once
//! the window holds more than its head bucket, its closed buckets (sorted by bucket index, with their
//! total, so the head bucket is ``sums - closed.sum``). An in-order event adds to ``sums`` only; a
//! bucket boundary moves the head into the closed list and evicts the buckets leaving the window
//! (never a rescan of events). Distinct counts credit one unit to the bucket of each value's last
//! occurrence (moved when the value is seen again), exact up to ``exact_limit`` values (64-bit
//! BLAKE2b hashes of the values), then HyperLogLog.

use crate::hll::Hll;
use crate::lanes::Lanes;
use crate::plan::{Ops, Plan, F_ACCOUNT_AGE_S, F_ACCOUNT_CREATED, NUMBER_CAP, N_FACTS, N_NUMS};

pub const NO_TIME: i64 = -(1 << 62);

/// The fields of one event the windows read (see ``fanout.EventFacts``).
pub struct Ev {
    pub t: i64,
    pub ty: usize,
    /// Numeric facts by field index (0 elsewhere), then the plan's attribute tests (1 = holds).
    pub nums: [i64; N_NUMS],
    /// 64-bit hash of categorical facts by field index; None when empty or not needed.
    pub hashes: [Option<u64>; N_FACTS],
}

impl Ev {
    /// The derived field ``F_ACCOUNT_AGE_S`` (see ``plan.rs``).
    pub fn account_age_s(&self) -> i64 {
        let created = self.nums[F_ACCOUNT_CREATED];
        if created <= 0 {
            NUMBER_CAP
        } else {
            (self.t.saturating_sub(created)).max(0) / 1000
        }
    }
}

#[derive(Clone, Debug)]
pub struct Closed {
    pub sum: Vec<i64>,
    /// Bucket indices, ascending.
    pub idx: Vec<i64>,
    /// ``n_cols`` lanes per bucket.
    pub vals: Vec<i64>,
    /// Evicted buckets still at the front of ``idx``/``vals``: removed in one move once they are half
    /// of them, so sliding a window of many buckets costs O(1) amortized, not a shift of all of them.
    pub dead: usize,
}

impl Closed {
    pub fn new(nc: usize) -> Self {
        Closed {
            sum: vec![0; nc],
            idx: Vec::new(),
            vals: Vec::new(),
            dead: 0,
        }
    }

    /// Positions of the live buckets in ``idx``.
    pub fn live(&self) -> std::ops::Range<usize> {
        self.dead..self.idx.len()
    }
}

/// Event times the core accepts: ``|t| < MAX_TIME`` (times are packed with an 8-bit tag below).
pub const MAX_TIME: i64 = 1 << 54;

/// One exact distinct value: its hash, and its last event time packed with its aggregation index
/// (``last << 8 | di``) so every aggregation's set shares one sorted vector per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub hash: u64,
    packed: i64,
}

impl Seen {
    pub fn new(hash: u64, di: usize, last: i64) -> Self {
        Seen {
            hash,
            packed: (last << 8) | di as i64,
        }
    }
    #[inline]
    pub fn di(&self) -> usize {
        (self.packed & 0xff) as usize
    }
    #[inline]
    pub fn last(&self) -> i64 {
        self.packed >> 8
    }
    #[inline]
    fn key(&self) -> (usize, u64) {
        (self.di(), self.hash)
    }
}

#[derive(Clone, Debug)]
pub struct State {
    pub high: i64,
    pub late: u64,
    /// ``windows * n_cols`` window values (empty before the first event).
    pub sums: Lanes,
    /// Per window its closed buckets (empty vector: none anywhere).
    pub closed: Box<[Option<Box<Closed>>]>,
    /// Exact distinct values of every aggregation not yet switched to HLL, sorted by (index, hash).
    pub exact: Vec<Seen>,
    /// Per distinct aggregation its HyperLogLog once switched (empty until the first switch).
    pub hll: Box<[Option<Box<Hll>>]>,
}

enum SeenAction {
    Nothing,
    New { compact: bool },
    Moved(i64),
}

impl State {
    pub fn new(_plan: &Plan) -> Self {
        State {
            high: NO_TIME,
            late: 0,
            sums: Lanes::default(),
            closed: Box::new([]),
            exact: Vec::new(),
            hll: Box::new([]),
        }
    }

    pub fn expiry_ms(&self, plan: &Plan) -> i64 {
        self.high + plan.span_ms
    }

    /// Apply one event unless late; returns whether it was late.
    pub fn apply(&mut self, plan: &Plan, ev: &Ev) -> bool {
        let t = ev.t;
        if t > self.high {
            if self.high == NO_TIME {
                self.sums = Lanes::zeros(plan.n_lanes());
            } else {
                self.advance(plan, t);
            }
            self.high = t;
        } else if t < self.high - plan.lateness_ms {
            self.late += 1;
            return true;
        }
        let Some(prog) = plan.programs.get(ev.ty) else {
            return false;
        };
        self.apply_ops(plan, &prog.ops, ev);
        for wh in &prog.wheres {
            let v = if wh.field == F_ACCOUNT_AGE_S {
                ev.account_age_s()
            } else {
                ev.nums[wh.field]
            };
            if wh.lo <= v && v < wh.hi {
                self.apply_ops(plan, &wh.ops, ev);
            }
        }
        false
    }

    fn apply_ops(&mut self, plan: &Plan, ops: &Ops, ev: &Ev) {
        let t = ev.t;
        for &c in &ops.counts {
            self.credit(plan, c, t, 1);
        }
        for &(c, f) in &ops.sums {
            let v = ev.nums[f];
            if v != 0 {
                self.credit(plan, c, t, v);
            }
        }
        for &(di, f) in &ops.dists {
            let Some(h) = ev.hashes[f] else { continue };
            let action = if let Some(Some(hll)) = self.hll.get_mut(di) {
                hll.add(plan, h, t, self.high);
                SeenAction::Nothing
            } else {
                match self.exact.binary_search_by(|e| e.key().cmp(&(di, h))) {
                    Err(pos) => {
                        self.exact.insert(pos, Seen::new(h, di, t));
                        // (a set's first value never compacts, as in the layout-v1 engine)
                        let limit = plan.exact_limit;
                        let compact = self.exact.len() >= limit && {
                            let k = self.exact_count(di);
                            k > 1 && k >= limit
                        };
                        SeenAction::New { compact }
                    }
                    Ok(pos) => {
                        let o = self.exact[pos].last();
                        if t > o {
                            self.exact[pos] = Seen::new(h, di, t);
                            SeenAction::Moved(o)
                        } else {
                            SeenAction::Nothing
                        }
                    }
                }
            };
            let col = plan.distinct_cols[di];
            match action {
                SeenAction::Nothing => {}
                SeenAction::New { compact } => {
                    self.credit(plan, col, t, 1);
                    if compact {
                        self.compact(plan, di);
                    }
                }
                SeenAction::Moved(o) => self.move_credit(plan, col, o, t),
            }
        }
    }

    /// Add ``v`` to column ``c`` of the bucket holding ``t`` (not after ``high``) in every window.
    fn credit(&mut self, plan: &Plan, c: usize, t: i64, v: i64) {
        let nc = plan.n_cols;
        let high = self.high;
        for (w, &(g, n)) in plan.windows.iter().enumerate() {
            let b = t.div_euclid(g);
            let head = high.div_euclid(g);
            if b == head {
                self.sums.add(w * nc + c, v);
            } else if b > head - n {
                self.sums.add(w * nc + c, v);
                self.closed_bucket(plan, w, b)[c] += v;
                self.closed_sum(w)[c] += v;
            }
        }
    }

    /// A value last seen at ``o`` is seen again at ``t > o``: move its unit from ``o``'s bucket to
    /// ``t``'s in every window where they differ.
    fn move_credit(&mut self, plan: &Plan, c: usize, o: i64, t: i64) {
        let nc = plan.n_cols;
        let high = self.high;
        for (w, &(g, n)) in plan.windows.iter().enumerate() {
            let ob = o.div_euclid(g);
            let nb = t.div_euclid(g);
            if ob == nb {
                continue;
            }
            let head = high.div_euclid(g);
            if nb <= head - n {
                continue; // both occurrences are before this window
            }
            if ob > head - n {
                self.sums.add(w * nc + c, -1);
                self.closed_bucket(plan, w, ob)[c] -= 1;
                self.closed_sum(w)[c] -= 1;
            }
            self.sums.add(w * nc + c, 1);
            if nb != head {
                self.closed_bucket(plan, w, nb)[c] += 1;
                self.closed_sum(w)[c] += 1;
            }
        }
    }

    fn closed_mut(&mut self, plan: &Plan, w: usize) -> &mut Closed {
        if self.closed.is_empty() {
            self.closed = (0..plan.windows.len()).map(|_| None).collect();
        }
        self.closed[w].get_or_insert_with(|| Box::new(Closed::new(plan.n_cols)))
    }

    fn closed_sum(&mut self, w: usize) -> &mut Vec<i64> {
        &mut self.closed[w].as_mut().expect("closed list exists").sum
    }

    /// The lanes of closed bucket ``b`` of window ``w`` (inserted as zeros if absent).
    fn closed_bucket(&mut self, plan: &Plan, w: usize, b: i64) -> &mut [i64] {
        let nc = plan.n_cols;
        let cl = self.closed_mut(plan, w);
        let dead = cl.dead;
        let pos = match cl.idx[dead..].binary_search(&b) {
            Ok(p) => p + dead,
            Err(p) => {
                let p = p + dead;
                cl.idx.insert(p, b);
                cl.vals.splice(p * nc..p * nc, std::iter::repeat_n(0, nc));
                p
            }
        };
        &mut cl.vals[pos * nc..(pos + 1) * nc]
    }

    /// The head bucket's lanes of window ``w`` into ``out`` (``n_cols`` long).
    pub fn head_lanes(&self, plan: &Plan, w: usize, out: &mut [i64]) {
        self.sums.read(w * plan.n_cols, out);
        if let Some(Some(cl)) = self.closed.get(w) {
            for (o, s) in out.iter_mut().zip(&cl.sum) {
                *o -= s;
            }
        }
    }

    /// Slide the windows to the new high-water mark ``t`` (> ``high``).
    fn advance(&mut self, plan: &Plan, t: i64) {
        let nc = plan.n_cols;
        let old = self.high;
        let mut on_stack = [0i64; 64];
        let mut on_heap = Vec::new();
        let scratch: &mut [i64] = if nc <= 64 {
            &mut on_stack[..nc]
        } else {
            on_heap.resize(nc, 0);
            &mut on_heap
        };
        for (w, &(g, n)) in plan.windows.iter().enumerate() {
            let h = old.div_euclid(g);
            let bt = t.div_euclid(g);
            if bt <= h {
                continue;
            }
            if bt - h >= n {
                self.sums.zero_range(w * nc, (w + 1) * nc);
                if let Some(slot) = self.closed.get_mut(w) {
                    *slot = None;
                }
                continue;
            }
            let head = &mut *scratch;
            self.head_lanes(plan, w, head);
            if head.iter().any(|&v| v != 0) {
                let cl = self.closed_mut(plan, w);
                cl.idx.push(h);
                cl.vals.extend_from_slice(head);
                for (s, v) in cl.sum.iter_mut().zip(head.iter()) {
                    *s += v;
                }
            }
            let Some(Some(cl)) = self.closed.get_mut(w) else {
                continue;
            };
            let first_kept = cl.dead + cl.idx[cl.dead..].partition_point(|&b| b <= bt - n);
            if first_kept > cl.dead {
                for chunk in cl.vals[cl.dead * nc..first_kept * nc].chunks_exact(nc) {
                    for (c, &x) in chunk.iter().enumerate() {
                        self.sums.add(w * nc + c, -x);
                        cl.sum[c] -= x;
                    }
                }
                cl.dead = first_kept;
                if 2 * cl.dead >= cl.idx.len() {
                    cl.idx.drain(..cl.dead);
                    cl.vals.drain(..cl.dead * nc);
                    cl.dead = 0;
                }
            }
            if cl.live().is_empty() {
                self.closed[w] = None;
            }
        }
        for hll in self.hll.iter_mut().flatten() {
            hll.advance(plan, old, t);
        }
    }

    /// The exact set of distinct aggregation ``di`` reached its limit: drop values outside every
    /// window; if more than half the limit remain, switch to HyperLogLog.
    fn compact(&mut self, plan: &Plan, di: usize) {
        let high = self.high;
        let cutoff = plan
            .windows
            .iter()
            .map(|&(g, n)| (high.div_euclid(g) - n + 1) * g)
            .min()
            .unwrap_or(i64::MIN);
        self.exact.retain(|e| e.di() != di || e.last() >= cutoff);
        if 2 * self.exact_count(di) > plan.exact_limit {
            let mut hll = Hll::new(plan);
            for e in self.exact.iter().filter(|e| e.di() == di) {
                hll.add(plan, e.hash, e.last(), high);
            }
            self.exact.retain(|e| e.di() != di);
            self.set_hll(plan, di, hll);
        }
    }

    /// The exact values of distinct aggregation ``di`` (sorted by hash).
    pub fn exact_of(&self, di: usize) -> &[Seen] {
        let lo = self.exact.partition_point(|e| e.di() < di);
        let hi = lo + self.exact[lo..].partition_point(|e| e.di() == di);
        &self.exact[lo..hi]
    }

    /// Values tracked exactly for distinct aggregation ``di``.
    pub fn exact_count(&self, di: usize) -> usize {
        self.exact_of(di).len()
    }

    pub fn is_hll(&self, di: usize) -> bool {
        matches!(self.hll.get(di), Some(Some(_)))
    }

    pub fn set_hll(&mut self, plan: &Plan, di: usize, hll: Hll) {
        if self.hll.is_empty() {
            self.hll = (0..plan.distinct_cols.len()).map(|_| None).collect();
        }
        self.hll[di] = Some(Box::new(hll));
    }

    /// The key's block as of its high-water mark: window lanes, then the ratios.
    pub fn values(&self, plan: &Plan, out: &mut [f64]) {
        let nl = plan.n_lanes();
        if self.sums.is_empty() {
            out[..nl].fill(0.0);
        } else {
            self.sums.write_f64(&mut out[..nl]);
        }
        for (di, hll) in self.hll.iter().enumerate() {
            if let Some(hll) = hll {
                let c = plan.distinct_cols[di];
                for w in 0..plan.windows.len() {
                    out[w * plan.n_cols + c] = hll.estimate(w);
                }
            }
        }
        for (k, &(num, den, default)) in plan.ratios.iter().enumerate() {
            let (a, b) = if self.sums.is_empty() {
                (0, 0)
            } else {
                (self.sums.get(num), self.sums.get(den))
            };
            out[nl + k] = if b != 0 { a as f64 / b as f64 } else { default };
        }
    }
}
