//! The HTTP proxy's disk cache (RFC 9111, a shared cache): GET and HEAD answers stored under
//! `state.dir/http-cache`, served with `Age`, revalidated when stale, bounded in size with LRU
//! eviction. The RFC's decisions come from `http-cache-semantics` (`policy.rs` adds ours);
//! the files are [`store`]'s, the bound is [`index`]'s, streaming while storing is [`fill`]'s
//! and [`writer`]'s, and the request flow is [`exchange`]'s.
//!
//! Shared by every inside client: that is its point, and it means one client can tell from a
//! fast answer (or `Age`) that another fetched an object. `http_proxy.cache = false` turns it off.

pub(crate) mod exchange;
mod fill;
mod index;
mod policy;
mod store;
mod writer;

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use anyhow::{Context, Result};
use http_cache_semantics::CachePolicy;
use hyper::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use fill::Progress;
use index::Index;
use store::{Meta, Store};

pub(crate) use store::key_of;

/// Variants kept per URL (a response with `Vary`); storing one more drops the least recently
/// used of them.
pub(crate) const MAX_VARIANTS: usize = 8;

/// A URL as the cache keys it: `http[s]://host:port/path?query`, the host lower-cased and
/// the port explicit, as the proxy builds it from a request line (`http://HTTPS///host/…`
/// and `https://host/…` name the same object).
pub(crate) fn normal_url(url: &str) -> Result<String> {
    use crate::http_proxy::request;
    let mut uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if let Some(rewritten) = request::https_form(&uri) {
        uri = rewritten.with_context(|| format!("{url:?} is not a URL the proxy forwards"))?;
    }
    let https = uri.scheme_str() == Some("https");
    let target = if https {
        request::https_target(&uri)
    } else {
        request::absolute_target(&uri)
    }
    .with_context(|| format!("{url:?} is not a URL the proxy forwards"))?;
    let scheme = if https { "https" } else { "http" };
    let path = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    Ok(format!("{scheme}://{target}{path}"))
}

/// A snapshot of the cache for `status`, metrics and `gateway-agent cache stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Requests answered from a fresh stored object (or an immutable one).
    pub hits: u64,
    /// Cacheable requests that had to go to the origin (nothing stored, or another variant).
    pub misses: u64,
    /// Stale objects the origin confirmed (304) and that were then served from the cache.
    pub revalidated: u64,
    /// Stale objects served because the origin could not be reached (`stale-if-error`).
    pub stale_served: u64,
    /// Requests that joined another one's upstream fetch (collapsed forwarding).
    pub collapsed: u64,
    /// Body bytes sent to clients from the cache instead of from the origin.
    pub bytes_saved: u64,
    /// Objects written to the cache.
    pub stored: u64,
    /// Objects evicted to stay within `http_proxy.cache_size`.
    pub evicted: u64,
    /// Entries dropped because their body did not match its metadata (never served).
    pub corrupt: u64,
    /// Objects held now.
    pub entries: u64,
    /// Body bytes held now.
    pub size_bytes: u64,
    /// `http_proxy.cache_size`.
    pub max_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidated: AtomicU64,
    stale_served: AtomicU64,
    collapsed: AtomicU64,
    bytes_saved: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
    corrupt: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// An index entry: the metadata, and whether the body's digest was checked since start.
#[derive(Debug, Clone)]
struct Entry {
    meta: Arc<Meta>,
    verified: bool,
}

/// A stored object, open for reading.
pub(crate) struct Found {
    pub meta: Arc<Meta>,
    pub file: Arc<File>,
}

/// The response head every collapsed request gets, once the leader's response arrived.
#[derive(Clone)]
pub(crate) enum Head {
    /// Being stored: stream from the fill.
    Shared {
        file: Arc<File>,
        progress: watch::Receiver<Progress>,
        status: StatusCode,
        headers: HeaderMap,
        policy: Box<CachePolicy>,
    },
    /// Not cacheable (or the fetch failed): each request goes upstream itself.
    NotShared,
}

/// The stored variants of a URL whose answers vary (`Vary`).
#[derive(Debug, Default)]
struct Variants {
    /// The request headers they vary on ([`policy::vary_names`]).
    names: Vec<String>,
    /// Their keys, least recently used first.
    keys: Vec<String>,
}

