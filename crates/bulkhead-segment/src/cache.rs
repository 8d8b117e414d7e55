//! A least-recently-used map bounded by the bytes its values hold: the worker's image embeddings and the
//! server's prepared images.

use std::collections::HashMap;

/// A map from string keys to values, each with a size in bytes; inserting past the budget evicts the least
/// recently used entries. A value larger than the whole budget is not kept.
#[derive(Debug)]
pub struct ByteLru<V> {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<String, (V, usize, u64)>,
}

impl<V> ByteLru<V> {
    /// An empty cache holding at most `budget` bytes (0 keeps nothing).
    pub fn new(budget: usize) -> ByteLru<V> {
        ByteLru { budget, used: 0, tick: 0, entries: HashMap::new() }
    }

    /// The value under `key`, marked as just used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|e| {
            e.2 = tick;
            &e.0
        })
    }

    /// Whether `key` is cached (without marking it used).
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps `value` of `bytes` under `key`, evicting the least recently used entries to stay within the budget;
    /// returns whether it was kept.
    pub fn insert(&mut self, key: String, value: V, bytes: usize) -> bool {
        if let Some((_, old, _)) = self.entries.remove(&key) {
            self.used -= old;
        }
        if bytes > self.budget {
            return false;
        }
        while self.used + bytes > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.2).map(|(k, _)| k.clone()) else { break };
            if let Some((_, size, _)) = self.entries.remove(&oldest) {
                self.used -= size;
            }
        }
        self.tick += 1;
        self.used += bytes;
        self.entries.insert(key, (value, bytes, self.tick));
        true
    }

    /// Takes the value under `key` out of the cache, with its size (put it back with [`ByteLru::insert`]).
    pub fn remove(&mut self, key: &str) -> Option<(V, usize)> {
        let (value, bytes, _) = self.entries.remove(key)?;
        self.used -= bytes;
        Some((value, bytes))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_within_the_budget() {
        let mut c = ByteLru::new(10);
        assert!(c.insert("a".into(), 1, 4));
        assert!(c.insert("b".into(), 2, 4));
        assert_eq!(c.get("a"), Some(&1)); // b is now the oldest
        assert!(c.insert("c".into(), 3, 4));
        assert!(c.contains("a") && !c.contains("b") && c.contains("c"));
        assert_eq!(c.bytes(), 8);
        assert!(!c.insert("huge".into(), 4, 11), "larger than the budget: not kept");
        assert_eq!(c.len(), 2);
        assert!(c.insert("a".into(), 5, 6), "replacing frees the old size first");
        assert_eq!(c.bytes(), 10);
        assert_eq!(c.get("a"), Some(&5));
        let mut none = ByteLru::new(0);
        assert!(!none.insert("x".into(), 0, 1) && none.is_empty());
    }
}
