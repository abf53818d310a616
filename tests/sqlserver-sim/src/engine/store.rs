//! Row storage and transactions.
//!
//! Committed data is a persistent (structurally shared) map per table, so taking a snapshot
//! of all tables is one `Arc` clone and a scan streams from its snapshot without holding any
//! lock. A transaction keeps its writes in a private overlay (invisible to other sessions)
//! plus exclusive key locks; commit applies the overlay to a new committed version under the
//! global commit lock.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{Bound as RangeBound, RangeBounds};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::hooks::Row;
use super::value::{compare_total, err};
use crate::api::SqlError;
use crate::types::Value;

/// A key of the storage order or of a unique index: values compared with SQL semantics
/// (NULL first, CI_AS strings). A shorter key sorts before longer keys it prefixes.
#[derive(Debug, Clone)]
pub struct Key(pub Arc<[Value]>);

impl Key {
    pub fn new(values: Vec<Value>) -> Key {
        Key(Arc::from(values))
    }
    pub fn from_row(row: &[Value], columns: &[usize]) -> Key {
        Key(columns.iter().map(|&c| row[c].clone()).collect())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            let o = compare_total(a, b);
            if o != Ordering::Equal {
                return o;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}
impl std::hash::Hash for Key {
    /// Consistent with the SQL equality of `Ord`: strings hash case-insensitively without
    /// trailing spaces, numbers by value.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
        for v in self.0.iter() {
            match v {
                Value::Null => 0u8.hash(state),
                Value::String(s) => {
                    for c in s
                        .trim_end_matches(' ')
                        .chars()
                        .flat_map(|c| c.to_lowercase())
                    {
                        c.hash(state);
                    }
                }
                Value::Binary(b) => b.hash(state),
                Value::Guid(g) => g.hash(state),
                other => match super::value::to_num(other) {
                    Some(super::value::Num::Int(i)) => i.hash(state),
                    Some(n) => super::value::num_to_f64(n).to_bits().hash(state),
                    None => super::value::datetime_parts(other)
                        .map(|(d, t, _)| (d, t))
                        .hash(state),
                },
            }
        }
    }
}

/// A committed row and the commit sequence number that wrote it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub row: Row,
    pub seq: u64,
}

/// Committed data of one table.
#[derive(Debug, Clone, Default)]
pub struct TableData {
    pub rows: imbl::OrdMap<Key, StoredRow>,
    /// Unique indexes: index_id → (unique key → storage key).
    pub uniques: imbl::HashMap<i32, imbl::OrdMap<Key, Key>>,
}

/// All committed data at one commit sequence number.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub tables: imbl::HashMap<i32, TableData>,
}

impl Snapshot {
    pub fn table(&self, object_id: i32) -> Option<&TableData> {
        self.tables.get(&object_id)
    }
}

/// A transaction's private writes to one table.
#[derive(Debug, Default)]
pub struct TableWrites {
    /// Storage key → new row (None = deleted).
    pub rows: BTreeMap<Key, Option<Row>>,
    /// index_id → unique key → storage key (None = the key was removed).
    pub uniques: HashMap<i32, BTreeMap<Key, Option<Key>>>,
    /// TRUNCATE: the committed rows are all gone.
    pub truncated: bool,
}

/// Lock resource: (object_id, index_id, key). index_id 0 = storage key (row lock).
pub type LockKey = (i32, i32, Key);

/// A SERIALIZABLE reader's shared lock on a range of a table's storage keys.
struct RangeLock {
    txn: u64,
    lo: RangeBound<Key>,
    hi: RangeBound<Key>,
}

impl RangeLock {
    fn contains(&self, key: &Key) -> bool {
        (self.lo.as_ref(), self.hi.as_ref()).contains(key)
    }
}

