//! The simulator's event queue: every event comes out in the order of its time, then of its
//! scheduling (the order a deterministic run depends on). Most of a storm's events are frames
//! arriving a segment's fixed latency after they were sent; scheduled at the simulator's clock
//! plus one delay, they come already in order, so they wait in first-in-first-out lanes, one per
//! delay, and only the rest (timers, a fault's delayed delivery, control events) in a binary
//! heap. The next event is the earliest of the heap's top and the lanes' fronts: a 10,000-client
//! storm's 150,000 arrivals skip the heap, whose pops were the simulator's largest own cost.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use crate::SimTime;

/// At most this many lanes (distinct delays); an event for another delay goes to the heap.
const MAX_LANES: usize = 8;

/// Events of type `E` by (time, scheduling order).
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    lanes: Vec<Lane<E>>,
    /// The scheduling order of the last event pushed.
    seq: u64,
}

struct Lane<E> {
    delay: Duration,
    events: VecDeque<Entry<E>>,
}

struct Entry<E> {
    time: SimTime,
    seq: u64,
    event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (SimTime, u64) {
        (self.time, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            lanes: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`.
    pub(crate) fn push(&mut self, time: SimTime, event: E) {
        self.seq += 1;
        self.heap.push(Entry {
            time,
            seq: self.seq,
            event,
        });
    }

    /// Schedules `event` at `now + delay`, where `now` is the simulator's clock (which never
    /// goes back): the lane of `delay` receives its events in order. An event that would not
    /// (a clock that went back, or more delays than lanes) goes to the heap, so the order out is
    /// the same whatever the callers do.
    pub(crate) fn push_after(&mut self, now: SimTime, delay: Duration, event: E) {
        let time = now + delay;
        let lane = match self.lanes.iter().position(|lane| lane.delay == delay) {
            Some(index) => Some(index),
            None if self.lanes.len() < MAX_LANES => {
                self.lanes.push(Lane {
                    delay,
                    events: VecDeque::new(),
                });
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        let Some(lane) = lane
            .map(|index| &mut self.lanes[index])
            .filter(|lane| lane.events.back().is_none_or(|last| last.time <= time))
        else {
            return self.push(time, event);
        };
        self.seq += 1;
        lane.events.push_back(Entry {
            time,
            seq: self.seq,
            event,
        });
    }

    /// Where the earliest event is: `None` for the heap, else its lane.
    fn earliest(&self) -> Option<Option<usize>> {
        let mut best: Option<((SimTime, u64), Option<usize>)> =
            self.heap.peek().map(|top| (top.key(), None));
        for (index, lane) in self.lanes.iter().enumerate() {
            if let Some(front) = lane.events.front()
                && best.is_none_or(|(key, _)| front.key() < key)
            {
                best = Some((front.key(), Some(index)));
            }
        }
        best.map(|(_, place)| place)
    }

    /// The earliest event and its time.
    pub(crate) fn pop(&mut self) -> Option<(SimTime, E)> {
        let entry = match self.earliest()? {
            None => self.heap.pop(),
            Some(lane) => self.lanes[lane].events.pop_front(),
        }?;
        Some((entry.time, entry.event))
    }

    /// The time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<SimTime> {
        let heap = self.heap.peek().map(|top| top.time);
        let lanes = self
            .lanes
            .iter()
            .filter_map(|lane| lane.events.front().map(|front| front.time));
        heap.into_iter().chain(lanes).min()
    }

    /// Gives back the room a burst (a storm's broadcasts) left far larger than what is still
    /// pending, rather than carry it to the end of the run.
    pub(crate) fn shrink_slack(&mut self) {
        if self.heap.capacity() > 4 * self.heap.len().max(1024) {
            self.heap.shrink_to_fit();
        }
        for lane in &mut self.lanes {
            if lane.events.capacity() > 4 * lane.events.len().max(1024) {
                lane.events.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// An event at the clock plus this many microseconds, in the heap.
        At(u64),
        /// An event this many microseconds after the clock, through a lane.
        After(u64),
        /// Take the earliest event (the clock moves to its time).
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..50).prop_map(Op::At),
            // A handful of delays, more than the lanes now and then.
            prop_oneof![Just(0u64), Just(3), Just(10), Just(25)].prop_map(Op::After),
            (0u64..12).prop_map(Op::After),
            Just(Op::Pop),
            Just(Op::Pop),
        ]
    }

    proptest! {
        /// Whatever is pushed and popped, in any mix, events come out exactly as from one heap
        /// ordered by (time, scheduling order).
        #[test]
        fn events_come_out_as_from_one_heap(ops in proptest::collection::vec(op(), 0..300)) {
            let mut queue = EventQueue::default();
            let mut reference: BinaryHeap<Entry<u32>> = BinaryHeap::new();
            let mut now = SimTime::ZERO;
            let mut seq = 0u64;
            let mut next_id = 0u32;
            let check_pop = |queue: &mut EventQueue<u32>,
                                 reference: &mut BinaryHeap<Entry<u32>>,
                                 now: &mut SimTime| {
                let expected = reference.pop().map(|e| (e.time, e.event));
                let got = queue.pop();
                prop_assert_eq!(got, expected);
                if let Some((time, _)) = got {
                    *now = time;
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::At(us) | Op::After(us) => {
                        let time = now + Duration::from_micros(us);
                        seq += 1;
                        reference.push(Entry { time, seq, event: next_id });
                        if matches!(op, Op::At(_)) {
                            queue.push(time, next_id);
                        } else {
                            queue.push_after(now, Duration::from_micros(us), next_id);
                        }
                        next_id += 1;
                    }
                    Op::Pop => check_pop(&mut queue, &mut reference, &mut now)?,
                }
                prop_assert_eq!(queue.peek_time(), reference.peek().map(|e| e.time));
            }
            while !reference.is_empty() {
                check_pop(&mut queue, &mut reference, &mut now)?;
            }
            prop_assert_eq!(queue.pop(), None);
        }
    }

    #[test]
    fn a_clock_that_goes_back_still_gets_the_order_right() {
        let mut queue = EventQueue::default();
        let delay = Duration::from_micros(10);
        queue.push_after(SimTime::from_secs(2), delay, "late");
        // Earlier than the lane's last event: the heap takes it.
        queue.push_after(SimTime::from_secs(1), delay, "early");
        assert_eq!(queue.pop().map(|(_, e)| e), Some("early"));
        assert_eq!(queue.pop().map(|(_, e)| e), Some("late"));
        assert_eq!(queue.pop(), None);
    }
}
