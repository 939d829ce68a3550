//! The output queues of the sans-IO cores (transmits and events, filled while a core handles an
//! input and drained by the shell's `poll_*` calls). Drained, a queue gives its buffer back:
//! between bursts a core holds no queue memory, where a `VecDeque` keeps its largest burst's
//! capacity for the core's whole life. A 100,000-client boot storm holds every client's boot,
//! DHCP client and unlock exchange at once, each with two such queues (about 1.5 KiB a client
//! of idle buffers before this).

use std::collections::VecDeque;

/// Pops the front of `queue`; when that leaves it empty, frees its buffer.
pub fn pop_releasing<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let item = queue.pop_front();
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_queue_holds_no_buffer_and_order_is_kept() {
        let mut queue: VecDeque<u32> = (1..=5).collect();
        let mut popped = Vec::new();
        while let Some(item) = pop_releasing(&mut queue) {
            popped.push(item);
            if !queue.is_empty() {
                assert!(queue.capacity() > 0, "not freed while items remain");
            }
        }
        assert_eq!(popped, [1, 2, 3, 4, 5]);
        assert_eq!(queue.capacity(), 0, "the buffer is given back once drained");
        queue.push_back(6);
        assert_eq!(pop_releasing(&mut queue), Some(6));
        assert_eq!(pop_releasing(&mut queue), None);
    }
}