#[derive(Default)]
struct LockState {
    /// Exclusive (X) locks: resource → owner.
    owners: HashMap<LockKey, u64>,
    /// Shared (S) locks of REPEATABLE READ / SERIALIZABLE readers: resource → holders.
    shared: HashMap<LockKey, Vec<u64>>,
    /// Shared locks per transaction (readers hold no `&mut` of their transaction, so the
    /// manager remembers them; `release_all` drops them).
    shared_by_txn: HashMap<u64, Vec<LockKey>>,
    /// SERIALIZABLE key-range locks per table, and the tables each transaction has them on.
    ranges: HashMap<i32, Vec<RangeLock>>,
    ranges_by_txn: HashMap<u64, Vec<i32>>,
    waits_for: HashMap<u64, u64>,
    /// Locks held per table (lets readers skip per-row checks on unlocked tables).
    per_table: HashMap<i32, usize>,
}

impl LockState {
    /// Another transaction whose lock conflicts with `txn` taking `key` in the given mode.
    fn blocker(&self, txn: u64, key: &LockKey, exclusive: bool) -> Option<u64> {
        if let Some(&owner) = self.owners.get(key) {
            if owner != txn {
                return Some(owner);
            }
        }
        if !exclusive {
            return None;
        }
        if !self.shared.is_empty() {
            if let Some(t) = self
                .shared
                .get(key)
                .and_then(|holders| holders.iter().copied().find(|&t| t != txn))
            {
                return Some(t);
            }
        }
        if key.1 == 0 && !self.ranges.is_empty() {
            if let Some(r) = self
                .ranges
                .get(&key.0)
                .and_then(|rs| rs.iter().find(|r| r.txn != txn && r.contains(&key.2)))
            {
                return Some(r.txn);
            }
        }
        None
    }

    /// Another transaction's exclusive row lock inside `[lo, ∞)` of a table.
    fn range_blocker(&self, txn: u64, object_id: i32, lo: &RangeBound<Key>) -> Option<u64> {
        if !self.per_table.contains_key(&object_id) {
            return None;
        }
        self.owners
            .iter()
            .find(|((o, ix, k), t)| {
                *o == object_id
                    && *ix == 0
                    && **t != txn
                    && (lo.as_ref(), RangeBound::Unbounded).contains(k)
            })
            .map(|(_, &t)| t)
    }

    fn deadlocked(&self, txn: u64, blocker: u64) -> bool {
        let mut cur = blocker;
        let mut seen = HashSet::new();
        while let Some(&next) = self.waits_for.get(&cur) {
            if next == txn {
                return true;
            }
            if !seen.insert(next) {
                break;
            }
            cur = next;
        }
        false
    }
}

fn deadlock_victim(txn: u64) -> SqlError {
    SqlError::new(
        1205,
        13,
        51,
        format!("Transaction (Process ID {txn}) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction."),
    )
}

/// Key locks held until commit/rollback — exclusive for writers, shared for REPEATABLE READ
/// and SERIALIZABLE readers — with LOCK_TIMEOUT (1222) and deadlock detection (1205).
#[derive(Default)]
pub struct LockManager {
    state: Mutex<LockState>,
    released: Condvar,
}

impl LockManager {
    /// Takes `key` in the given mode for `txn`, waiting while another transaction's lock
    /// conflicts (1205 on a wait cycle, 1222 after LOCK_TIMEOUT). `held` says whether `txn`
    /// already has it (then nothing is taken: `Ok(None)`); `take` records the grant.
    /// Returns whether it had to wait. One state lock in the uncontended case.
    #[allow(clippy::too_many_arguments)]
    fn lock_key(
        &self,
        txn: u64,
        key: &LockKey,
        exclusive: bool,
        timeout_ms: i64,
        cancelled: &dyn Fn() -> bool,
        held: impl Fn(&LockState) -> bool,
        take: impl FnOnce(&mut LockState),
    ) -> Result<Option<bool>, SqlError> {
        self.lock_when(
            txn,
            timeout_ms,
            cancelled,
            held,
            |st| st.blocker(txn, key, exclusive),
            take,
        )
    }

