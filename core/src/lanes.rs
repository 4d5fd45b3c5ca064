//! Window values of one key: u32 lanes while every value fits (counts and small sums: half the
//! memory of a key), widened once to i64 lanes for good when one does not.

#[derive(Clone, Debug)]
pub enum Lanes {
    Narrow(Box<[u32]>),
    Wide(Box<[i64]>),
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes::Narrow(Box::new([]))
    }
}

impl Lanes {
    pub fn zeros(n: usize) -> Self {
        Lanes::Narrow(vec![0u32; n].into_boxed_slice())
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Lanes::Narrow(a) => a.is_empty(),
            Lanes::Wide(a) => a.is_empty(),
        }
    }

    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Lanes::Narrow(a) => a[i] as i64,
            Lanes::Wide(a) => a[i],
        }
    }

    #[inline]
    pub fn add(&mut self, i: usize, v: i64) {
        match self {
            Lanes::Narrow(a) => {
                let x = a[i] as i64 + v;
                if (0..=u32::MAX as i64).contains(&x) {
                    a[i] = x as u32;
                } else {
                    self.widen();
                    self.add(i, v);
                }
            }
            Lanes::Wide(a) => a[i] += v,
        }
    }

    fn widen(&mut self) {
        if let Lanes::Narrow(a) = self {
            *self = Lanes::Wide(a.iter().map(|&v| v as i64).collect());
        }
    }

    pub fn zero_range(&mut self, from: usize, to: usize) {
        match self {
            Lanes::Narrow(a) => a[from..to].fill(0),
            Lanes::Wide(a) => a[from..to].fill(0),
        }
    }

    /// Lanes ``from .. from + out.len()`` into ``out``.
    #[inline]
    pub fn read(&self, from: usize, out: &mut [i64]) {
        match self {
            Lanes::Narrow(a) => {
                for (o, &v) in out.iter_mut().zip(&a[from..]) {
                    *o = v as i64;
                }
            }
            Lanes::Wide(a) => out.copy_from_slice(&a[from..from + out.len()]),
        }
    }

    #[inline]
    pub fn write_f64(&self, out: &mut [f64]) {
        match self {
            Lanes::Narrow(a) => {
                for (o, &v) in out.iter_mut().zip(a.iter()) {
                    *o = v as f64;
                }
            }
            Lanes::Wide(a) => {
                for (o, &v) in out.iter_mut().zip(a.iter()) {
                    *o = v as f64;
                }
            }
        }
    }
}