/// One upstream fetch others may join.
struct Flight {
    head: watch::Sender<Option<Head>>,
}

/// Held by the request that fetches for everyone: dropping it without a head tells the
/// others to fetch for themselves, and ends the flight.
pub(crate) struct Lead {
    cache: Arc<Cache>,
    key: String,
    flight: Arc<Flight>,
}

impl Lead {
    /// Tells the joined requests what to do.
    pub fn publish(&self, head: Head) {
        self.flight.head.send_replace(Some(head));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.flight.head.borrow().is_none() {
            self.flight.head.send_replace(Some(Head::NotShared));
        }
        let mut flights = self.cache.flights();
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// Either the fetch is ours to make, or another request's to follow.
pub(crate) enum Joined {
    Lead(Lead),
    Follow(watch::Receiver<Option<Head>>),
}

/// The cache: the store, the index, the fetches in flight, the counters.
pub(crate) struct Cache {
    store: Store,
    index: Mutex<Index<Entry>>,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// By the URL's own key ([`key_of`]), for the URLs whose stored answers vary.
    variants: Mutex<HashMap<String, Variants>>,
    max_object: u64,
    counters: Counters,
}

impl Cache {
    /// Opens the cache in `dir` (blocking: run it on a blocking thread), holding at most
    /// `max_bytes`, objects of at most `max_object` bytes. Entries are ordered for eviction
    /// by when they were stored.
    pub fn open(dir: &Path, max_bytes: u64, max_object: u64) -> Result<Arc<Cache>> {
        let (store, mut entries) = Store::open(dir)
            .with_context(|| format!("opening the HTTP cache in {}", dir.display()))?;
        entries.sort_by_key(|(_, meta)| meta.stored_unix);
        let cache = Cache {
            store,
            index: Mutex::new(Index::new(max_bytes)),
            flights: Mutex::new(HashMap::new()),
            variants: Mutex::new(HashMap::new()),
            max_object,
            counters: Counters::default(),
        };
        for (key, meta) in entries {
            let names = stored_vary_names(&meta);
            if meta.vary_key.is_none() && !names.is_empty() {
                // Stored before variants had keys of their own: fetched again when asked.
                cache.store.remove(&key, &meta);
                continue;
            }
            let (url, size) = (meta.url.clone(), meta.size);
            let entry = Entry {
                meta: Arc::new(meta),
                verified: false,
            };
            let gone = cache.index().insert(&key, size, entry);
            let mut kept = true;
            for (gone_key, slot) in gone {
                kept &= gone_key != key;
                cache.forget(&gone_key, &slot.meta.meta.url);
                cache.store.remove(&gone_key, &slot.meta.meta);
            }
            if kept {
                cache.drop_variants(cache.note_variant(&key, &url, names));
            }
        }
        Ok(Arc::new(cache))
    }

    fn variants(&self) -> MutexGuard<'_, HashMap<String, Variants>> {
        self.variants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key a request for `url` is looked up under: its variant's when the answers stored
    /// for `url` vary, else the URL's own.
    pub fn key_for(&self, url: &str, request: &HeaderMap) -> String {
        let base = key_of(url);
        match self.variants().get(&base) {
            Some(variants) => {
                store::key_for(url, policy::vary_key(&variants.names, request).as_deref())
            }
            None => base,
        }
    }

    /// Records `key`, just stored for `url` with answers varying on `names`, as the URL's most
    /// recently used variant. Returns what is outdated now (answers that varied on other
    /// headers, or did not vary) and, marked `true`, the variants beyond [`MAX_VARIANTS`].
    fn note_variant(&self, key: &str, url: &str, names: Vec<String>) -> Vec<(String, bool)> {
        let base = key_of(url);
        let mut variants = self.variants();
        let mut dropped: Vec<(String, bool)> = Vec::new();
        if names.is_empty() {
            // It does not vary (any more): the variants stored before are outdated.
            if let Some(old) = variants.remove(&base) {
                dropped.extend(old.keys.into_iter().map(|k| (k, false)));
            }
        } else {
            let known = variants.entry(base.clone()).or_default();
            if known.names != names {
                dropped.extend(known.keys.drain(..).map(|k| (k, false)));
                dropped.push((base, false));
                known.names = names;
            }
            known.keys.retain(|k| k != key);
            known.keys.push(key.to_owned());
            while known.keys.len() > MAX_VARIANTS {
                dropped.push((known.keys.remove(0), true));
            }
        }
        dropped.retain(|(k, _)| k != key);
        dropped
    }

    /// Removes what [`Cache::note_variant`] found outdated (blocking).
    fn drop_variants(&self, dropped: Vec<(String, bool)>) {
        for (key, evicted) in dropped {
            let removed = self.index().remove(&key);
            if let Some(slot) = removed {
                if evicted {
                    add(&self.counters.evicted, 1);
                }
                self.store.remove(&key, &slot.meta.meta);
            }
        }
    }

    /// `key` (of `url`) left the index: no longer one of the URL's variants.
    fn forget(&self, key: &str, url: &str) {
        let base = key_of(url);
        let mut variants = self.variants();
        if let Some(known) = variants.get_mut(&base) {
            known.keys.retain(|k| k != key);
            if known.keys.is_empty() {
                variants.remove(&base);
            }
        }
    }

    /// `key` (of `url`) was used: the URL's most recently used variant.
    fn touch_variant(&self, key: &str, url: &str) {
        let mut variants = self.variants();
        if let Some(known) = variants.get_mut(&key_of(url)) {
            if let Some(at) = known.keys.iter().position(|k| k == key) {
                let key = known.keys.remove(at);
                known.keys.push(key);
            }
        }
    }

    // A poisoned lock still holds a consistent index: every update is a few map operations
    // that do not panic half-way.
    fn index(&self) -> MutexGuard<'_, Index<Entry>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest object stored.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// The stored object under `key`, open. Its digest is checked on first use after a start;
    /// an entry that fails the check, or whose body is gone or resized, is dropped.
    pub async fn lookup(self: &Arc<Self>, key: &str) -> Option<Found> {
        let entry = self.index().get(key)?.meta;
        let this = self.clone();
        let meta = entry.meta.clone();
        let verified = entry.verified;
        let opened = tokio::task::spawn_blocking(move || {
            if !verified && !this.store.verify(&meta)? {
                anyhow::bail!("digest mismatch");
            }
            this.store.open_body(&meta)
        })
        .await;
        match opened {
            Ok(Ok(file)) => {
                if entry.meta.vary_key.is_some() {
                    self.touch_variant(key, &entry.meta.url);
                }
                if !verified {
                    let mut index = self.index();
                    if let Some(slot) = index.get(key) {
                        if Arc::ptr_eq(&slot.meta.meta, &entry.meta) {
                            let verified = Entry {
                                meta: entry.meta.clone(),
                                verified: true,
                            };
                            index.update_meta(key, verified);
                        }
                    }
                }
                Some(Found {
                    meta: entry.meta,
                    file: Arc::new(file),
                })
            }
            _ => {
                tracing::warn!("dropping a cache entry whose body does not match its metadata");
                add(&self.counters.corrupt, 1);
                self.drop_entry(key, &entry.meta).await;
                None
            }
        }
    }

    /// Joins the fetch in flight for `key`, or becomes it.
    pub fn join_or_lead(self: &Arc<Self>, key: &str) -> Joined {
        let mut flights = self.flights();
        if let Some(flight) = flights.get(key) {
            add(&self.counters.collapsed, 1);
            return Joined::Follow(flight.head.subscribe());
        }
        let flight = Arc::new(Flight {
            head: watch::channel(None).0,
        });
        flights.insert(key.to_owned(), flight.clone());
        Joined::Lead(Lead {
            cache: self.clone(),
            key: key.to_owned(),
            flight,
        })
    }

    /// Adds a committed object, evicting what no longer fits (blocking).
    fn insert(&self, key: &str, meta: Meta) {
        let size = meta.size;
        let url = meta.url.clone();
        let names = stored_vary_names(&meta);
        let entry = Entry {
            meta: Arc::new(meta),
            verified: true,
        };
        let gone = self.index().insert(key, size, entry);
        add(&self.counters.stored, 1);
        for (gone_key, slot) in gone {
            // The replaced version of this very key is not an eviction.
            if gone_key != key || slot.size > self.index().bound() {
                add(&self.counters.evicted, 1);
            }
            self.forget(&gone_key, &slot.meta.meta.url);
            self.store.remove(&gone_key, &slot.meta.meta);
        }
        if size <= self.index().bound() {
            self.drop_variants(self.note_variant(key, &url, names));
        }
    }

    /// Replaces `key`'s metadata after a 304, on disk and in the index.
    pub async fn refresh(self: &Arc<Self>, key: &str, meta: Meta) {
        let this = self.clone();
        let key_owned = key.to_owned();
        let meta = Arc::new(meta);
        let written = meta.clone();
        let result =
            tokio::task::spawn_blocking(move || this.store.write_meta(&key_owned, &written)).await;
        match result {
            Ok(Ok(())) => {
                let entry = Entry {
                    meta,
                    verified: true,
                };
                self.index().update_meta(key, entry);
            }
            _ => tracing::warn!("could not refresh a cache entry's metadata"),
        }
    }

    async fn drop_entry(self: &Arc<Self>, key: &str, meta: &Arc<Meta>) {
        let removed = {
            let mut index = self.index();
            match index.get(key) {
                Some(slot) if Arc::ptr_eq(&slot.meta.meta, meta) => index.remove(key),
                _ => None,
            }
        };
        if let Some(slot) = removed {
            self.forget(key, &slot.meta.meta.url);
            let this = self.clone();
            let key = key.to_owned();
            let _ =
                tokio::task::spawn_blocking(move || this.store.remove(&key, &slot.meta.meta)).await;
        }
    }

    /// Removes the objects stored for `url` (every variant); whether there was one.
    pub async fn purge(self: &Arc<Self>, url: &str) -> bool {
        let base = key_of(url);
        let mut keys = self
            .variants()
            .remove(&base)
            .map(|known| known.keys)
            .unwrap_or_default();
        keys.push(base);
        let removed: Vec<(String, Arc<Meta>)> = {
            let mut index = self.index();
            keys.into_iter()
                .filter_map(|key| index.remove(&key).map(|slot| (key, slot.meta.meta)))
                .collect()
        };
        let any = !removed.is_empty();
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (key, meta) in removed {
                this.store.remove(&key, &meta);
            }
        })
        .await;
        any
    }

