//! ``streamwarden.operators.features._core``: the compiled window core (Python bindings).
//!
//! Two entry points: ``KeyState`` (one key, for the engines' keyed state: ``on_event`` → partial,
//! ``encode_state``/``decode_state`` for the versioned bytes) and ``Batch`` (replay/backtests: facts
//! of many events in → feature rows as f64 bytes out, keyed state and expiry kept inside).

mod codec;
mod hll;
mod lanes;
mod plan;
mod state;

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyFloat, PyList, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

use plan::{
    Ops, Plan, Program, Where, F_ACCOUNT_AGE_S, F_ACCOUNT_CREATED, F_ATTRIBUTES, F_CONTENT_HASH,
    F_EVENT_ID, F_EXPECT_MASK, F_PLAY, F_TIME, F_TYPE, MAX_ATTR_TESTS, N_FACTS, N_NUMS,
};
use plan::{
    F_ACCOUNT, F_ASN, F_COUNTRY, F_DEVICE, F_IP, F_MENTION_COUNT, F_TARGET_ACCOUNT,
    F_TARGET_CONTENT, F_TEXT_LENGTH, F_URL_COUNT, F_USER_AGENT, NUMBER_CAP,
};
use state::{Ev, State, NO_TIME};

type OpsDesc = (Vec<usize>, Vec<(usize, usize)>, Vec<(usize, usize)>);
type WhereDesc = (usize, i64, i64, OpsDesc);

fn ops_of(d: OpsDesc) -> Ops {
    Ops {
        counts: d.0,
        sums: d.1,
        dists: d.2,
    }
}

/// A compiled kind plan; ``window.KindPlan`` builds it from the spec and owns it (``owner``).
#[pyclass(
    frozen,
    module = "streamwarden.operators.features._core",
    name = "Plan"
)]
pub struct CorePlan {
    plan: Arc<Plan>,
    /// Per event type: the categorical fields some distinct aggregation of the kind reads.
    hash_fields: Vec<Vec<usize>>,
    owner: PyObject,
    make_partial: PyObject,
}

fn distinct_fields(prog: &Program) -> Vec<usize> {
    let mut out: Vec<usize> = prog.ops.dists.iter().map(|d| d.1).collect();
    for w in &prog.wheres {
        out.extend(w.ops.dists.iter().map(|d| d.1));
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[pymethods]
impl CorePlan {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (owner, make_partial, kind, lateness_ms, exact_limit, hll_precision, fingerprint, windows, n_cols, distinct_cols, programs, ratios, span_ms, attr_tests=Vec::new()))]
    fn new(
        owner: PyObject,
        make_partial: PyObject,
        kind: u8,
        lateness_ms: i64,
        exact_limit: usize,
        hll_precision: u8,
        fingerprint: u32,
        windows: Vec<(i64, i64)>,
        n_cols: usize,
        distinct_cols: Vec<usize>,
        programs: Vec<(OpsDesc, Vec<WhereDesc>)>,
        ratios: Vec<(usize, usize, f64)>,
        span_ms: i64,
        attr_tests: Vec<(String, String)>,
    ) -> PyResult<Self> {
        if attr_tests.len() > MAX_ATTR_TESTS {
            return Err(PyValueError::new_err(format!(
                "more than {MAX_ATTR_TESTS} attribute tests"
            )));
        }
        let n_nums = N_FACTS + attr_tests.len();
        if windows.is_empty() || windows.iter().any(|&(g, n)| g <= 0 || n <= 0) {
            return Err(PyValueError::new_err(
                "every window needs a positive bucket and bucket count",
            ));
        }
        if !(4..=16).contains(&hll_precision) || exact_limit == 0 {
            return Err(PyValueError::new_err("bad HLL precision or exact limit"));
        }
        let programs: Vec<Program> = programs
            .into_iter()
            .map(|(ops, wheres)| Program {
                ops: ops_of(ops),
                wheres: wheres
                    .into_iter()
                    .map(|(field, lo, hi, ops)| Where {
                        field,
                        lo,
                        hi,
                        ops: ops_of(ops),
                    })
                    .collect(),
            })
            .collect();
        let check = |ops: &Ops| {
            ops.counts.iter().all(|&c| c < n_cols)
                && ops.sums.iter().all(|&(c, f)| c < n_cols && f < N_FACTS)
                && ops
                    .dists
                    .iter()
                    .all(|&(d, f)| d < distinct_cols.len() && f < N_FACTS)
        };
        if !programs.iter().all(|p| {
            check(&p.ops)
                && p.wheres
                    .iter()
                    .all(|w| (w.field < n_nums || w.field == F_ACCOUNT_AGE_S) && check(&w.ops))
        }) || distinct_cols.iter().any(|&c| c >= n_cols)
            || distinct_cols.len() > 255
            || ratios
                .iter()
                .any(|&(a, b, _)| a >= n_cols * windows.len() || b >= n_cols * windows.len())
        {
            return Err(PyValueError::new_err("plan description out of range"));
        }
        let hash_fields = programs.iter().map(distinct_fields).collect();
        let plan = Plan {
            kind,
            lateness_ms,
            exact_limit,
            hll_precision,
            fingerprint,
            windows,
            n_cols,
            distinct_cols,
            programs,
            ratios,
            span_ms,
            attr_tests,
        };
        Ok(CorePlan {
            plan: Arc::new(plan),
            hash_fields,
            owner,
            make_partial,
        })
    }

    /// Length of the kind's block.
    #[getter]
    fn n_out(&self) -> usize {
        self.plan.n_out()
    }
}

