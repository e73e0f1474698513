//! A table of fixed size for keys chosen by clients: a key's keyed hash picks its slot, so
//! memory is set when the table is made and never grows with the keys an attacker names, and
//! nothing ever needs a scan to make room. What two colliding keys do is the user's choice: the
//! throttle lets them share a count (erring towards throttling); the token cache lets the newer
//! one take the slot.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

/// A fixed number of slots picked by a keyed hash (random per process, so slots cannot be
/// aimed at from outside).
pub struct Slots<T> {
    hasher: RandomState,
    slots: Box<[Mutex<T>]>,
}

impl<T: Default> Slots<T> {
    pub fn new(n: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            slots: (0..n.max(1)).map(|_| Mutex::new(T::default())).collect(),
        }
    }

    pub fn index(&self, key: &impl Hash) -> usize {
        (self.hasher.hash_one(key) % self.slots.len() as u64) as usize
    }

    pub fn with<R>(&self, index: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let mut slot = match self.slots[index].lock() {
            Ok(g) => g,
            // A panic while holding a slot leaves plain counters behind; they are still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut slot)
    }

    /// The number of slots, fixed at creation.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}
