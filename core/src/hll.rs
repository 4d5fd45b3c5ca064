//! HyperLogLog over the sliding bucketed windows of one key (``hll.py`` documents the maths).
//! Registers are kept per window and bucket; the union over the window's buckets is maintained with
//! its exact register sum ``sum_j 2^(64 - M_j)`` (u128), so estimates are bit-for-bit reproducible.

use crate::plan::Plan;

const K: u32 = 64;

#[derive(Clone, Debug)]
pub struct Hll {
    /// Per window: ``n * m`` registers, bucket ``b`` at slot ``b mod n``.
    pub regs: Vec<Vec<u8>>,
    union: Vec<Vec<u8>>,
    zsum: Vec<u128>,
    zeros: Vec<u32>,
}

fn alpha(m: usize) -> f64 {
    match m {
        16 => 0.673,
        32 => 0.697,
        64 => 0.709,
        _ => 0.7213 / (1.0 + 1.079 / m as f64),
    }
}

impl Hll {
    pub fn new(plan: &Plan) -> Self {
        let m = 1usize << plan.hll_precision;
        let nw = plan.windows.len();
        Hll {
            regs: plan
                .windows
                .iter()
                .map(|&(_, n)| vec![0u8; n as usize * m])
                .collect(),
            union: vec![vec![0u8; m]; nw],
            zsum: vec![(m as u128) << K; nw],
            zeros: vec![m as u32; nw],
        }
    }

    pub fn m(&self) -> usize {
        self.union.first().map_or(0, |u| u.len())
    }

    /// Record hash ``h`` at time ``t`` (not after ``high``, the key's high-water mark).
    pub fn add(&mut self, plan: &Plan, h: u64, t: i64, high: i64) {
        let p = plan.hll_precision as u32;
        let m = 1usize << p;
        let j = (h >> (64 - p)) as usize;
        let rest_bits = 64 - p;
        let low = h & ((1u64 << rest_bits) - 1);
        let rho = (rest_bits - (64 - low.leading_zeros()) + 1) as u8;
        for (w, &(g, n)) in plan.windows.iter().enumerate() {
            let b = t.div_euclid(g);
            if b <= high.div_euclid(g) - n {
                continue;
            }
            let i = b.rem_euclid(n) as usize * m + j;
            let regs = &mut self.regs[w];
            if rho > regs[i] {
                regs[i] = rho;
                let old = self.union[w][j];
                if rho > old {
                    self.union[w][j] = rho;
                    self.zsum[w] =
                        self.zsum[w] + (1u128 << (K - rho as u32)) - (1u128 << (K - old as u32));
                    if old == 0 {
                        self.zeros[w] -= 1;
                    }
                }
            }
        }
    }

    /// Slide every window from ``old_high`` to ``new_high`` (> ``old_high``).
    pub fn advance(&mut self, plan: &Plan, old_high: i64, new_high: i64) {
        let m = self.m();
        for (w, &(g, n)) in plan.windows.iter().enumerate() {
            let b = new_high.div_euclid(g);
            let h = old_high.div_euclid(g);
            if b <= h {
                continue;
            }
            let regs = &mut self.regs[w];
            let mut evicted = false;
            if b - h >= n {
                if regs.iter().fold(0u8, |a, &r| a | r) != 0 {
                    regs.fill(0);
                    evicted = true;
                }
            } else {
                for k in (h - n + 1)..=(b - n) {
                    let s = k.rem_euclid(n) as usize * m;
                    let slot = &mut regs[s..s + m];
                    if slot.iter().fold(0u8, |a, &r| a | r) != 0 {
                        slot.fill(0);
                        evicted = true;
                    }
                }
            }
            if evicted {
                self.recompute(w);
            }
        }
    }

    pub fn recompute(&mut self, w: usize) {
        let m = self.m();
        let regs = &self.regs[w];
        let n = regs.len() / m;
        let union = &mut self.union[w];
        union.fill(0);
        for s in 0..n {
            for (u, &r) in union.iter_mut().zip(&regs[s * m..(s + 1) * m]) {
                if r > *u {
                    *u = r;
                }
            }
        }
        let mut zsum = 0u128;
        let mut zeros = 0u32;
        for &r in union.iter() {
            zsum += 1u128 << (K - r as u32);
            zeros += (r == 0) as u32;
        }
        self.zsum[w] = zsum;
        self.zeros[w] = zeros;
    }

    pub fn estimate(&self, w: usize) -> f64 {
        let m = self.m();
        let zeros = self.zeros[w];
        if zeros as usize == m {
            return 0.0;
        }
        let mf = m as f64;
        let raw = alpha(m) * mf * mf * 18446744073709551616.0 / (self.zsum[w] as f64);
        if raw <= 2.5 * mf && zeros > 0 {
            return mf * (mf / zeros as f64).ln();
        }
        raw
    }
}