fn str_hash(item: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    let s = item.downcast::<PyString>()?.to_str()?;
    Ok(if s.is_empty() {
        None
    } else {
        Some(codec::item_hash(s.as_bytes()))
    })
}

/// The core's view of a facts tuple: time, type, numeric fields and the hashes of ``fields``.
fn read_facts(
    facts: &Bound<'_, PyTuple>,
    fields: &[Vec<usize>],
    tests: &[(String, String)],
) -> PyResult<Ev> {
    check_len(facts)?;
    let t: i64 = facts.get_borrowed_item(F_TIME)?.extract()?;
    let ty: i64 = facts.get_borrowed_item(F_TYPE)?.extract()?;
    let ty = if ty < 0 { usize::MAX } else { ty as usize };
    let mut ev = Ev {
        t,
        ty,
        nums: [0; N_NUMS],
        hashes: [None; N_FACTS],
    };
    for f in F_PLAY..F_ACCOUNT_CREATED + 1 {
        ev.nums[f] = facts.get_borrowed_item(f)?.extract()?;
    }
    test_pairs(facts, tests, &mut ev.nums)?;
    if let Some(fs) = fields.get(ty) {
        for &f in fs {
            ev.hashes[f] = str_hash(&facts.get_borrowed_item(f)?.to_owned())?;
        }
    }
    if t.abs() >= state::MAX_TIME {
        return Err(PyValueError::new_err(format!(
            "event time {t} out of range"
        )));
    }
    Ok(ev)
}

/// A facts tuple has ``N_FACTS`` fields, or one more: the attributes.
fn check_len(facts: &Bound<'_, PyTuple>) -> PyResult<()> {
    let n = facts.len();
    if n != N_FACTS && n != N_FACTS + 1 {
        return Err(PyValueError::new_err(format!(
            "facts need {N_FACTS} or {} fields, got {n}",
            N_FACTS + 1
        )));
    }
    Ok(())
}

/// The attribute tests over a facts tuple's ``(key, value)`` pairs: ``nums[N_FACTS + s]`` is 1 when
/// test ``s`` holds. Nothing to do (the common case) without tests or without attributes.
fn test_pairs(
    facts: &Bound<'_, PyTuple>,
    tests: &[(String, String)],
    nums: &mut [i64; N_NUMS],
) -> PyResult<()> {
    if tests.is_empty() || facts.len() <= F_ATTRIBUTES {
        return Ok(());
    }
    let item = facts.get_borrowed_item(F_ATTRIBUTES)?;
    let pairs = item.downcast::<PyTuple>()?;
    if pairs.is_empty() {
        return Ok(());
    }
    for pair in pairs.iter() {
        let pair = pair.downcast::<PyTuple>()?;
        if pair.len() != 2 {
            return Err(PyValueError::new_err("an attribute is a (key, value) pair"));
        }
        let key = pair.get_borrowed_item(0)?;
        let key = key.downcast::<PyString>()?.to_str()?;
        for (s, (k, v)) in tests.iter().enumerate() {
            if k == key {
                let value = pair.get_borrowed_item(1)?;
                nums[N_FACTS + s] = (value.downcast::<PyString>()?.to_str()? == v) as i64;
            }
        }
    }
    Ok(())
}

/// The attribute tests over a decoded ``Event``'s ``attributes`` map (as ``test_pairs``).
fn test_map(
    event: &Bound<'_, PyAny>,
    tests: &[(String, String)],
    nums: &mut [i64; N_NUMS],
) -> PyResult<()> {
    if tests.is_empty() {
        return Ok(());
    }
    let py = event.py();
    let map = event.getattr(intern!(py, "attributes"))?;
    if map.len()? == 0 {
        return Ok(());
    }
    for (s, (k, v)) in tests.iter().enumerate() {
        let got = map.call_method1(intern!(py, "get"), (k.as_str(),))?;
        if !got.is_none() {
            nums[N_FACTS + s] = (got.downcast::<PyString>()?.to_str()? == v) as i64;
        }
    }
    Ok(())
}