    /// The wait loop of every lock request: `blocker` names a conflicting transaction.
    fn lock_when(
        &self,
        txn: u64,
        timeout_ms: i64,
        cancelled: &dyn Fn() -> bool,
        held: impl Fn(&LockState) -> bool,
        blocker: impl Fn(&LockState) -> Option<u64>,
        take: impl FnOnce(&mut LockState),
    ) -> Result<Option<bool>, SqlError> {
        let mut st = self.state.lock();
        if held(&st) {
            return Ok(None);
        }
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut waited = false;
        loop {
            let Some(owner) = blocker(&st) else {
                if waited {
                    st.waits_for.remove(&txn);
                }
                take(&mut st);
                return Ok(Some(waited));
            };
            if st.deadlocked(txn, owner) {
                st.waits_for.remove(&txn);
                return Err(deadlock_victim(txn));
            }
            if timeout_ms == 0 || deadline.is_some_and(|d| Instant::now() >= d) || cancelled() {
                st.waits_for.remove(&txn);
                return Err(err(1222, "Lock request time out period exceeded."));
            }
            waited = true;
            st.waits_for.insert(txn, owner);
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200));
            self.released
                .wait_for(&mut st, wait.min(Duration::from_millis(200)));
        }
    }

    /// Takes the exclusive lock for `txn`. Returns true when newly taken (false: already
    /// held). `timeout_ms < 0` waits forever (unless a deadlock is found: error 1205).
    pub fn acquire(
        &self,
        txn: u64,
        key: &LockKey,
        timeout_ms: i64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<bool, SqlError> {
        let taken = self.lock_key(
            txn,
            key,
            true,
            timeout_ms,
            cancelled,
            |st| st.owners.get(key) == Some(&txn),
            |st| {
                st.owners.insert(key.clone(), txn);
                *st.per_table.entry(key.0).or_default() += 1;
            },
        )?;
        Ok(taken.is_some())
    }

    /// Takes a shared lock held to the end of the transaction (REPEATABLE READ row locks,
    /// SERIALIZABLE range locks). Returns whether it had to wait for a writer.
    pub fn acquire_shared(
        &self,
        txn: u64,
        key: &LockKey,
        timeout_ms: i64,
    ) -> Result<bool, SqlError> {
        let waited = self.lock_key(
            txn,
            key,
            false,
            timeout_ms,
            &|| false,
            |st| {
                st.owners.get(key) == Some(&txn)
                    || st.shared.get(key).is_some_and(|h| h.contains(&txn))
            },
            |st| {
                st.shared.entry(key.clone()).or_default().push(txn);
                st.shared_by_txn.entry(txn).or_default().push(key.clone());
            },
        )?;
        Ok(waited.unwrap_or(false))
    }

    /// SERIALIZABLE: a shared lock on the storage keys from `lo` up, held to the end of the
    /// transaction; waits while another transaction has written a key in it. The scan then
    /// narrows it with [`LockManager::end_range`]. Returns whether it had to wait.
    pub fn acquire_range(
        &self,
        txn: u64,
        object_id: i32,
        lo: RangeBound<Key>,
        timeout_ms: i64,
    ) -> Result<bool, SqlError> {
        let waited = self.lock_when(
            txn,
            timeout_ms,
            &|| false,
            |_| false,
            |st| st.range_blocker(txn, object_id, &lo),
            |st| {
                st.ranges.entry(object_id).or_default().push(RangeLock {
                    txn,
                    lo: lo.clone(),
                    hi: RangeBound::Unbounded,
                });
                st.ranges_by_txn.entry(txn).or_default().push(object_id);
            },
        )?;
        Ok(waited.unwrap_or(false))
    }

    /// Ends the range `txn` took last on the table at `hi` (the last key its scan read, the
    /// "next key" SQL Server locks too), releasing writers beyond it.
    pub fn end_range(&self, txn: u64, object_id: i32, hi: Key) {
        let mut st = self.state.lock();
        if let Some(r) = st
            .ranges
            .get_mut(&object_id)
            .and_then(|rs| rs.iter_mut().rev().find(|r| r.txn == txn))
        {
            r.hi = RangeBound::Included(hi);
        }
        drop(st);
        self.released.notify_all();
    }

    /// Releases the exclusive locks `keys` and every shared lock of `txn`.
    pub fn release_all(&self, txn: u64, keys: &[LockKey]) {
        let mut st = self.state.lock();
        if keys.is_empty() && st.shared_by_txn.is_empty() && st.ranges_by_txn.is_empty() {
            return;
        }
        for k in keys {
            if st.owners.get(k) == Some(&txn) {
                st.owners.remove(k);
                if let Some(n) = st.per_table.get_mut(&k.0) {
                    *n -= 1;
                    if *n == 0 {
                        st.per_table.remove(&k.0);
                    }
                }
            }
        }
        for object_id in st.ranges_by_txn.remove(&txn).unwrap_or_default() {
            if let Some(rs) = st.ranges.get_mut(&object_id) {
                rs.retain(|r| r.txn != txn);
                if rs.is_empty() {
                    st.ranges.remove(&object_id);
                }
            }
        }
        for k in st.shared_by_txn.remove(&txn).unwrap_or_default() {
            if let Some(holders) = st.shared.get_mut(&k) {
                holders.retain(|&t| t != txn);
                if holders.is_empty() {
                    st.shared.remove(&k);
                }
            }
        }
        st.waits_for.remove(&txn);
        drop(st);
        self.released.notify_all();
    }

    /// Whether any transaction holds a lock on the table (cheap pre-check for readers).
    pub fn table_has_locks(&self, object_id: i32) -> bool {
        self.state.lock().per_table.contains_key(&object_id)
    }

    /// Locking READ COMMITTED: waits until no other transaction holds the row's lock (the
    /// reader takes no lock itself). Returns true if it had to wait.
    pub fn wait_until_unlocked(
        &self,
        txn: u64,
        key: &LockKey,
        timeout_ms: i64,
    ) -> Result<bool, SqlError> {
        let waited = self.lock_key(txn, key, false, timeout_ms, &|| false, |_| false, |_| {})?;
        Ok(waited.unwrap_or(false))
    }

    /// Whether some transaction other than `txn` holds a lock on the table.
    pub fn table_locked_by_other(&self, object_id: i32, txn: u64) -> bool {
        let st = self.state.lock();
        st.owners
            .iter()
            .any(|((o, _, _), t)| *o == object_id && *t != txn)
            || st
                .shared
                .iter()
                .any(|((o, _, _), h)| *o == object_id && h.iter().any(|&t| t != txn))
            || st
                .ranges
                .get(&object_id)
                .is_some_and(|rs| rs.iter().any(|r| r.txn != txn))
    }
}

