//! The releases due for a round, kept as controller-runtime's work queue
//! keeps its keys: each at most once, in the order it became due, and
//! (as its priority queue does) a change to a release the driver has
//! already looked at before the first look at new ones, a resync's or a
//! wait's: in a burst of creates, the release whose gray Deployment just
//! became ready is not put behind every release created after it. One
//! that becomes due again while its round runs waits for that round to
//! end, so that no two rounds of one release overlap, and then runs once
//! more, unless what made it due again is something the round had seen
//! (its own status writes, the news of its own cluster writes): a turn
//! that settled on what it saw needs no turn to look at it again. Rounds
//! start as others end, so a release does not wait for a whole burst's
//! rounds to end before its next one (as it did when rounds ran in
//! batches).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// Why a key became due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Its release was written; the write's store revision.
    Written(u64),
    /// News from the clusters that concerns it; the news' number
    /// (`ClusterChange::sequence`).
    News(u64),
    /// Anything else (a resync, a wait that is over, a first look).
    Other,
}

/// What a turn that settled (its last round found nothing to change) had
/// seen: its release as of store revision `revision`, and the clusters'
/// news up to number `told` (`None`: not numbered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) revision: u64,
    pub(super) told: Option<u64>,
}

/// The causes that came while a key's round ran, summed up.
#[derive(Debug, Default, Clone, Copy)]
struct Again {
    /// The newest write's revision.
    written: Option<u64>,
    /// The newest news' number.
    news: Option<u64>,
    other: bool,
}

impl Again {
    fn add(&mut self, cause: Cause) {
        match cause {
            Cause::Written(revision) => self.written = self.written.max(Some(revision)),
            Cause::News(number) => self.news = self.news.max(Some(number)),
            Cause::Other => self.other = true,
        }
    }

    /// Whether a round that saw `seen` saw every cause.
    fn seen_by(&self, seen: Seen) -> bool {
        !self.other
            && self.written.is_none_or(|r| seen.covers(Cause::Written(r)))
            && self.news.is_none_or(|n| seen.covers(Cause::News(n)))
    }
}

impl Seen {
    /// Whether a round that saw this had seen `cause`: a write at or
    /// before its revision, news numbered at or before what it was told.
    /// A resync or a wait that is over is never seen.
    fn covers(self, cause: Cause) -> bool {
        match cause {
            Cause::Written(revision) => revision <= self.revision,
            Cause::News(number) => self.told.is_some_and(|told| number <= told),
            Cause::Other => false,
        }
    }
}

pub(super) struct Queue<K> {
    /// Due for a change to a release already looked at, in order.
    changed: VecDeque<K>,
    /// In `changed` and due.
    in_changed: HashSet<K>,
    /// Due, in order (some also in `changed`, or started from it: those
    /// are skipped here).
    order: VecDeque<K>,
    /// Due and not running.
    due: HashSet<K>,
    running: HashSet<K>,
    /// Due again while running: due once its round ends, unless the
    /// round saw every cause.
    again: HashMap<K, Again>,
    /// What each key's last round saw, if it settled: a cause it covers
    /// (its own status write, read from the change log only after the
    /// round ended) makes nothing due.
    seen: HashMap<K, Seen>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            changed: VecDeque::new(),
            in_changed: HashSet::new(),
            order: VecDeque::new(),
            due: HashSet::new(),
            running: HashSet::new(),
            again: HashMap::new(),
            seen: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    /// `key` is due, for `cause`; `changed`: a change to a release
    /// already looked at (it goes before the others). A key already due
    /// keeps its place, or moves up when its release changed.
    pub(super) fn add(&mut self, key: K, cause: Cause, changed: bool) {
        if self.running.contains(&key) {
            self.again.entry(key).or_default().add(cause);
            return;
        }
        if self.seen.get(&key).is_some_and(|seen| seen.covers(cause)) {
            return;
        }
        if changed && self.in_changed.insert(key.clone()) {
            self.changed.push_back(key.clone());
        }
        if self.due.insert(key.clone()) && !changed {
            self.order.push_back(key);
        }
    }