/// Check a facts tuple's types and ranges without applying anything (so a bad item in a batch
/// changes no state: the call fails before the first event is applied).
fn validate_facts(item: &Bound<'_, PyAny>) -> PyResult<()> {
    let facts = item.downcast::<PyTuple>()?;
    check_len(facts)?;
    let t: i64 = facts.get_borrowed_item(F_TIME)?.extract()?;
    if t.abs() >= state::MAX_TIME {
        return Err(PyValueError::new_err(format!(
            "event time {t} out of range"
        )));
    }
    facts.get_borrowed_item(F_TYPE)?.extract::<i64>()?;
    for f in F_ACCOUNT..F_PLAY {
        facts.get_borrowed_item(f)?.downcast::<PyString>()?;
    }
    for f in F_PLAY..F_ACCOUNT_CREATED + 1 {
        facts.get_borrowed_item(f)?.extract::<i64>()?;
    }
    if facts.len() > F_ATTRIBUTES {
        facts
            .get_borrowed_item(F_ATTRIBUTES)?
            .downcast::<PyTuple>()?;
    }
    Ok(())
}

/// One event's facts as the batch engine reads them: ``Ev`` plus the text fields as Python strings
/// (and the ASN as text when read from an ``Event``, where it is a number).
struct View<'py> {
    ev: Ev,
    texts: [Option<Bound<'py, PyString>>; N_FACTS],
    asn: Option<String>,
}

impl<'py> View<'py> {
    fn text(&self, f: usize) -> PyResult<&str> {
        if f == F_ASN {
            if let Some(a) = &self.asn {
                return Ok(a);
            }
        }
        match &self.texts[f] {
            Some(s) => s.to_str(),
            None => Ok(""),
        }
    }

    fn hash_fields(&mut self, fields: &[Vec<usize>]) -> PyResult<()> {
        if let Some(fs) = fields.get(self.ev.ty) {
            for &f in fs {
                let text = self.text(f)?;
                self.ev.hashes[f] = if text.is_empty() {
                    None
                } else {
                    Some(codec::item_hash(text.as_bytes()))
                };
            }
        }
        Ok(())
    }

    /// From an ``EventFacts`` tuple (checked by ``validate_facts``).
    fn from_facts(
        facts: &Bound<'py, PyTuple>,
        fields: &[Vec<usize>],
        tests: &[(String, String)],
    ) -> PyResult<Self> {
        let t: i64 = facts.get_borrowed_item(F_TIME)?.extract()?;
        let ty: i64 = facts.get_borrowed_item(F_TYPE)?.extract()?;
        let ty = if ty < 0 { usize::MAX } else { ty as usize };
        let mut v = View {
            ev: Ev {
                t,
                ty,
                nums: [0; N_NUMS],
                hashes: [None; N_FACTS],
            },
            texts: Default::default(),
            asn: None,
        };
        for f in F_ACCOUNT..F_PLAY {
            v.texts[f] = Some(facts.get_item(f)?.downcast_into::<PyString>()?);
        }
        for f in F_PLAY..F_ACCOUNT_CREATED + 1 {
            v.ev.nums[f] = facts.get_borrowed_item(f)?.extract()?;
        }
        test_pairs(facts, tests, &mut v.ev.nums)?;
        v.hash_fields(fields)?;
        Ok(v)
    }

