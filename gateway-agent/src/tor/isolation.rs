//! Isolation keys to arti isolation tokens: one token per key, so streams with different keys
//! never share a circuit, and streams with the same key may.

use std::collections::HashMap;

use arti_client::IsolationToken;

use crate::egress::Isolation;

/// Keys tracked at most. Past it the least recently used key is forgotten: its next stream
/// gets a fresh token, which only isolates more, never less.
pub const MAX_ISOLATION_GROUPS: usize = 4096;

/// A bounded map from isolation key to token, with a group number per token for logs.
#[derive(Debug)]
pub struct IsolationGroups {
    map: HashMap<Isolation, Entry>,
    capacity: usize,
    clock: u64,
    created: u64,
}

#[derive(Debug)]
struct Entry {
    token: IsolationToken,
    group: u64,
    last_used: u64,
}

impl IsolationGroups {
    /// An empty map holding at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        IsolationGroups {
            map: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
            created: 0,
        }
    }

    /// The token and group number for `key`, made on first use.
    pub fn get(&mut self, key: &Isolation) -> (IsolationToken, u64) {
        self.clock += 1;
        let now = self.clock;
        if let Some(entry) = self.map.get_mut(key) {
            entry.last_used = now;
            return (entry.token, entry.group);
        }
        if self.map.len() >= self.capacity {
            // O(n) at the cap only; the cap is small and new keys are rare next to streams.
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.created += 1;
        let entry = Entry {
            token: IsolationToken::new(),
            group: self.created,
            last_used: now,
        };
        let result = (entry.token, entry.group);
        self.map.insert(key.clone(), entry);
        result
    }

    /// Whether `key` has a group now.
    pub fn contains(&self, key: &Isolation) -> bool {
        self.map.contains_key(key)
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Groups created since start.
    pub fn created(&self) -> u64 {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Isolation {
        Isolation(text.to_owned())
    }

    #[test]
    fn same_key_same_token_different_keys_different_tokens() {
        let mut groups = IsolationGroups::new(8);
        let a = groups.get(&key("client:198.51.100.10"));
        let b = groups.get(&key("client:198.51.100.11"));
        assert_eq!(groups.get(&key("client:198.51.100.10")), a);
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.created(), 2);
    }

    #[test]
    fn bounded_and_forgets_the_least_recently_used() {
        let mut groups = IsolationGroups::new(2);
        let a = groups.get(&key("a"));
        groups.get(&key("b"));
        groups.get(&key("a"));
        groups.get(&key("c"));
        assert_eq!(groups.len(), 2);
        assert!(groups.contains(&key("a")));
        assert!(!groups.contains(&key("b")));
        assert_eq!(groups.get(&key("a")), a);
        let b_again = groups.get(&key("b"));
        assert_eq!(b_again.1, 4, "a forgotten key gets a fresh group");
    }
}
