//! Versioned state bytes. Layout v2 (written) and v1 (read, migrated), both documented in
//! ``operators/features/state_codec.py``.

use crate::hll::Hll;
use crate::lanes::Lanes;
use crate::plan::Plan;
use crate::state::{Closed, Seen, State, MAX_TIME, NO_TIME};

pub const MAGIC: &[u8; 3] = b"SWK";
pub const LAYOUT_V1: u8 = 1;
pub const LAYOUT_V2: u8 = 2;
const V1_HEADER: usize = 26;
const V2_HEADER: usize = 10;

pub fn item_hash(value: &[u8]) -> u64 {
    let digest = blake2b_simd::Params::new().hash_length(8).hash(value);
    u64::from_le_bytes(digest.as_bytes().try_into().expect("8-byte digest"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Lane vector: per 64 columns a varint bitmap of the non-zero lanes, then those lanes as varints.
fn put_vector(out: &mut Vec<u8>, lanes: &[i64]) {
    for chunk in lanes.chunks(64) {
        let mut bits = 0u64;
        for (i, &v) in chunk.iter().enumerate() {
            if v != 0 {
                bits |= 1 << i;
            }
        }
        put_varint(out, bits);
        for &v in chunk.iter().filter(|&&v| v != 0) {
            put_varint(out, v as u64);
        }
    }
}

/// Canonical v2 bytes of ``st``.
pub fn encode(plan: &Plan, st: &State) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(LAYOUT_V2);
    out.push(plan.kind);
    out.push(plan.windows.len() as u8);
    out.extend_from_slice(&plan.fingerprint.to_le_bytes());
    put_varint(&mut out, st.late);
    put_varint(&mut out, zigzag(st.high));
    if st.high == NO_TIME {
        return out;
    }
    let nc = plan.n_cols;
    let mut head_lanes = vec![0i64; nc];
    for (w, &(g, _)) in plan.windows.iter().enumerate() {
        let head = st.high.div_euclid(g);
        match st.closed.get(w) {
            Some(Some(cl)) => {
                let nonzero = |i: &usize| cl.vals[i * nc..(i + 1) * nc].iter().any(|&v| v != 0);
                put_varint(&mut out, cl.live().filter(nonzero).count() as u64);
                for i in cl.live().filter(nonzero) {
                    put_varint(&mut out, (head - cl.idx[i]) as u64);
                    put_vector(&mut out, &cl.vals[i * nc..(i + 1) * nc]);
                }
            }
            _ => put_varint(&mut out, 0),
        }
        st.head_lanes(plan, w, &mut head_lanes);
        put_vector(&mut out, &head_lanes);
    }
    for di in 0..plan.distinct_cols.len() {
        match st.hll.get(di) {
            Some(Some(hll)) => {
                put_varint(&mut out, 1);
                let m = hll.m();
                for (w, &(g, n)) in plan.windows.iter().enumerate() {
                    let head = st.high.div_euclid(g);
                    let regs = &hll.regs[w];
                    let used: Vec<i64> = ((head - n + 1)..=head)
                        .filter(|&b| {
                            let s = b.rem_euclid(n) as usize * m;
                            regs[s..s + m].iter().fold(0u8, |a, &r| a | r) != 0
                        })
                        .collect();
                    put_varint(&mut out, used.len() as u64);
                    for b in used {
                        put_varint(&mut out, (head - b) as u64);
                        let s = b.rem_euclid(n) as usize * m;
                        out.extend_from_slice(&regs[s..s + m]);
                    }
                }
            }
            _ => {
                put_varint(&mut out, 0);
                let values = st.exact_of(di);
                put_varint(&mut out, values.len() as u64);
                for e in values {
                    out.extend_from_slice(&e.hash.to_le_bytes());
                    put_varint(&mut out, (st.high - e.last()) as u64);
                }
            }
        }
    }
    out
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, k: usize) -> Result<&'a [u8], String> {
        if self.pos + k > self.data.len() {
            return Err(format!(
                "state truncated at byte {} (need {} more)",
                self.pos, k
            ));
        }
        let s = &self.data[self.pos..self.pos + k];
        self.pos += k;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn uint(&mut self, width: usize) -> Result<u64, String> {
        let b = self.take(width)?;
        let mut buf = [0u8; 8];
        buf[..width].copy_from_slice(b);
        Ok(u64::from_le_bytes(buf))
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("bad varint before byte {}", self.pos))
    }
}

fn check_header(
    plan: &Plan,
    version: u8,
    kind: u8,
    n_win: u8,
    fingerprint: u32,
) -> Result<(), String> {
    if version != LAYOUT_V1 && version != LAYOUT_V2 {
        return Err(format!(
            "state layout version {version}, this build reads 1 and 2"
        ));
    }
    if kind != plan.kind || n_win as usize != plan.windows.len() {
        return Err(format!(
            "state is for kind {kind} with {n_win} windows, expected {}",
            plan.kind
        ));
    }
    if fingerprint != plan.fingerprint {
        return Err(
            "state was written under a different feature spec (fingerprint differs)".into(),
        );
    }
    Ok(())
}