    /// The first key due, now running: a changed release's first.
    pub(super) fn start(&mut self) -> Option<K> {
        loop {
            let key = match self.changed.pop_front() {
                Some(key) => key,
                None => self.order.pop_front()?,
            };
            // Not due: started already from the other line.
            if self.due.remove(&key) {
                self.in_changed.remove(&key);
                self.running.insert(key.clone());
                return Some(key);
            }
        }
    }

    /// `key`'s round ended, having settled on what it `seen` (`None`: it
    /// did not settle, or cannot say); due again if it became due
    /// meanwhile for a cause it had not seen.
    pub(super) fn finish(&mut self, key: &K, seen: Option<Seen>) {
        self.running.remove(key);
        match seen {
            Some(seen) => self.seen.insert(key.clone(), seen),
            None => self.seen.remove(key),
        };
        if let Some(again) = self.again.remove(key)
            && !seen.is_some_and(|seen| again.seen_by(seen))
        {
            // Its release changed while it ran, unless only a resync or
            // a wait came.
            let changed = again.written.is_some() || again.news.is_some();
            self.add(key.clone(), Cause::Other, changed);
        }
    }

    /// Forgets every key due, and what their rounds saw; the running ones
    /// end as they will.
    pub(super) fn clear(&mut self) {
        self.seen.clear();
        self.changed.clear();
        self.in_changed.clear();
        self.order.clear();
        self.due.clear();
        self.again.clear();
    }

    /// Forgets what the rounds of keys not `kept` saw (releases no longer
    /// active, found by a resync); due and running keys end as they will.
    pub(super) fn forget_seen_except(&mut self, kept: impl Fn(&K) -> bool) {
        self.seen.retain(|key, _| kept(key));
    }

