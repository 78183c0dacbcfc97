//! Which objects the cache holds, how big they are and which was used last: the size bound and
//! LRU eviction, with no I/O. The store deletes the files of what this evicts.

use std::collections::{BTreeMap, HashMap};

/// One stored object as the index sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot<M> {
    /// Body bytes on disk.
    pub size: u64,
    /// What the store keeps about it (metadata, body file name).
    pub meta: M,
    /// When it was last used, as a tick of this index.
    tick: u64,
}

/// Objects by key, with a total size bound.
#[derive(Debug)]
pub(crate) struct Index<M> {
    slots: HashMap<String, Slot<M>>,
    /// Tick of last use → key: the first entry is the least recently used.
    by_use: BTreeMap<u64, String>,
    next_tick: u64,
    total: u64,
    bound: u64,
}

impl<M: Clone> Index<M> {
    /// An empty index holding at most `bound` bytes.
    pub fn new(bound: u64) -> Self {
        Index {
            slots: HashMap::new(),
            by_use: BTreeMap::new(),
            next_tick: 0,
            total: 0,
            bound,
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// The object under `key`, marked as used now.
    pub fn get(&mut self, key: &str) -> Option<Slot<M>> {
        let tick = self.tick();
        let slot = self.slots.get_mut(key)?;
        self.by_use.remove(&slot.tick);
        slot.tick = tick;
        self.by_use.insert(tick, key.to_owned());
        Some(slot.clone())
    }

    /// Replaces the metadata of `key` without counting a use (a 304 refresh).
    pub fn update_meta(&mut self, key: &str, meta: M) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) => {
                slot.meta = meta;
                true
            }
            None => false,
        }
    }

    /// Adds (or replaces) `key` as the most recently used object. Returns what had to go to
    /// stay within the bound: the replaced object and least recently used ones. An object
    /// bigger than the bound is not added and comes back as the only eviction.
    pub fn insert(&mut self, key: &str, size: u64, meta: M) -> Vec<(String, Slot<M>)> {
        let mut gone = Vec::new();
        if let Some(old) = self.remove(key) {
            gone.push((key.to_owned(), old));
        }
        if size > self.bound {
            let tick = self.tick();
            gone.push((key.to_owned(), Slot { size, meta, tick }));
            return gone;
        }
        while self.total + size > self.bound {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.total -= slot.size;
                gone.push((oldest, slot));
            }
        }
        let tick = self.tick();
        self.by_use.insert(tick, key.to_owned());
        self.slots.insert(key.to_owned(), Slot { size, meta, tick });
        self.total += size;
        gone
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<Slot<M>> {
        let slot = self.slots.remove(key)?;
        self.by_use.remove(&slot.tick);
        self.total -= slot.size;
        Some(slot)
    }

    /// Every object, in no order.
    pub fn entries(&self) -> impl Iterator<Item = &Slot<M>> {
        self.slots.values()
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bound in bytes.
    pub fn bound(&self) -> u64 {
        self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(gone: &[(String, Slot<()>)]) -> Vec<&str> {
        gone.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let mut index = Index::new(100);
        assert!(index.insert("a", 40, ()).is_empty());
        assert!(index.insert("b", 40, ()).is_empty());
        // Using `a` makes `b` the oldest.
        assert!(index.get("a").is_some());
        assert_eq!(keys(&index.insert("c", 40, ())), ["b"]);
        assert_eq!(index.total(), 80);
        assert_eq!(index.len(), 2);
        assert!(index.get("b").is_none());
        // Two have to go for a big one.
        assert_eq!(keys(&index.insert("d", 90, ())), ["a", "c"]);
        assert_eq!(index.total(), 90);
    }

    #[test]
    fn replacing_counts_once() {
        let mut index = Index::new(100);
        index.insert("a", 60, ());
        assert_eq!(keys(&index.insert("a", 70, ())), ["a"]);
        assert_eq!(index.total(), 70);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn too_big_is_not_kept() {
        let mut index = Index::new(100);
        index.insert("a", 10, ());
        assert_eq!(keys(&index.insert("huge", 101, ())), ["huge"]);
        assert_eq!(index.total(), 10);
        assert!(index.get("huge").is_none());
        assert!(index.remove("a").is_some());
        assert_eq!(index.total(), 0);
    }
}