/// Committed data plus the commit sequence.
#[derive(Default)]
pub struct Store {
    committed: RwLock<Snapshot>,
    pub locks: LockManager,
    /// Serialises commits (and DDL that rewrites data).
    pub commit_lock: Mutex<()>,
}

impl Store {
    /// The latest committed snapshot (cheap: structural sharing).
    pub fn snapshot(&self) -> Snapshot {
        self.committed.read().clone()
    }

    /// Applies `f` to a copy of the committed state and installs it with a new sequence
    /// number. Caller holds `commit_lock`.
    pub fn install(&self, f: impl FnOnce(&mut Snapshot, u64)) -> u64 {
        let mut snap = self.committed.read().clone();
        let seq = snap.seq + 1;
        f(&mut snap, seq);
        snap.seq = seq;
        *self.committed.write() = snap;
        seq
    }

    pub fn latest_row(&self, object_id: i32, key: &Key) -> Option<StoredRow> {
        self.committed
            .read()
            .tables
            .get(&object_id)
            .and_then(|t| t.rows.get(key).cloned())
    }

    pub fn latest_unique(&self, object_id: i32, index_id: i32, key: &Key) -> Option<Key> {
        self.committed
            .read()
            .tables
            .get(&object_id)
            .and_then(|t| t.uniques.get(&index_id))
            .and_then(|u| u.get(key).cloned())
    }
}

