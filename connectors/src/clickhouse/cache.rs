//! The current rows the sink has written, for the API's point lookups
//! (docs/api.md "Serving from the sink").
//!
//! Where the API runs in the pipeline's process, each sink driver applies
//! every batch ClickHouse acknowledged to a [`RowCache`] of the point-lookup
//! tables ([`RowCache::TABLES`]), so a lookup of a key this process writes
//! is a hash-map read instead of a query that aggregates the key's stored
//! versions. A hit is the row ClickHouse's `*_current` view returns: the
//! sink is the only writer, every key has one owning worker (and process)
//! that writes all its changes in order, and a batch reaches the cache only
//! after ClickHouse acknowledged it. A miss says nothing — the key may be
//! another process's, a closed subject's final row that this run never
//! rewrote, or not written yet since the start — so misses are answered by
//! ClickHouse, as everything is for `revpulse api` alone.

use std::collections::HashMap;
use std::sync::RwLock;

use revpulse_pipelines::row::{RowKey, RowVals, Table};

/// Shards of the map, so that readers and the writers of other keys
/// rarely meet on one lock.
const SHARDS: usize = 16;

/// Current rows of the point-lookup tables, as the sink last wrote them.
pub struct RowCache {
    shards: Vec<RwLock<HashMap<RowKey, RowVals>>>,
}

impl Default for RowCache {
    fn default() -> Self {
        RowCache { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect() }
    }
}

impl RowCache {
    /// The tables whose rows the cache keeps: those the API reads one key
    /// of at a time.
    pub const TABLES: [Table; 3] = [Table::LeadScores, Table::ConversationRpm, Table::DealHealth];

    fn shard(&self, key: &RowKey) -> &RwLock<HashMap<RowKey, RowVals>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// Applies rows ClickHouse acknowledged (`None`: the key was deleted).
    pub fn apply(&self, rows: &[(RowKey, Option<RowVals>)]) {
        for (key, vals) in rows.iter().filter(|(k, _)| RowCache::TABLES.contains(&k.table)) {
            // A poisoned lock only means a panic elsewhere mid-insert; the
            // map itself is still a map.
            let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            match vals {
                Some(v) => shard.insert(key.clone(), v.clone()),
                None => shard.remove(key),
            };
        }
    }

    /// Forgets the keys of rows whose write failed part way.
    pub fn forget(&self, rows: &[(RowKey, Option<RowVals>)]) {
        for (key, _) in rows.iter().filter(|(k, _)| RowCache::TABLES.contains(&k.table)) {
            self.shard(key).write().unwrap_or_else(|e| e.into_inner()).remove(key);
        }
    }

    /// The row of `key` if this process wrote it last.
    pub fn get(&self, key: &RowKey) -> Option<RowVals> {
        self.shard(key).read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use revpulse_pipelines::row::{s, Cell};

    use super::*;

    #[test]
    fn keeps_the_point_lookup_tables_as_written() {
        let cache = RowCache::default();
        let lead = RowKey::new(Table::LeadScores, vec![s("t"), s("a")]);
        let offer = RowKey::new(Table::OfferAcceptance, vec![s("t"), s("o")]);
        let v = vec![Cell::f64(1.0)];
        cache.apply(&[(lead.clone(), Some(v.clone())), (offer.clone(), Some(v.clone()))]);
        assert_eq!(cache.get(&lead), Some(v));
        assert_eq!(cache.get(&offer), None, "not a point-lookup table");
        cache.apply(&[(lead.clone(), None)]);
        assert_eq!(cache.get(&lead), None);
        assert!(cache.is_empty());
    }
}