    /// From a decoded ``Event`` message: the same facts ``FanOut`` extracts (numbers clamped to
    /// ``[0, NUMBER_CAP]``, the ASN as decimal text, empty when 0).
    fn from_event(
        event: &Bound<'py, PyAny>,
        fields: &[Vec<usize>],
        tests: &[(String, String)],
    ) -> PyResult<Self> {
        let py = event.py();
        let actor = event.getattr(intern!(py, "actor"))?;
        let target = event.getattr(intern!(py, "target"))?;
        let content = event.getattr(intern!(py, "content"))?;
        let text = |obj: &Bound<'py, PyAny>,
                    name: &Bound<'py, PyString>|
         -> PyResult<Option<Bound<'py, PyString>>> {
            Ok(Some(obj.getattr(name)?.downcast_into::<PyString>()?))
        };
        let t: i64 = event.getattr(intern!(py, "event_time_ms"))?.extract()?;
        if t.abs() >= state::MAX_TIME {
            return Err(PyValueError::new_err(format!(
                "event time {t} out of range"
            )));
        }
        let ty: i64 = event.getattr(intern!(py, "type"))?.extract()?;
        let mut v = View {
            ev: Ev {
                t,
                ty: if ty < 0 { usize::MAX } else { ty as usize },
                nums: [0; N_NUMS],
                hashes: [None; N_FACTS],
            },
            texts: Default::default(),
            asn: None,
        };
        v.texts[F_EVENT_ID] = text(event, intern!(py, "event_id"))?;
        v.texts[F_ACCOUNT] = text(&actor, intern!(py, "account_id"))?;
        v.texts[F_IP] = text(&actor, intern!(py, "ip"))?;
        v.texts[F_DEVICE] = text(&actor, intern!(py, "device_id"))?;
        let asn: i64 = actor.getattr(intern!(py, "asn"))?.extract()?;
        v.asn = Some(if asn != 0 {
            asn.to_string()
        } else {
            String::new()
        });
        v.texts[F_COUNTRY] = text(&actor, intern!(py, "country"))?;
        v.texts[F_USER_AGENT] = text(&actor, intern!(py, "user_agent"))?;
        v.texts[F_TARGET_ACCOUNT] = text(&target, intern!(py, "account_id"))?;
        v.texts[F_TARGET_CONTENT] = text(&target, intern!(py, "content_id"))?;
        v.texts[F_CONTENT_HASH] = text(&content, intern!(py, "content_hash"))?;
        let play: i64 = event.getattr(intern!(py, "play_duration_ms"))?.extract()?;
        v.ev.nums[F_PLAY] = play.clamp(0, NUMBER_CAP);
        v.ev.nums[F_TEXT_LENGTH] = content.getattr(intern!(py, "text_length"))?.extract()?;
        v.ev.nums[F_URL_COUNT] = content.getattr(intern!(py, "url_count"))?.extract()?;
        v.ev.nums[F_MENTION_COUNT] = content.getattr(intern!(py, "mention_count"))?.extract()?;
        v.ev.nums[F_ACCOUNT_CREATED] = event
            .getattr(intern!(py, "account_created_ms"))?
            .extract()?;
        test_map(event, tests, &mut v.ev.nums)?;
        v.hash_fields(fields)?;
        Ok(v)
    }
}

/// Python floats of the small whole numbers most window values are, made once: a partial or a vector
/// then mostly takes references instead of allocating (and later freeing) a float per value.
static SMALL_FLOATS: GILOnceCell<Vec<Py<PyFloat>>> = GILOnceCell::new();
const N_SMALL_FLOATS: usize = 1024;

fn floats<'py>(py: Python<'py>, vals: &[f64]) -> PyResult<Bound<'py, PyTuple>> {
    let small = SMALL_FLOATS.get_or_init(py, || {
        (0..N_SMALL_FLOATS)
            .map(|i| PyFloat::new(py, i as f64).unbind())
            .collect()
    });
    PyTuple::new(
        py,
        vals.iter().map(|&v| {
            let i = v as usize;
            if i < N_SMALL_FLOATS && i as f64 == v && v.is_sign_positive() {
                small[i].clone_ref(py).into_bound(py)
            } else {
                PyFloat::new(py, v)
            }
        }),
    )
}

/// All windows of one (entity kind, entity id).
#[pyclass(module = "streamwarden.operators.features._core", name = "KeyState")]
pub struct PyKeyState {
    plan: Py<CorePlan>,
    st: State,
    /// Free for the owner's expiry index (``VelocityStore``); not part of the state bytes.
    #[pyo3(get, set)]
    tick: i64,
}

fn core_plan<'py>(plan: &Bound<'py, PyAny>) -> PyResult<Bound<'py, CorePlan>> {
    Ok(plan.getattr("core")?.downcast_into::<CorePlan>()?)
}

#[pymethods]
impl PyKeyState {
    #[new]
    fn new(plan: &Bound<'_, PyAny>) -> PyResult<Self> {
        let core = core_plan(plan)?;
        let st = State::new(&core.get().plan);
        Ok(PyKeyState {
            plan: core.unbind(),
            st,
            tick: 0,
        })
    }