    /// What rounds saw, kept for so many keys.
    #[cfg(test)]
    fn seen_len(&self) -> usize {
        self.seen.len()
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
        queue.add("a", Cause::Other, false);
        queue.add("b", Cause::Other, false);
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.start(), Some("a"));
        assert_eq!(queue.start(), Some("b"));
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 2, "both still running");
    }

    #[test]
    fn a_key_due_while_running_waits_for_its_round_to_end_and_runs_once_more() {
        let mut queue = Queue::default();
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.start(), Some("a"));
        queue.add("a", Cause::Other, false);
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.start(), None, "no second round of a while one runs");
        queue.finish(&"a", None);
        assert_eq!(queue.start(), Some("a"));
        queue.finish(&"a", None);
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn clear_forgets_what_is_due_but_not_what_runs() {
        let mut queue = Queue::default();
        queue.add("a", Cause::Other, false);
        queue.add("b", Cause::Other, false);
        assert_eq!(queue.start(), Some("a"));
        queue.add("a", Cause::Other, false);
        queue.clear();
        assert_eq!(queue.start(), None);
        assert_eq!(queue.len(), 1);
        queue.finish(&"a", None);
        assert_eq!(queue.start(), None);
    }

    const SEEN: Seen = Seen {
        revision: 10,
        told: Some(5),
    };

    #[test]
    fn a_turn_that_settled_on_its_own_writes_and_news_runs_no_more() {
        let mut queue = Queue::default();
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.start(), Some("a"));
        // Its own status writes, and the news of its own cluster writes.
        queue.add("a", Cause::Written(9), false);
        queue.add("a", Cause::Written(10), false);
        queue.add("a", Cause::News(5), false);
        queue.finish(&"a", Some(SEEN));
        assert_eq!(queue.start(), None, "it saw all of them");
        assert_eq!(queue.len(), 0);
        // Its last status write, read from the change log only now.
        queue.add("a", Cause::Written(10), true);
        queue.add("a", Cause::News(4), true);
        assert_eq!(queue.start(), None, "it saw that write and that news");
        queue.add("a", Cause::Written(11), true);
        assert_eq!(queue.start(), Some("a"), "a write it had not seen");
        // A round that did not settle says nothing of what it saw.
        queue.finish(&"a", None);
        queue.add("a", Cause::Written(10), true);
        assert_eq!(queue.start(), Some("a"));
    }

    #[test]
    fn a_turn_runs_again_for_what_it_had_not_seen_or_when_it_did_not_settle() {
        let later = [
            Cause::Written(11),
            Cause::News(6),
            // A resync, a wait over: nothing a turn can say it saw.
            Cause::Other,
        ];
        for cause in later {
            let mut queue = Queue::default();
            queue.add("a", Cause::Other, false);
            assert_eq!(queue.start(), Some("a"));
            queue.add("a", Cause::Written(10), false);
            queue.add("a", cause, false);
            queue.finish(&"a", Some(SEEN));
            assert_eq!(queue.start(), Some("a"), "{cause:?} came after what it saw");
        }
        // News, when the clusters do not number it.
        let mut queue = Queue::default();
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.start(), Some("a"));
        queue.add("a", Cause::News(1), false);
        queue.finish(
            &"a",
            Some(Seen {
                revision: 10,
                told: None,
            }),
        );
        assert_eq!(queue.start(), Some("a"), "unnumbered news is never seen");
        // A turn that did not settle sees nothing.
        let mut queue = Queue::default();
        queue.add("a", Cause::Other, false);
        assert_eq!(queue.start(), Some("a"));
        queue.add("a", Cause::Written(1), false);
        queue.finish(&"a", None);
        assert_eq!(queue.start(), Some("a"));
    }

    #[test]
    fn what_rounds_saw_is_forgotten_for_releases_no_longer_active() {
        let mut queue = Queue::default();
        for key in ["gone", "kept"] {
            queue.add(key, Cause::Other, false);
            assert_eq!(queue.start(), Some(key));
            queue.finish(&key, Some(SEEN));
        }
        assert_eq!(queue.seen_len(), 2);
        queue.forget_seen_except(|key| *key == "kept");
        assert_eq!(queue.seen_len(), 1);
        // The one kept still skips what it saw; the one forgotten runs.
        queue.add("kept", Cause::Written(10), true);
        queue.add("gone", Cause::Written(10), true);
        assert_eq!(queue.start(), Some("gone"));
        assert_eq!(queue.start(), None);
    }

    #[test]
    fn a_key_with_no_settled_round_runs_for_any_cause() {
        let mut queue = Queue::default();
        queue.add("a", Cause::Written(3), false);
        queue.add("a", Cause::News(1), false);
        assert_eq!(queue.start(), Some("a"), "never ran: it runs");
        queue.finish(&"a", None);
        queue.add("a", Cause::Written(3), false);
        assert_eq!(
            queue.start(),
            Some("a"),
            "its last round did not settle: it runs, whatever its cause"
        );
    }

    #[test]
    fn a_change_to_a_release_looked_at_goes_before_first_looks_each_key_once() {
        let mut queue = Queue::default();
        // A burst: new releases, then news for one looked at already.
        queue.add("new-1", Cause::Written(1), false);
        queue.add("new-2", Cause::Written(2), false);
        queue.add("ready", Cause::News(1), true);
        // Already due as new, and now changed: it moves up, once.
        queue.add("new-2", Cause::News(2), true);
        queue.add("new-2", Cause::News(3), true);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.start(), Some("ready"));
        assert_eq!(queue.start(), Some("new-2"));
        assert_eq!(queue.start(), Some("new-1"));
        assert_eq!(queue.start(), None, "new-2 is not started twice");
        // Due again while it ran, for news it had not seen: before the rest.
        queue.add("later", Cause::Other, false);
        queue.add("ready", Cause::News(9), true);
        queue.finish(&"ready", Some(SEEN));
        assert_eq!(queue.start(), Some("ready"));
        // A resync while it ran: in line with the rest.
        queue.add("ready", Cause::Other, false);
        queue.finish(&"ready", Some(SEEN));
        assert_eq!(queue.start(), Some("later"));
        assert_eq!(queue.start(), Some("ready"));
        assert_eq!(queue.start(), None);
    }
}