/// Rebuild a state from v1 or v2 bytes.
pub fn decode(plan: &Plan, data: &[u8]) -> Result<State, String> {
    if data.len() < 4 || &data[..3] != MAGIC {
        return Err("not a streamwarden key state (bad magic)".into());
    }
    let mut r = Reader { data, pos: 3 };
    let version = r.u8()?;
    let st = if version == LAYOUT_V1 {
        if data.len() < V1_HEADER {
            return Err(format!("state truncated at byte 0 (need {V1_HEADER})"));
        }
        let (kind, n_win, fp) = (r.u8()?, r.u8()?, r.u32()?);
        check_header(plan, version, kind, n_win, fp)?;
        decode_v1(plan, &mut r)?
    } else {
        if data.len() < V2_HEADER {
            return Err(format!("state truncated at byte 0 (need {V2_HEADER})"));
        }
        let (kind, n_win, fp) = (r.u8()?, r.u8()?, r.u32()?);
        check_header(plan, version, kind, n_win, fp)?;
        decode_v2(plan, &mut r)?
    };
    if r.pos != data.len() {
        return Err(format!(
            "{} trailing bytes after the state",
            data.len() - r.pos
        ));
    }
    Ok(st)
}

/// Window lanes from (bucket index, lanes) pairs of each window, head included.
fn set_window(
    plan: &Plan,
    st: &mut State,
    w: usize,
    head_lanes: &[i64],
    mut buckets: Vec<(i64, Vec<i64>)>,
) {
    let nc = plan.n_cols;
    buckets.sort_by_key(|b| b.0);
    buckets.retain(|b| b.1.iter().any(|&v| v != 0));
    for (c, &v) in head_lanes.iter().enumerate() {
        st.sums.add(w * nc + c, v);
    }
    if buckets.is_empty() {
        return;
    }
    if st.closed.is_empty() {
        st.closed = (0..plan.windows.len()).map(|_| None).collect();
    }
    let mut cl = Closed::new(nc);
    for (b, v) in buckets {
        for (c, &x) in v.iter().enumerate() {
            cl.sum[c] += x;
            st.sums.add(w * nc + c, x);
        }
        cl.idx.push(b);
        cl.vals.extend_from_slice(&v);
    }
    st.closed[w] = Some(Box::new(cl));
}

/// Sort the exact values read for every aggregation; a value twice in one set is corrupt.
fn finish_exact(st: &mut State) -> Result<(), String> {
    st.exact.sort_unstable_by_key(|e| (e.di(), e.hash));
    if st
        .exact
        .windows(2)
        .any(|p| (p[0].di(), p[0].hash) == (p[1].di(), p[1].hash))
    {
        return Err("duplicate value in an exact distinct set".into());
    }
    Ok(())
}

fn check_time(t: i64) -> Result<i64, String> {
    if t.abs() >= MAX_TIME {
        return Err(format!("time {t} out of range"));
    }
    Ok(t)
}

fn decode_v1(plan: &Plan, r: &mut Reader) -> Result<State, String> {
    let high = r.u64()? as i64;
    let late = r.u64()?;
    let mut st = State::new(plan);
    st.late = late;
    if high == NO_TIME {
        return Ok(st);
    }
    check_time(high)?;
    st.high = high;
    st.sums = Lanes::zeros(plan.n_lanes());
    let nc = plan.n_cols;
    let mask_bytes = nc.div_ceil(8);
    for (w, &(g, n)) in plan.windows.iter().enumerate() {
        let head = r.u64()? as i64;
        if head != high.div_euclid(g) {
            return Err(format!(
                "window {w}: head bucket {head} is not the high-water mark's"
            ));
        }
        let bitmap_bytes = (n as usize + 8) / 8;
        let bitmap = r.take(bitmap_bytes)?.to_vec();
        let mut head_lanes = vec![0i64; nc];
        let mut buckets = Vec::new();
        for i in 0..=(n as usize) {
            if bitmap[i / 8] >> (i % 8) & 1 == 0 {
                continue;
            }
            let lane_bits = r.uint(mask_bytes)?;
            let code = r.u8()?;
            if code > 3 {
                return Err(format!("bad lane width code {code}"));
            }
            let width = 1usize << code;
            let mut v = vec![0i64; nc];
            for (c, lane) in v.iter_mut().enumerate() {
                if lane_bits >> c & 1 == 1 {
                    *lane = r.uint(width)? as i64;
                }
            }
            if lane_bits >> nc != 0 {
                return Err("lane bitmap names a column beyond the plan's".into());
            }
            if i == 0 {
                head_lanes = v;
            } else {
                let s = (i - 1) as i64;
                let b = (head - n + 1) + (s - (head - n + 1)).rem_euclid(n);
                if b == head {
                    return Err(format!(
                        "window {w}: ring slot {s} of the head bucket is not empty"
                    ));
                }
                buckets.push((b, v));
            }
        }
        set_window(plan, &mut st, w, &head_lanes, buckets);
    }
    let m = 1usize << plan.hll_precision;
    for di in 0..plan.distinct_cols.len() {
        match r.u8()? {
            0 => {
                let count = r.u32()? as usize;
                let mut lens = Vec::with_capacity(count);
                let mut ages = Vec::with_capacity(count);
                if count == 1 {
                    lens.push(r.u16()? as usize);
                    ages.push(r.u32()?);
                } else {
                    for _ in 0..count {
                        lens.push(r.u16()? as usize);
                    }
                    for _ in 0..count {
                        ages.push(r.u32()?);
                    }
                }
                for (len, age) in lens.into_iter().zip(ages) {
                    let raw = r.take(len)?;
                    std::str::from_utf8(raw).map_err(|e| format!("exact distinct value: {e}"))?;
                    st.exact.push(Seen::new(
                        item_hash(raw),
                        di,
                        check_time(high - age as i64)?,
                    ));
                }
            }
            1 => {
                let mut hll = Hll::new(plan);
                for (w, &(_, n)) in plan.windows.iter().enumerate() {
                    let slots = r.u16()?;
                    for _ in 0..slots {
                        let s = r.u16()? as usize;
                        if s as i64 >= n {
                            return Err(format!("HLL bucket slot {s} out of range"));
                        }
                        hll.regs[w][s * m..(s + 1) * m].copy_from_slice(r.take(m)?);
                    }
                    check_registers(plan, &hll.regs[w])?;
                    hll.recompute(w);
                }
                st.set_hll(plan, di, hll);
            }
            mode => return Err(format!("bad distinct mode {mode}")),
        }
    }
    finish_exact(&mut st)?;
    Ok(st)
}