    /// Apply one event (unless late) and return the key's partial as of its high-water mark.
    fn on_event<'py>(
        &mut self,
        py: Python<'py>,
        facts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let facts = facts.downcast::<PyTuple>()?;
        let core = self.plan.get();
        let ev = read_facts(facts, &core.hash_fields, &core.plan.attr_tests)?;
        let late = self.st.apply(&core.plan, &ev);
        let mut vals = vec![0.0; core.plan.n_out()];
        self.st.values(&core.plan, &mut vals);
        let args = (
            facts.get_borrowed_item(F_EVENT_ID)?,
            core.plan.kind,
            floats(py, &vals)?,
            late,
            facts.get_borrowed_item(F_EXPECT_MASK)?,
            py.None(),
        );
        core.make_partial.bind(py).call1((args,))
    }

    /// The key's block as of its high-water mark.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let plan = &self.plan.get().plan;
        let mut vals = vec![0.0; plan.n_out()];
        self.st.values(plan, &mut vals);
        floats(py, &vals)
    }

    /// Event time after which the engine may drop this state.
    fn expiry_ms(&self) -> i64 {
        self.st.expiry_ms(&self.plan.get().plan)
    }

    #[getter]
    fn high_ms(&self) -> i64 {
        self.st.high
    }

    #[getter]
    fn late_events(&self) -> u64 {
        self.st.late
    }

    /// Per distinct aggregation: ``"exact"`` or ``"hll"``.
    #[getter]
    fn distinct_modes(&self) -> Vec<&'static str> {
        let plan = &self.plan.get().plan;
        (0..plan.distinct_cols.len())
            .map(|di| if self.st.is_hll(di) { "hll" } else { "exact" })
            .collect()
    }

    /// The ``window.KindPlan`` this state follows.
    #[getter]
    fn plan(&self, py: Python<'_>) -> PyObject {
        self.plan.get().owner.clone_ref(py)
    }
}

/// The canonical layout-v2 bytes of a key state.
#[pyfunction]
fn encode_state<'py>(py: Python<'py>, state: PyRef<'py, PyKeyState>) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &codec::encode(&state.plan.get().plan, &state.st))
}

