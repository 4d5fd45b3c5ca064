//! The compiled spec of one entity kind, built from the description `window.py` derives from the
//! feature spec: nothing here knows a feature by name.

/// Facts tuple layout (``fanout.EventFacts``): the fields the core reads.
pub const F_EVENT_ID: usize = 0;
pub const F_TIME: usize = 1;
pub const F_TYPE: usize = 2;
pub const F_ACCOUNT: usize = 3;
pub const F_IP: usize = 4;
pub const F_DEVICE: usize = 5;
pub const F_ASN: usize = 6;
pub const F_COUNTRY: usize = 7;
pub const F_USER_AGENT: usize = 8;
pub const F_TARGET_ACCOUNT: usize = 9;
pub const F_TARGET_CONTENT: usize = 10;
pub const F_CONTENT_HASH: usize = 11;
pub const F_PLAY: usize = 12;
pub const F_TEXT_LENGTH: usize = 13;
pub const F_URL_COUNT: usize = 14;
pub const F_MENTION_COUNT: usize = 15;
/// Numeric fields are clamped to [0, NUMBER_CAP] (``fanout.NUMBER_CAP``).
pub const NUMBER_CAP: i64 = (1 << 40) - 1;
pub const F_ACCOUNT_CREATED: usize = 16;
pub const F_EXPECT_MASK: usize = 17;
pub const N_FACTS: usize = 18;
/// The facts tuple's optional last field: the event's attributes as sorted ``(key, value)`` pairs.
pub const F_ATTRIBUTES: usize = 18;
/// Attribute tests (``attributes[key] == value``) a plan can hold; test ``s`` reads as the numeric
/// field ``N_FACTS + s`` (1 when it holds, else 0), so a ``Where`` filters on it like on a number.
pub const MAX_ATTR_TESTS: usize = 16;
pub const N_NUMS: usize = N_FACTS + MAX_ATTR_TESTS;
/// A derived numeric field a ``Where`` can test (never stored in ``Ev::nums``): the account's age in
/// seconds at the event, ``(time - account_created_ms) / 1000`` floored at 0; ``NUMBER_CAP`` when the
/// creation time is unknown (0), so an unknown account never passes a "fresh" range.
pub const F_ACCOUNT_AGE_S: usize = N_NUMS;

/// Aggregations of one group for one event type.
#[derive(Clone, Debug, Default)]
pub struct Ops {
    /// Columns incremented by one.
    pub counts: Vec<usize>,
    /// (column, facts field) summed.
    pub sums: Vec<(usize, usize)>,
    /// (distinct aggregation index, facts field).
    pub dists: Vec<(usize, usize)>,
}

/// A range-filtered group: applies when ``lo <= facts[field] < hi``.
#[derive(Clone, Debug)]
pub struct Where {
    pub field: usize,
    pub lo: i64,
    pub hi: i64,
    pub ops: Ops,
}

/// What one event type adds to one kind's columns.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub ops: Ops,
    pub wheres: Vec<Where>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: u8,
    pub lateness_ms: i64,
    pub exact_limit: usize,
    pub hll_precision: u8,
    pub fingerprint: u32,
    /// Per window: (bucket_ms g, bucket count n).
    pub windows: Vec<(i64, i64)>,
    pub n_cols: usize,
    /// Column of each distinct aggregation.
    pub distinct_cols: Vec<usize>,
    /// Indexed by event type value (0 = none).
    pub programs: Vec<Program>,
    /// (numerator lane, denominator lane, default), lanes ``w * n_cols + c``.
    pub ratios: Vec<(usize, usize, f64)>,
    /// Longest window plus allowed lateness: the state may go once the watermark passes high + span.
    pub span_ms: i64,
    /// Attribute tests ``(key, value)``; test ``s`` is the numeric field ``N_FACTS + s``.
    pub attr_tests: Vec<(String, String)>,
}

impl Plan {
    pub fn n_lanes(&self) -> usize {
        self.windows.len() * self.n_cols
    }
    /// Length of the kind's block: the window lanes then the ratios.
    pub fn n_out(&self) -> usize {
        self.n_lanes() + self.ratios.len()
    }
}