/// Applies a transaction's writes to one table's committed data.
pub fn apply_writes(data: &mut TableData, writes: &TableWrites, seq: u64) {
    if writes.truncated {
        data.rows = imbl::OrdMap::new();
        for (_, u) in data.uniques.iter_mut() {
            *u = imbl::OrdMap::new();
        }
    }
    for (k, v) in &writes.rows {
        match v {
            Some(row) => {
                data.rows.insert(
                    k.clone(),
                    StoredRow {
                        row: row.clone(),
                        seq,
                    },
                );
            }
            None => {
                data.rows.remove(k);
            }
        }
    }
    for (idx, changes) in &writes.uniques {
        let mut u = data.uniques.get(idx).cloned().unwrap_or_default();
        for (k, v) in changes {
            match v {
                Some(sk) => {
                    u.insert(k.clone(), sk.clone());
                }
                None => {
                    u.remove(k);
                }
            }
        }
        data.uniques.insert(*idx, u);
    }
}

/// Iterates a table in key order: committed rows from `base` merged with a transaction's
/// overlay (if any). Yields (key, row).
pub struct MergedScan<'a> {
    base: Option<Box<dyn Iterator<Item = (&'a Key, &'a StoredRow)> + 'a>>,
    overlay: Option<std::collections::btree_map::Range<'a, Key, Option<Row>>>,
    base_next: Option<(&'a Key, &'a StoredRow)>,
    over_next: Option<(&'a Key, &'a Option<Row>)>,
    started: bool,
}

impl<'a> MergedScan<'a> {
    pub fn new(
        base: Option<&'a TableData>,
        overlay: Option<&'a TableWrites>,
        from: std::ops::Bound<Key>,
    ) -> MergedScan<'a> {
        let truncated = overlay.is_some_and(|o| o.truncated);
        let base: Option<Box<dyn Iterator<Item = (&'a Key, &'a StoredRow)> + 'a>> = if truncated {
            None
        } else {
            base.map(|b| {
                Box::new(b.rows.range((from.clone(), std::ops::Bound::Unbounded)))
                    as Box<dyn Iterator<Item = (&'a Key, &'a StoredRow)> + 'a>
            })
        };
        let overlay = overlay.map(|o| o.rows.range((from, std::ops::Bound::Unbounded)));
        MergedScan {
            base,
            overlay,
            base_next: None,
            over_next: None,
            started: false,
        }
    }
}

impl<'a> Iterator for MergedScan<'a> {
    type Item = (&'a Key, &'a Row);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            self.base_next = self.base.as_mut().and_then(|i| i.next());
            self.over_next = self.overlay.as_mut().and_then(|i| i.next());
        }
        loop {
            match (self.base_next, self.over_next) {
                (None, None) => return None,
                (Some((k, r)), None) => {
                    self.base_next = self.base.as_mut().and_then(|i| i.next());
                    return Some((k, &r.row));
                }
                (None, Some((k, o))) => {
                    self.over_next = self.overlay.as_mut().and_then(|i| i.next());
                    if let Some(row) = o {
                        return Some((k, row));
                    }
                }
                (Some((bk, br)), Some((ok, o))) => match bk.cmp(ok) {
                    Ordering::Less => {
                        self.base_next = self.base.as_mut().and_then(|i| i.next());
                        return Some((bk, &br.row));
                    }
                    Ordering::Equal => {
                        self.base_next = self.base.as_mut().and_then(|i| i.next());
                        self.over_next = self.overlay.as_mut().and_then(|i| i.next());
                        if let Some(row) = o {
                            return Some((ok, row));
                        }
                    }
                    Ordering::Greater => {
                        self.over_next = self.overlay.as_mut().and_then(|i| i.next());
                        if let Some(row) = o {
                            return Some((ok, row));
                        }
                    }
                },
            }
        }
    }
}
