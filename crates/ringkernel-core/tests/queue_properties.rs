//! Property tests: both ring queues behave exactly like a bounded `VecDeque` model under any
//! sequence of push/pop/batch operations, and never drop or overwrite.

use proptest::prelude::*;
use ringkernel_core::queue::{spsc, PushError, SlotRing};
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Op {
    Push(u64),
    Pop,
    PushBatch(Vec<u64>),
    PopBatch(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u64>().prop_map(Op::Push),
        Just(Op::Pop),
        prop::collection::vec(any::<u64>(), 0..12).prop_map(Op::PushBatch),
        (0usize..12).prop_map(Op::PopBatch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn spsc_matches_model(cap_pow in 0u32..5, ops in prop::collection::vec(op(), 0..200)) {
        let cap = 1usize << cap_pow;
        let (mut p, mut c) = spsc::channel::<u64>(cap).unwrap();
        let mut model = VecDeque::new();
        for o in ops {
            match o {
                Op::Push(v) => {
                    let r = p.push(v);
                    if model.len() < cap {
                        prop_assert_eq!(r, Ok(()));
                        model.push_back(v);
                    } else {
                        prop_assert_eq!(r, Err(PushError::Full(v)));
                    }
                }
                Op::Pop => prop_assert_eq!(c.pop().ok(), model.pop_front()),
                Op::PushBatch(vs) => {
                    let mut q: VecDeque<u64> = vs.iter().copied().collect();
                    let n = p.push_batch(&mut q);
                    prop_assert_eq!(n, vs.len().min(cap - model.len()));
                    model.extend(&vs[..n]);
                    prop_assert_eq!(q.iter().copied().collect::<Vec<_>>(), vs[n..].to_vec());
                }
                Op::PopBatch(k) => {
                    let mut out = Vec::new();
                    let n = c.pop_batch(&mut out, k);
                    let expect: Vec<u64> = (0..n).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(n, k.min(n + model.len()));
                    prop_assert_eq!(out, expect);
                }
            }
            prop_assert_eq!(c.slots(), model.len());
        }
    }

    #[test]
    fn slot_ring_matches_model(cap_pow in 0u32..5, ops in prop::collection::vec(op(), 0..200)) {
        let cap = (1usize << cap_pow).max(2); // slot rings have at least two slots
        let ring = SlotRing::new(1 << cap_pow, 16).unwrap();
        prop_assert_eq!(ring.capacity() as usize, cap);
        let mut model = VecDeque::new();
        let read = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        for o in ops {
            match o {
                Op::Push(v) => {
                    let r = ring.try_push_with(|s| { s[..8].copy_from_slice(&v.to_le_bytes()); Ok::<_, ()>(8) }).unwrap();
                    prop_assert_eq!(r.is_some(), model.len() < cap);
                    if r.is_some() { model.push_back(v); }
                }
                Op::Pop => prop_assert_eq!(ring.try_pop_with(read), model.pop_front()),
                Op::PushBatch(vs) => {
                    let n = ring.try_push_batch_with(vs.len(), |i, s| {
                        s[..8].copy_from_slice(&vs[i].to_le_bytes());
                        Ok::<_, ()>(8)
                    }).unwrap();
                    prop_assert_eq!(n, vs.len().min(cap - model.len()));
                    model.extend(&vs[..n]);
                }
                Op::PopBatch(k) => {
                    let mut out = Vec::new();
                    let n = ring.pop_batch_with(k, |b| out.push(read(b)));
                    let expect: Vec<u64> = (0..n).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(out, expect);
                }
            }
            prop_assert_eq!(ring.len() as usize, model.len());
        }
    }
}