/// Rebuild a key state from layout v1 or v2 bytes; ``ValueError`` says why bytes are unusable.
#[pyfunction]
fn decode_state(plan: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<PyKeyState> {
    let core = core_plan(plan)?;
    let st = codec::decode(&core.get().plan, data).map_err(PyValueError::new_err)?;
    Ok(PyKeyState {
        plan: core.unbind(),
        st,
        tick: 0,
    })
}

/// The 64-bit BLAKE2b hash of a value (``hll.item_hash``).
#[pyfunction]
fn item_hash(value: &str) -> u64 {
    codec::item_hash(value.as_bytes())
}

const N_TYPES: usize = 11;
const HOUR_MS: i64 = 3_600_000;

/// Replay/backtest engine: fan-out routes, keyed windows, watermark expiry and assembly in one call.
#[pyclass(module = "streamwarden.operators.features._core", name = "Batch")]
pub struct Batch {
    plans: Vec<Option<Arc<Plan>>>,
    routes: Vec<Vec<(u8, usize)>>,
    hash_fields: Vec<Vec<usize>>,
    /// The spec's attribute tests (every kind's plan holds the same list).
    attr_tests: Vec<(String, String)>,
    offsets: Vec<usize>,
    defaults: Vec<f64>,
    ooo_ms: i64,
    housekeeping_ms: i64,
    states: FxHashMap<Box<[u8]>, State>,
    key_buf: Vec<u8>,
    max_seen: i64,
    next_housekeeping: i64,
    min_expiry: i64,
    #[pyo3(get)]
    late_partials: u64,
    #[pyo3(get)]
    expired_keys: u64,
    #[pyo3(get)]
    max_keys: usize,
    /// Change tracking for a write-through store (``track_changes``); off, the hot path pays one
    /// bool check per key update and per dropped key.
    tracking: bool,
    /// Keys ``process_into`` applied an event to since the last ``take_changes``.
    dirty: FxHashSet<Box<[u8]>>,
    /// Keys ``advance_to`` dropped since the last ``take_changes``.
    removed: FxHashSet<Box<[u8]>>,
}

#[pymethods]
impl Batch {
    /// ``plans``: ``window.KindPlan`` per kind in vector order; ``routes[type]``: (kind, facts field)
    /// of the keys an event of that type fans out to; ``defaults``: the whole vector's defaults.
    #[new]
    fn new(
        plans: Vec<Bound<'_, PyAny>>,
        routes: Vec<Vec<(u8, usize)>>,
        defaults: Vec<f64>,
        ooo_ms: i64,
        housekeeping_ms: i64,
    ) -> PyResult<Self> {
        let mut by_kind: Vec<Option<Arc<Plan>>> = vec![None; 64];
        let mut offsets = vec![0usize; 64];
        let mut at = N_TYPES + 8;
        let mut attr_tests: Option<Vec<(String, String)>> = None;
        for p in &plans {
            let core = core_plan(p)?;
            let plan = core.get().plan.clone();
            match &attr_tests {
                None => attr_tests = Some(plan.attr_tests.clone()),
                Some(t) if *t != plan.attr_tests => {
                    return Err(PyValueError::new_err(
                        "the kinds' plans hold different attribute tests",
                    ))
                }
                Some(_) => {}
            }
            if plan.kind >= 64 {
                return Err(PyValueError::new_err("entity kind above 63"));
            }
            offsets[plan.kind as usize] = at;
            at += plan.n_out();
            let kind = plan.kind as usize;
            by_kind[kind] = Some(plan);
        }
        if at != defaults.len() {
            return Err(PyValueError::new_err(format!(
                "defaults hold {} values, the layout {at}",
                defaults.len()
            )));
        }
        let mut hash_fields = Vec::new();
        for route in &routes {
            let mut fields = Vec::new();
            for &(kind, field) in route {
                let Some(Some(plan)) = by_kind.get(kind as usize) else {
                    return Err(PyValueError::new_err(format!(
                        "route to kind {kind} without a plan"
                    )));
                };
                if field >= N_FACTS {
                    return Err(PyValueError::new_err("route field out of range"));
                }
                let ty = hash_fields.len();
                if let Some(prog) = plan.programs.get(ty) {
                    fields.extend(distinct_fields(prog));
                }
            }
            fields.sort_unstable();
            fields.dedup();
            hash_fields.push(fields);
        }
        Ok(Batch {
            plans: by_kind,
            routes,
            hash_fields,
            attr_tests: attr_tests.unwrap_or_default(),
            offsets,
            defaults,
            ooo_ms,
            housekeeping_ms,
            states: FxHashMap::default(),
            key_buf: Vec::new(),
            max_seen: NO_TIME,
            next_housekeeping: NO_TIME,
            min_expiry: i64::MAX,
            late_partials: 0,
            expired_keys: 0,
            max_keys: 0,
            tracking: false,
            dirty: FxHashSet::default(),
            removed: FxHashSet::default(),
        })
    }

    /// Feature rows of ``facts`` (a list of ``EventFacts``, arrival order): ``(values, late)`` with
    /// ``values`` the rows as little-endian f64 (``len(facts) * width``) and ``late`` one u64 mask per
    /// row (bit k: the entity of kind k saw the event as late).
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        facts: &Bound<'py, PyList>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        for item in facts.iter() {
            validate_facts(&item)?;
        }
        self.run_items(py, facts, false)
    }

    /// ``run`` from decoded ``Event`` messages (the caller checks their type): the facts are read
    /// here, as ``FanOut`` reads them, without a Python object per event.
    fn run_events<'py>(
        &mut self,
        py: Python<'py>,
        events: &Bound<'py, PyList>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        self.run_items(py, events, true)
    }

    /// One event's row as a tuple of floats, and its late mask.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        facts: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyTuple>, u64)> {
        validate_facts(facts)?;
        let mut row = vec![0f64; self.defaults.len()];
        let view = View::from_facts(
            facts.downcast::<PyTuple>()?,
            &self.hash_fields,
            &self.attr_tests,
        )?;
        let late = self.process_into(&view, &mut row)?;
        Ok((floats(py, &row)?, late))
    }

    /// Vector width.
    #[getter]
    fn width(&self) -> usize {
        self.defaults.len()
    }

    /// Largest event time seen (``NO_TIME`` before the first event).
    #[getter]
    fn max_seen_ms(&self) -> i64 {
        self.max_seen
    }

    #[getter]
    fn live_keys(&self) -> usize {
        self.states.len()
    }

    /// Drop every key whose expiry is at or before ``watermark_ms``; returns how many.
    fn advance_to(&mut self, watermark_ms: i64) -> usize {
        if watermark_ms < self.min_expiry {
            return 0;
        }
        let before = self.states.len();
        let plans = &self.plans;
        let tracking = self.tracking;
        let removed = &mut self.removed;
        let mut min_expiry = i64::MAX;
        self.states.retain(|key, st| {
            let plan = plans[key[0] as usize]
                .as_ref()
                .expect("plan of a stored key");
            let e = st.expiry_ms(plan);
            let keep = e > watermark_ms;
            if keep {
                min_expiry = min_expiry.min(e);
            } else if tracking {
                removed.insert(key.clone());
            }
            keep
        });
        self.min_expiry = min_expiry;
        let dropped = before - self.states.len();
        self.expired_keys += dropped as u64;
        dropped
    }

    /// Record changed keys for a write-through store (an engine's keyed state, e.g. Flink MapState):
    /// with ``on``, every key an event is applied to (late or not: the late count is state) is marked
    /// dirty and every key ``advance_to`` drops (housekeeping included) is marked removed, until
    /// ``take_changes``. Off (the default), nothing is recorded. Turning it off keeps what was recorded.
    fn track_changes(&mut self, on: bool) {
        self.tracking = on;
    }

    /// ``(updated, removed)`` since the last call, and clear both records: ``updated`` holds
    /// ``(key, layout-v2 state bytes)`` of every dirty key still live, ``removed`` every dropped key not
    /// live now. A key is the core's map key (``[kind byte] + entity id UTF-8``). The two lists are
    /// disjoint (an updated key is live, a removed one is not), so a store applies them in either order;
    /// it must apply each call's changes before the next call's.
    fn take_changes<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let updated = PyList::empty(py);
        for key in self.dirty.drain() {
            if let Some(st) = self.states.get(&key) {
                let plan = self.plans[key[0] as usize]
                    .as_ref()
                    .expect("plan of a stored key");
                updated.append((
                    PyBytes::new(py, &key),
                    PyBytes::new(py, &codec::encode(plan, st)),
                ))?;
            }
        }
        let removed = PyList::empty(py);
        for key in self.removed.drain() {
            if !self.states.contains_key(&key) {
                removed.append(PyBytes::new(py, &key))?;
            }
        }
        Ok((updated, removed))
    }

    /// Insert or replace one key's state from an external store: ``key`` as ``take_changes`` gives it,
    /// ``data`` its layout v1/v2 bytes, decoded with the plan of kind ``key[0]``. Not marked dirty.
    /// ``ValueError`` for a key of no planned kind or bytes the plan cannot decode.
    fn load(&mut self, key: &[u8], data: &[u8]) -> PyResult<()> {
        let Some((&kind, id)) = key.split_first() else {
            return Err(PyValueError::new_err(
                "empty state key: a key is a kind byte then the entity id",
            ));
        };
        let Some(Some(plan)) = self.plans.get(kind as usize) else {
            return Err(PyValueError::new_err(format!(
                "state key of entity kind {kind}: this batch has no plan for that kind"
            )));
        };
        let id = match std::str::from_utf8(id) {
            Ok(id) if !id.is_empty() => id,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "state key of entity kind {kind}: the entity id must be non-empty UTF-8"
                )))
            }
        };
        let st = codec::decode(plan, data).map_err(|e| {
            PyValueError::new_err(format!("state of kind {kind} entity {id:?}: {e}"))
        })?;
        let e = st.expiry_ms(plan);
        if e < self.min_expiry {
            self.min_expiry = e;
        }
        self.states.insert(key.into(), st);
        self.max_keys = self.max_keys.max(self.states.len());
        Ok(())
    }

    /// Set the largest event time seen (the watermark's base) after a restore (``load``), so lateness
    /// and expiry go on as before the failure. With ``next_housekeeping_ms`` (the lost run's
    /// ``next_housekeeping_ms``, checkpointed beside it) housekeeping drops keys at the very events the
    /// lost run would have, and state and outputs go on bit for bit. Without it the first event past
    /// ``max_seen_ms`` runs housekeeping (the lost run's was due in ``(max_seen_ms, max_seen_ms +
    /// housekeeping_ms]``): outputs agree unless an event reaches an expired key in HLL mode that one
    /// run dropped and the other not yet.
    #[pyo3(signature = (max_seen_ms, next_housekeeping_ms=None))]
    fn restore_clock(
        &mut self,
        max_seen_ms: i64,
        next_housekeeping_ms: Option<i64>,
    ) -> PyResult<()> {
        let next = next_housekeeping_ms.unwrap_or(max_seen_ms);
        for t in [max_seen_ms, next] {
            if t != NO_TIME && t.abs() >= state::MAX_TIME {
                return Err(PyValueError::new_err(format!(
                    "event time {t} out of range"
                )));
            }
        }
        self.max_seen = max_seen_ms;
        self.next_housekeeping = next;
        Ok(())
    }

    /// Event time from which an event runs housekeeping (``advance_to`` of its watermark).
    #[getter]
    fn next_housekeeping_ms(&self) -> i64 {
        self.next_housekeeping
    }

    /// (kind, encoded layout-v2 size) of every live key (benchmarks).
    fn encoded_sizes(&self) -> Vec<(u8, usize)> {
        self.states
            .iter()
            .map(|(k, st)| {
                (
                    k[0],
                    codec::encode(self.plans[k[0] as usize].as_ref().unwrap(), st).len(),
                )
            })
            .collect()
    }
}

