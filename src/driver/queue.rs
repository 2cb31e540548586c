//! The releases due for a round, kept as controller-runtime's work queue
//! keeps its keys: each at most once, in the order it became due. One
//! that becomes due again while its round runs waits for that round to
//! end, so that no two rounds of one release overlap, and then runs once
//! more. Rounds start as others end, so a release does not wait for a
//! whole burst's rounds to end before its next one (as it did when rounds
//! ran in batches).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

pub(super) struct Queue<K> {
    /// Due and not running, in order.
    order: VecDeque<K>,
    due: HashSet<K>,
    running: HashSet<K>,
    /// Due again while running: due once its round ends.
    again: HashSet<K>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            order: VecDeque::new(),
            due: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    /// `key` is due: a key already due keeps its place.
    pub(super) fn add(&mut self, key: K) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.due.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    /// The first key due, now running.
    pub(super) fn start(&mut self) -> Option<K> {
        let key = self.order.pop_front()?;
        self.due.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// `key`'s round ended; due again if it became due meanwhile.
    pub(super) fn finish(&mut self, key: &K) {
        self.running.remove(key);
        if self.again.remove(key) {
            self.add(key.clone());
        }
    }

    /// Forgets every key due; the running ones end as they will.
    pub(super) fn clear(&mut self) {
        self.order.clear();
        self.due.clear();
        self.again.clear();
    }

    /// Keys due, due again, or running.
    pub(super) fn len(&self) -> usize {
        self.due.len() + self.again.len() + self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_in_the_order_they_became_due_each_once() {
        let mut queue = Queue::default();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.start(), Some("a"));
        assert_eq!(queue.start(), Some("b"));
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 2, "both still running");
    }

    #[test]
    fn a_key_due_while_running_waits_for_its_round_to_end_and_runs_once_more() {
        let mut queue = Queue::default();
        queue.add("a");
        assert_eq!(queue.start(), Some("a"));
        queue.add("a");
        queue.add("a");
        assert_eq!(queue.start(), None, "no second round of a while one runs");
        queue.finish(&"a");
        assert_eq!(queue.start(), Some("a"));
        queue.finish(&"a");
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn clear_forgets_what_is_due_but_not_what_runs() {
        let mut queue = Queue::default();
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.start(), Some("a"));
        queue.add("a");
        queue.clear();
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 1);
        queue.finish(&"a");
        assert_eq!(queue.start(), None);
    }
}
