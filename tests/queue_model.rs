//! The queue against a model: a `VecDeque` that knows what must be pending after any
//! sequence of appends, acks, expiries, size-policy evictions and reopens.

use proptest::prelude::*;
use sensorgate::config::{Qos, WhenFull};
use sensorgate::mapping::NewMessage;
use sensorgate::queue::{Confirmed, Queue, QueueOptions, ROW_OVERHEAD};
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Op {
    /// Append messages with these payload lengths.
    Append(Vec<usize>),
    /// Ack the pending messages at these positions (modulo the pending count).
    Ack(Vec<usize>),
    /// Ack an id that is not pending.
    AckUnknown,
    /// Ack as the uplink does, with the sizes it read: messages at these positions among
    /// all ever appended (some may be gone by now, evicted, expired or acked).
    AckRead(Vec<usize>),
    /// Ack the n oldest pending messages as the uplink does (they are released, not
    /// deleted; all of them at once when n covers the queue), with or without an id that
    /// was never handed out (a confirmation must not release rows yet to come).
    AckOldest(usize, bool),
    /// Reclaim up to n released rows.
    Reclaim(usize),
    /// Expire messages created before the n-th oldest pending one.
    Expire(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..300, 1..20).prop_map(Op::Append),
        3 => prop::collection::vec(0usize..1000, 0..10).prop_map(Op::Ack),
        1 => Just(Op::AckUnknown),
        3 => prop::collection::vec(0usize..1000, 0..10).prop_map(Op::AckRead),
        3 => (0usize..30, any::<bool>()).prop_map(|(n, bogus)| Op::AckOldest(n, bogus)),
        1 => (1usize..20).prop_map(Op::Reclaim),
        1 => (0usize..10).prop_map(Op::Expire),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct M {
    id: i64,
    topic: String,
    payload: Vec<u8>,
    created: i64,
}

fn size(m: &M) -> u64 {
    (m.topic.len() + m.payload.len()) as u64 + ROW_OVERHEAD
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..40), oldest in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let when_full = if oldest { WhenFull::DropOldest } else { WhenFull::DropNewest };
        let opts = QueueOptions { max_size: 8_000, when_full, synchronous_full: false };
        let mut q = Queue::open(&path, opts.clone()).unwrap();
        let mut model: VecDeque<M> = VecDeque::new();
        let (mut next_id, mut dropped, mut expired, mut clock) = (1i64, 0u64, 0u64, 0i64);
        // Every message ever appended (stored or not): id and topic + payload bytes.
        let mut appended: Vec<(i64, u64)> = Vec::new();

        for op in ops {
            match op {
                Op::Append(lens) => {
                    prop_assert_eq!(q.next_id(), next_id);
                    let batch: Vec<NewMessage> = lens.iter().enumerate().map(|(i, len)| {
                        clock += 1;
                        NewMessage {
                            seq: next_id + i as i64,
                            // Some topics are not ASCII: sizes count bytes, not characters.
                            topic: format!("t/{}{}", if i % 3 == 0 { "é" } else { "" }, next_id + i as i64),
                            payload: vec![b'x'; *len],
                            qos: Qos::AtLeastOnce,
                            retain: false,
                            created_ms: clock,
                            unsynced_mono_ms: None,
                        }
                    }).collect();
                    appended.extend(batch.iter().map(|m| (m.seq, (m.topic.len() + m.payload.len()) as u64)));
                    let got = q.append(&batch).unwrap();
                    let mut bytes: u64 = model.iter().map(size).sum();
                    let incoming: u64 = batch.iter().map(Queue::size_of).sum();
                    let mut take = batch.len();
                    let (mut evicted, mut refused) = (0, 0);
                    if bytes + incoming > opts.max_size {
                        if oldest {
                            while bytes + incoming > opts.max_size && !model.is_empty() {
                                bytes -= size(&model.pop_front().unwrap());
                                evicted += 1;
                            }
                        } else {
                            let mut room = opts.max_size - bytes;
                            take = 0;
                            for m in &batch {
                                if Queue::size_of(m) > room { break; }
                                room -= Queue::size_of(m);
                                take += 1;
                            }
                            refused = (batch.len() - take) as u64;
                        }
                    }
                    for m in &batch[..take] {
                        model.push_back(M { id: m.seq, topic: m.topic.clone(), payload: m.payload.clone(), created: m.created_ms });
                    }
                    dropped += evicted + refused;
                    prop_assert_eq!((got.stored, got.evicted_old, got.dropped_new), (take, evicted, refused));
                    next_id += batch.len() as i64;
                }
                Op::Ack(positions) => {
                    if model.is_empty() { continue; }
                    let mut ids: Vec<i64> = positions.iter().map(|p| model[p % model.len()].id).collect();
                    ids.dedup();
                    let n = q.confirm(&ids).unwrap();
                    let before = model.len();
                    model.retain(|m| !ids.contains(&m.id));
                    prop_assert_eq!(n, before - model.len());
                }
                Op::AckRead(positions) => {
                    if appended.is_empty() { continue; }
                    let picked: Vec<(i64, u64)> = positions.iter().map(|p| appended[p % appended.len()]).collect();
                    let rows: Confirmed = picked.into_iter().collect();
                    let n = q.confirm_read(&rows).unwrap();
                    let before = model.len();
                    model.retain(|m| !rows.ids().contains(&m.id));
                    prop_assert_eq!(n, before - model.len());
                }
                Op::AckOldest(n, bogus) => {
                    let n = n.min(model.len());
                    let mut rows: Confirmed = model.drain(..n).map(|m| (m.id, (m.topic.len() + m.payload.len()) as u64)).collect();
                    if bogus {
                        rows.push(next_id + 5, 10);
                    }
                    prop_assert_eq!(q.confirm_read(&rows).unwrap(), n);
                }
                Op::Reclaim(n) => {
                    let left = q.reclaim(n).unwrap();
                    prop_assert_eq!(left, q.reclaimable());
                }
                Op::AckUnknown => {
                    prop_assert_eq!(q.confirm(&[next_id + 1000, -5]).unwrap(), 0);
                }
                Op::Expire(k) => {
                    let cutoff = model.get(k).map_or(clock + 1, |m| m.created);
                    let n = q.expire(cutoff).unwrap();
                    let before = model.len();
                    model.retain(|m| m.created >= cutoff);
                    prop_assert_eq!(n, (before - model.len()) as u64);
                    expired += n;
                }
                Op::Reopen => {
                    drop(q);
                    q = Queue::open(&path, opts.clone()).unwrap();
                }
            }
            // After every step: the pending rows, their order, the sizes and the counters.
            let rows = q.fetch_after(0, 100_000).unwrap();
            let got: Vec<M> = rows.iter().map(|r| M { id: r.id, topic: r.topic.to_string(), payload: r.payload.to_vec(), created: r.created_ms }).collect();
            prop_assert_eq!(&got, &model.iter().cloned().collect::<Vec<_>>());
            let stats = q.stats(clock).unwrap();
            prop_assert_eq!(stats.pending, model.len() as u64);
            prop_assert_eq!(stats.bytes, model.iter().map(size).sum::<u64>());
            let (pending_bytes, released_bytes) = q.scan_bytes().unwrap();
            prop_assert_eq!(pending_bytes, stats.bytes);
            prop_assert_eq!(released_bytes, stats.reclaimable_bytes);
            prop_assert_eq!(q.bytes(), stats.bytes + stats.reclaimable_bytes);
            prop_assert_eq!(q.reclaimable(), released_bytes > 0);
            prop_assert_eq!(stats.dropped_full, dropped);
            prop_assert_eq!(stats.expired, expired);
            prop_assert!(stats.bytes <= opts.max_size || (oldest && model.len() <= 20));
            // Reading after the last row gives nothing; ids are strictly increasing.
            prop_assert!(got.windows(2).all(|w| w[0].id < w[1].id));
        }
    }
}
