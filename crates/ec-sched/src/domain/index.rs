//! The index of the domain table by name.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use ec_types::Domain;
use hashbrown::HashTable;

use super::{DomainEntry, DomainIndex};

/// The domain table's index by name.
///
/// It stores positions in the table and compares a name with the record
/// there, so each name is stored once and a lookup reads the record it
/// returns rather than a second copy of the name. Names come from
/// submitted mail, so they are hashed with std's SipHash under a
/// per-process random key: with a fixed hash function a sender could pick
/// names that all collide.
pub(crate) struct DomainIndexTable {
    table: HashTable<DomainIndex>,
    hasher: RandomState,
}

impl DomainIndexTable {
    pub(crate) fn new() -> Self {
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// Returns the position of `name` in `domains`.
    pub(crate) fn find(&self, domains: &[DomainEntry], name: &Domain) -> Option<DomainIndex> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |index| domains[index.0 as usize].record.name == *name)
            .copied()
    }

    /// Adds the entry at `index` of `domains`, whose name is not in the
    /// table yet.
    pub(crate) fn insert(&mut self, domains: &[DomainEntry], index: DomainIndex) {
        let hasher = &self.hasher;
        let hash_of = |index: &DomainIndex| hasher.hash_one(&domains[index.0 as usize].record.name);
        self.table.insert_unique(hash_of(&index), index, hash_of);
    }
}

impl fmt::Debug for DomainIndexTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainIndexTable")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use ec_types::{DomainRecord, Route};

    use super::*;

    fn entries(count: u32) -> Vec<DomainEntry> {
        (0..count)
            .map(|index| {
                let name = Domain::new(&format!("d{index}.example")).expect("valid domain");
                DomainEntry::new(DomainRecord::new(name, Route::Mx), DomainIndex(index))
            })
            .collect()
    }

    #[test]
    fn index_finds_every_domain() {
        let domains = entries(5_000);
        let mut table = DomainIndexTable::new();
        for index in 0..5_000 {
            table.insert(&domains, DomainIndex(index));
        }

        for index in [0, 1, 2_500, 4_999] {
            let name = Domain::new(&format!("d{index}.example")).expect("valid domain");
            assert_eq!(table.find(&domains, &name), Some(DomainIndex(index)));
        }
        let unknown = Domain::new("d5000.example").expect("valid domain");
        assert_eq!(table.find(&domains, &unknown), None);
    }
}