fn check_registers(plan: &Plan, regs: &[u8]) -> Result<(), String> {
    let top = 65 - plan.hll_precision;
    if regs.iter().any(|&r| r > top) {
        return Err(format!("HLL register above {top}"));
    }
    Ok(())
}

fn get_vector(r: &mut Reader, nc: usize) -> Result<Vec<i64>, String> {
    let mut v = vec![0i64; nc];
    for base in (0..nc).step_by(64) {
        let width = (nc - base).min(64);
        let bits = r.varint()?;
        if width < 64 && bits >> width != 0 {
            return Err("lane bitmap names a column beyond the plan's".into());
        }
        for (i, lane) in v[base..base + width].iter_mut().enumerate() {
            if bits >> i & 1 == 1 {
                *lane = r.varint()? as i64;
            }
        }
    }
    Ok(v)
}

fn decode_v2(plan: &Plan, r: &mut Reader) -> Result<State, String> {
    let late = r.varint()?;
    let high = unzigzag(r.varint()?);
    let mut st = State::new(plan);
    st.late = late;
    if high == NO_TIME {
        return Ok(st);
    }
    check_time(high)?;
    st.high = high;
    st.sums = Lanes::zeros(plan.n_lanes());
    let nc = plan.n_cols;
    for (w, &(g, n)) in plan.windows.iter().enumerate() {
        let head = high.div_euclid(g);
        let count = r.varint()?;
        if count >= n as u64 {
            return Err(format!("window {w}: {count} closed buckets"));
        }
        let mut buckets = Vec::with_capacity(count as usize);
        let mut last_age = 0u64;
        for _ in 0..count {
            let age = r.varint()?;
            if age == 0 || age >= n as u64 || (last_age != 0 && age >= last_age) {
                return Err(format!("window {w}: bad closed bucket age {age}"));
            }
            last_age = age;
            buckets.push((head - age as i64, get_vector(r, nc)?));
        }
        let head_lanes = get_vector(r, nc)?;
        set_window(plan, &mut st, w, &head_lanes, buckets);
    }
    let m = 1usize << plan.hll_precision;
    for di in 0..plan.distinct_cols.len() {
        match r.varint()? {
            0 => {
                let count = r.varint()? as usize;
                if count > r.data.len() {
                    return Err(format!("exact set of {count} values"));
                }
                for _ in 0..count {
                    let h = r.u64()?;
                    let age = r.varint()?;
                    if age >= MAX_TIME as u64 {
                        return Err(format!("exact value age {age} out of range"));
                    }
                    st.exact
                        .push(Seen::new(h, di, check_time(high - age as i64)?));
                }
            }
            1 => {
                let mut hll = Hll::new(plan);
                for (w, &(g, n)) in plan.windows.iter().enumerate() {
                    let head = high.div_euclid(g);
                    let count = r.varint()?;
                    if count > n as u64 {
                        return Err(format!("HLL window {w}: {count} buckets"));
                    }
                    for _ in 0..count {
                        let age = r.varint()?;
                        if age >= n as u64 {
                            return Err(format!("HLL bucket age {age} out of range"));
                        }
                        let s = (head - age as i64).rem_euclid(n) as usize;
                        hll.regs[w][s * m..(s + 1) * m].copy_from_slice(r.take(m)?);
                    }
                    check_registers(plan, &hll.regs[w])?;
                    hll.recompute(w);
                }
                st.set_hll(plan, di, hll);
            }
            mode => return Err(format!("bad distinct mode {mode}")),
        }
    }
    finish_exact(&mut st)?;
    Ok(st)
}