impl Batch {
    fn run_items<'py>(
        &mut self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
        from_events: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let facts = items;
        let width = self.defaults.len();
        let n = facts.len();
        let mut lates = vec![0u64; n];
        let mut row = vec![0f64; width];
        let mut failure: Option<PyErr> = None;
        // Rows go straight into the output bytes (no intermediate array of n * width floats).
        let vb = PyBytes::new_with(py, n * width * 8, |buf| {
            for (i, item) in facts.iter().enumerate() {
                let done = if from_events {
                    View::from_event(&item, &self.hash_fields, &self.attr_tests)
                } else {
                    item.downcast::<PyTuple>()
                        .map_err(PyErr::from)
                        .and_then(|tuple| {
                            View::from_facts(tuple, &self.hash_fields, &self.attr_tests)
                        })
                }
                .and_then(|view| self.process_into(&view, &mut row));
                match done {
                    Ok(late) => lates[i] = late,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                let out = &mut buf[i * width * 8..(i + 1) * width * 8];
                for (chunk, v) in out.chunks_exact_mut(8).zip(&row) {
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
            }
            Ok(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let lb = PyBytes::new_with(py, n * 8, |buf| {
            for (chunk, v) in buf.chunks_exact_mut(8).zip(&lates) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            Ok(())
        })?;
        Ok((vb, lb))
    }

    fn process_into(&mut self, view: &View<'_>, row: &mut [f64]) -> PyResult<u64> {
        let ev = &view.ev;
        let t = ev.t;
        if t > self.max_seen {
            self.max_seen = t;
            if t >= self.next_housekeeping {
                self.advance_to(t - self.ooo_ms);
                self.next_housekeeping = t + self.housekeeping_ms;
            }
        }
        row.copy_from_slice(&self.defaults);
        event_block(view, &mut row[..N_TYPES + 8])?;
        let mut late_mask = 0u64;
        let Some(route) = self.routes.get(ev.ty) else {
            return Ok(0);
        };
        for &(kind, field) in route {
            let id = view.text(field)?;
            if id.is_empty() {
                continue;
            }
            let plan = self.plans[kind as usize]
                .as_ref()
                .expect("route checked at build");
            self.key_buf.clear();
            self.key_buf.push(kind);
            self.key_buf.extend_from_slice(id.as_bytes());
            let st = match self.states.get_mut(self.key_buf.as_slice()) {
                Some(st) => st,
                None => {
                    self.states
                        .insert(self.key_buf.clone().into_boxed_slice(), State::new(plan));
                    self.max_keys = self.max_keys.max(self.states.len());
                    self.states
                        .get_mut(self.key_buf.as_slice())
                        .expect("just inserted")
                }
            };
            if st.apply(plan, ev) {
                late_mask |= 1 << kind;
                self.late_partials += 1;
            }
            if self.tracking && !self.dirty.contains(self.key_buf.as_slice()) {
                self.dirty.insert(self.key_buf.clone().into_boxed_slice());
            }
            let e = st.expiry_ms(plan);
            if e < self.min_expiry {
                self.min_expiry = e;
            }
            let off = self.offsets[kind as usize];
            st.values(plan, &mut row[off..off + plan.n_out()]);
        }
        Ok(late_mask)
    }
}

/// The event-level block (``assemble.event_features``).
fn event_block(view: &View<'_>, out: &mut [f64]) -> PyResult<()> {
    let ev = &view.ev;
    out.fill(0.0);
    if (1..=N_TYPES).contains(&ev.ty) {
        out[ev.ty - 1] = 1.0;
    }
    let t = ev.t;
    let created = ev.nums[F_ACCOUNT_CREATED];
    out[N_TYPES] = t.div_euclid(HOUR_MS).rem_euclid(24) as f64;
    if created > 0 {
        out[N_TYPES + 1] = if t > created {
            (t - created) as f64 / HOUR_MS as f64
        } else {
            0.0
        };
        out[N_TYPES + 2] = 1.0;
    } else {
        out[N_TYPES + 1] = -1.0;
    }
    for k in 0..4 {
        out[N_TYPES + 3 + k] = ev.nums[F_PLAY + k] as f64;
    }
    out[N_TYPES + 7] = if view.text(F_CONTENT_HASH)?.is_empty() {
        0.0
    } else {
        1.0
    };
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CorePlan>()?;
    m.add_class::<PyKeyState>()?;
    m.add_class::<Batch>()?;
    m.add_function(wrap_pyfunction!(encode_state, m)?)?;
    m.add_function(wrap_pyfunction!(decode_state, m)?)?;
    m.add_function(wrap_pyfunction!(item_hash, m)?)?;
    m.add("LAYOUT_VERSION", codec::LAYOUT_V2)?;
    m.add("NO_TIME", NO_TIME)?;
    m.add("N_FACTS", N_FACTS)?;
    m.add("MAX_ATTR_TESTS", MAX_ATTR_TESTS)?;
    m.add("F_ACCOUNT_AGE_S", F_ACCOUNT_AGE_S)?;
    Ok(())
}
