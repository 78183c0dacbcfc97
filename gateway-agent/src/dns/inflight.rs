//! Identical questions asked while one is already on its way upstream wait for that answer
//! instead of asking again. Over Tor a lookup takes a circuit round trip, and a LAN tends to ask
//! the same name from many hosts at once (a new release, a login page): one lookup serves all.
//!
//! The first asker leads; later ones follow and get a copy of the leader's result. If the
//! leader goes away without an answer (its client hung up and the request was dropped), the
//! followers are told so and ask for themselves: nobody waits on a lookup nobody makes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::watch;

/// The questions on their way upstream now.
pub(crate) struct InFlight<K, V> {
    map: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

/// Whether the caller asks upstream itself or waits for someone who does.
pub(crate) enum Turn<'a, K: Hash + Eq, V> {
    /// Ask, then hand the result to [`Leader::finish`].
    Lead(Leader<'a, K, V>),
    /// Wait with [`follow`].
    Follow(watch::Receiver<Option<V>>),
}

/// The one asker of a question; dropping it without [`Leader::finish`] releases the followers.
pub(crate) struct Leader<'a, K: Hash + Eq, V> {
    owner: &'a InFlight<K, V>,
    key: Option<K>,
    tx: watch::Sender<Option<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> InFlight<K, V> {
    /// Nothing in flight.
    pub fn new() -> Self {
        InFlight {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Lead `key` if nobody does, else follow the leader.
    pub fn turn(&self, key: &K) -> Turn<'_, K, V> {
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            return Turn::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Turn::Lead(Leader {
            owner: self,
            key: Some(key.clone()),
            tx,
        })
    }

    /// Questions in flight now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Receiver<Option<V>>>> {
        // Every operation leaves the map consistent, so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq, V> Leader<'_, K, V> {
    /// Hands `value` to every follower (and retires the question).
    pub fn finish(self, value: V) {
        // Followers may all be gone; nobody to tell then.
        let _ = self.tx.send(Some(value));
    }
}

impl<K: Hash + Eq, V> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        // After `finish` has sent: a question asked from now on finds the answer in the cache.
        if let Some(key) = self.key.take() {
            let mut map = self.owner.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&key);
        }
    }
}

/// The leader's result, or `None` if it gave up without one.
pub(crate) async fn follow<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Option<V> {
    loop {
        if let Some(value) = rx.borrow_and_update().clone() {
            return Some(value);
        }
        if rx.changed().await.is_err() {
            // The leader is gone; it may have sent just before.
            return rx.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value_once_it_is_sent() {
        let flight: InFlight<&str, u32> = InFlight::new();
        let Turn::Lead(leader) = flight.turn(&"a") else {
            panic!("the first asker leads");
        };
        let followers: Vec<_> = (0..3)
            .map(|_| match flight.turn(&"a") {
                Turn::Follow(rx) => rx,
                Turn::Lead(_) => panic!("a second asker follows"),
            })
            .collect();
        assert!(
            matches!(flight.turn(&"b"), Turn::Lead(_)),
            "another key leads"
        );
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            for rx in followers {
                got.push(follow(rx).await);
            }
            got
        });
        tokio::task::yield_now().await;
        leader.finish(7);
        assert_eq!(waiting.await.unwrap(), [Some(7); 3]);
        assert_eq!(flight.len(), 0, "finished questions are retired");
        assert!(matches!(flight.turn(&"a"), Turn::Lead(_)));
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_releases_its_followers() {
        let flight: InFlight<&str, u32> = InFlight::new();
        let leader = flight.turn(&"a");
        let Turn::Follow(rx) = flight.turn(&"a") else {
            panic!("a second asker follows");
        };
        drop(leader);
        assert_eq!(follow(rx).await, None);
        assert_eq!(flight.len(), 0);
    }
}
