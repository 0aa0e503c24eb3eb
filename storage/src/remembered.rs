//! What this replica remembers of an upload session between its appends, so the next append
//! through it can skip work (reading the record, reading the last chunk back, hashing the file
//! again). Always a cache: what is not here is read or computed again, so forgetting one (the
//! bound, a restart, another replica taking the appends) costs time, never correctness; each
//! user decides, when it takes an entry, whether the entry still holds.

use crate::model::ObjectId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Up to `capacity` values, one per session.
#[derive(Debug)]
pub struct Remembered<V> {
    capacity: usize,
    entries: Mutex<HashMap<ObjectId, V>>,
}

impl<V> Remembered<V> {
    /// Remembers at most `capacity` sessions' values.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
        }
    }

    /// Takes session `id`'s value out: whoever uses it remembers what comes next.
    pub fn take(&self, id: ObjectId) -> Option<V> {
        self.lock().remove(&id)
    }

    /// Whether session `id`'s value is there and passes `test` (left in place).
    pub fn holds(&self, id: ObjectId, test: impl FnOnce(&V) -> bool) -> bool {
        self.lock().get(&id).is_some_and(test)
    }

    /// Remembers `value` for session `id`, forgetting another session's when full.
    pub fn put(&self, id: ObjectId, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity
            && !entries.contains_key(&id)
            && let Some(forgotten) = entries.keys().next().copied()
        {
            entries.remove(&forgotten);
        }
        entries.insert(id, value);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectId, V>> {
        // A panic elsewhere leaves a map that is still a valid cache.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_taken_once_and_the_bound_forgets_another_sessions() {
        let remembered = Remembered::with_capacity(2);
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        remembered.put(a, 1);
        remembered.put(a, 2);
        assert_eq!(remembered.take(a), Some(2), "the latest value");
        assert_eq!(remembered.take(a), None, "taken once");
        remembered.put(a, 1);
        remembered.put(b, 2);
        remembered.put(c, 3);
        let kept = [a, b, c]
            .into_iter()
            .filter_map(|id| remembered.take(id))
            .count();
        assert_eq!(kept, 2, "one of three was forgotten");
    }
}