    /// Every stored object: URL, size, when it was stored. For `gateway-agent cache ls`, which
    /// only root reaches (the control socket): URLs say what the clients fetched.
    pub fn list(&self) -> Vec<Listed> {
        let index = self.index();
        let mut all: Vec<Listed> = index
            .entries()
            .map(|slot| Listed {
                url: slot.meta.meta.url.clone(),
                size: slot.size,
                stored_unix: slot.meta.meta.stored_unix,
            })
            .collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }

    /// Counts a hit, or bytes served from the cache.
    pub(crate) fn count(&self, what: Count, bytes: u64) {
        let c = &self.counters;
        match what {
            Count::Hit => add(&c.hits, 1),
            Count::Miss => add(&c.misses, 1),
            Count::Revalidated => add(&c.revalidated, 1),
            Count::Stale => add(&c.stale_served, 1),
        }
        add(&c.bytes_saved, bytes);
    }

    /// The counters and sizes now.
    pub fn stats(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        let index = self.index();
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            revalidated: get(&c.revalidated),
            stale_served: get(&c.stale_served),
            collapsed: get(&c.collapsed),
            bytes_saved: get(&c.bytes_saved),
            stored: get(&c.stored),
            evicted: get(&c.evicted),
            corrupt: get(&c.corrupt),
            entries: index.len() as u64,
            size_bytes: index.total(),
            max_bytes: index.bound(),
        }
    }
}

/// The request headers a stored answer varies on.
fn stored_vary_names(meta: &Meta) -> Vec<String> {
    policy::vary_names(
        meta.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("vary"))
            .map(|(_, value)| value.as_slice()),
    )
}

/// One stored object in `cache ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The URL it was fetched from.
    pub url: String,
    /// Body bytes.
    pub size: u64,
    /// When it was stored (Unix seconds).
    pub stored_unix: u64,
}

/// What an answer counts as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Hit,
    Miss,
    Revalidated,
    Stale,
}

#[cfg(test)]
mod tests;
