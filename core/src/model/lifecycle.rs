//! The deterministic fold from a merged set of status events to a status.
//!
//! Every replica that holds the same set of events computes the same result, whatever
//! order the events arrived in:
//!
//! 1. Events are linearised: a topological order of the causal graph (each event's
//!    `after` list), ties broken by `(hlc, actor, id)`.
//! 2. Conflicts are a property of the set: two *concurrent* events (neither is in the
//!    other's history) whose kinds the document's rules call incompatible, and that no
//!    `conflict_resolved` event has both in its history. While any exists, the status is
//!    `Conflict`, naming the first such pair in linear order.
//! 3. Otherwise the linearised events are folded: an event that causally follows the
//!    event behind the current status replaces it; a concurrent one replaces it only if
//!    its status has equal or higher precedence (cancelled beats packed, delivered beats
//!    in transit). An absorbing status (cancelled, delivered) is only left through
//!    `conflict_resolved`.

use super::event::StatusEvent;
use crate::hlc::Hlc;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;

/// The rules of one document kind's lifecycle.
pub trait Lifecycle {
    /// The event kinds of this document.
    type Kind: Copy + Eq + Hash + Debug + Ord + 'static;
    /// The statuses (without the conflict state).
    type State: Copy + Eq + Debug;

    /// The `conflict_resolved` kind.
    const RESOLVES: Self::Kind;
    /// The kind that closes one delivery attempt and opens the next, if any.
    const ATTEMPT_MARKER: Option<Self::Kind>;

    /// The status an event of this kind leads to, if it changes status at all.
    fn target(kind: Self::Kind) -> Option<Self::State>;
    /// Which status wins between concurrent events (higher wins).
    fn precedence(state: Self::State) -> u8;
    /// A status that only `conflict_resolved` can leave.
    fn absorbing(state: Self::State) -> bool;
    /// Whether two concurrent events contradict each other.
    fn incompatible(a: &EventFacts<'_, Self::Kind>, b: &EventFacts<'_, Self::Kind>) -> bool;
    /// The strict rule for recording an event locally in the given status.
    fn allowed(from: Option<Self::State>, kind: Self::Kind) -> bool;
    /// The kind's name as stored (`picked_up`).
    fn kind_name(kind: Self::Kind) -> &'static str;
}

/// What the incompatibility rule may look at for one event.
#[derive(Debug)]
pub struct EventFacts<'a, K> {
    /// The event.
    pub event: &'a StatusEvent<K>,
    /// 1 + the number of attempt-closing events in its history.
    pub attempt: u32,
}

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictingEvent {
    /// Event id.
    pub id: String,
    /// Event kind name (`delivered`, `cancelled`…).
    pub kind: String,
    /// Device that recorded it.
    pub actor: String,
    /// When it was recorded.
    pub at: Hlc,
}

/// Two concurrent events that contradict each other, awaiting a dispatcher's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The earlier of the two in linear order.
    pub first: ConflictingEvent,
    /// The later of the two in linear order.
    pub second: ConflictingEvent,
}

/// The result of folding a document's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded<S> {
    /// The status, when no conflict is open (None when there are no status events).
    pub state: Option<S>,
    /// Every unresolved conflict, in linear order. Non-empty means status `conflict`.
    pub conflicts: Vec<Conflict>,
    /// Indices into the event list in linear (timeline) order, duplicates removed.
    pub timeline: Vec<usize>,
    /// Ids of the events no other event follows: what a new event is recorded `after`.
    pub frontier: Vec<String>,
}

/// Small fixed-size bitset over event positions.
#[derive(Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn with_len(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
}

/// Fold a document's events. See the module docs for the rules.
pub fn fold<L: Lifecycle>(events: &[StatusEvent<L::Kind>]) -> Folded<L::State> {
    // Distinct events, first occurrence in the (converged) list wins.
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut unique: Vec<usize> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !by_id.contains_key(e.id.as_str()) {
            by_id.insert(e.id.as_str(), i);
            unique.push(i);
        }
    }

    let order = linearise(events, &unique, &by_id);
    let n = order.len();
    // Position of each event index in the linear order.
    let mut pos = HashMap::with_capacity(n);
    for (p, &i) in order.iter().enumerate() {
        pos.insert(i, p);
    }

    // Ancestor sets, by linear position. Parents later in the order are ignored,
    // which also neutralises cycles a faulty device might write.
    let mut ancestors: Vec<Bits> = Vec::with_capacity(n);
    let mut has_child = vec![false; n];
    for (p, &i) in order.iter().enumerate() {
        let mut bits = Bits::with_len(n);
        for parent in &events[i].after {
            if let Some(&pi) = by_id.get(parent.as_str()) {
                let pp = pos[&pi];
                if pp < p {
                    bits.set(pp);
                    let parent_bits = ancestors[pp].clone();
                    bits.union(&parent_bits);
                    has_child[pp] = true;
                }
            }
        }
        ancestors.push(bits);
    }

    let attempts: Vec<u32> = (0..n)
        .map(|p| {
            let closed = match L::ATTEMPT_MARKER {
                Some(marker) => (0..p)
                    .filter(|&q| ancestors[p].get(q) && events[order[q]].kind == marker)
                    .count(),
                None => 0,
            };
            1 + u32::try_from(closed).unwrap_or(u32::MAX - 1)
        })
        .collect();
    let facts = |p: usize| EventFacts {
        event: &events[order[p]],
        attempt: attempts[p],
    };
    let concurrent = |a: usize, b: usize| !ancestors[a].get(b) && !ancestors[b].get(a);

    let resolvers: Vec<usize> = (0..n)
        .filter(|&p| events[order[p]].kind == L::RESOLVES)
        .collect();
    let mut conflicts = Vec::new();
    for b in 0..n {
        for a in 0..b {
            if concurrent(a, b)
                && L::incompatible(&facts(a), &facts(b))
                && !resolvers
                    .iter()
                    .any(|&r| ancestors[r].get(a) && ancestors[r].get(b))
            {
                conflicts.push(Conflict {
                    first: describe::<L>(&events[order[a]]),
                    second: describe::<L>(&events[order[b]]),
                });
            }
        }
    }
    conflicts.sort_by(|x, y| {
        (&x.first.at, &x.first.id, &x.second.at).cmp(&(&y.first.at, &y.first.id, &y.second.at))
    });

    let mut state: Option<L::State> = None;
    let mut cause: Option<usize> = None;
    for p in 0..n {
        let event = &events[order[p]];
        let resolving = event.kind == L::RESOLVES;
        let target = if resolving {
            event.resolution.and_then(L::target)
        } else {
            L::target(event.kind)
        };
        let Some(target) = target else { continue };
        let replace = match (state, cause) {
            (Some(current), _) if L::absorbing(current) && !resolving => false,
            (_, Some(c)) if !ancestors[p].get(c) && !resolving => {
                state.is_none_or(|current| L::precedence(target) >= L::precedence(current))
            }
            _ => true,
        };
        if replace {
            state = Some(target);
            cause = Some(p);
        }
    }

    let frontier = (0..n)
        .filter(|&p| !has_child[p])
        .map(|p| events[order[p]].id.clone())
        .collect();
    Folded {
        state,
        conflicts,
        timeline: order,
        frontier,
    }
}

fn describe<L: Lifecycle>(e: &StatusEvent<L::Kind>) -> ConflictingEvent {
    ConflictingEvent {
        id: e.id.clone(),
        kind: L::kind_name(e.kind).to_owned(),
        actor: e.actor.clone(),
        at: e.at,
    }
}

/// Kahn's algorithm over the `after` links, smallest `(at, actor, id)` first.
fn linearise<K>(
    events: &[StatusEvent<K>],
    unique: &[usize],
    by_id: &HashMap<&str, usize>,
) -> Vec<usize> {
    let mut indegree: HashMap<usize, usize> = unique.iter().map(|&i| (i, 0)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in unique {
        let mut parents: Vec<usize> = events[i]
            .after
            .iter()
            .filter_map(|a| by_id.get(a.as_str()).copied())
            .filter(|&p| p != i)
            .collect();
        parents.sort_unstable();
        parents.dedup();
        for p in parents {
            children.entry(p).or_default().push(i);
            *indegree.entry(i).or_default() += 1;
        }
    }
    let key = |i: usize| {
        Reverse((
            events[i].at,
            events[i].actor.clone(),
            events[i].id.clone(),
            i,
        ))
    };
    let mut ready: BinaryHeap<_> = unique
        .iter()
        .filter(|i| indegree[i] == 0)
        .map(|&i| key(i))
        .collect();
    let mut out = Vec::with_capacity(unique.len());
    let mut done = vec![false; events.len()];
    loop {
        while let Some(Reverse((_, _, _, i))) = ready.pop() {
            if done[i] {
                continue;
            }
            out.push(i);
            done[i] = true;
            for &c in children.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(d) = indegree.get_mut(&c) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(key(c));
                    }
                }
            }
        }
        // A cycle (only a faulty writer can make one): release its smallest member.
        match unique.iter().filter(|&&i| !done[i]).map(|&i| key(i)).max() {
            Some(k) => ready.push(k),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::delivery::{DeliveryEventKind as D, DeliveryLifecycle, DeliveryState};
    use crate::model::order::{OrderEventKind as O, OrderLifecycle, OrderState};

    fn ev<K>(id: &str, kind: K, wall: i64, after: &[&str]) -> StatusEvent<K> {
        StatusEvent {
            id: id.into(),
            kind,
            actor: format!("dev-{id}"),
            at: Hlc::at_wall_ms(wall),
            after: after.iter().map(|s| s.to_string()).collect(),
            location: None,
            note: None,
            resolution: None,
            courier: None,
        }
    }

    #[test]
    fn a_causal_chain_folds_to_its_last_event() {
        let events = vec![
            ev("a", O::Placed, 1, &[]),
            ev("b", O::Confirmed, 2, &["a"]),
            ev("c", O::Picking, 3, &["b"]),
        ];
        let f = fold::<OrderLifecycle>(&events);
        assert_eq!(f.state, Some(OrderState::Picking));
        assert!(f.conflicts.is_empty());
        assert_eq!(f.frontier, vec!["c".to_string()]);
    }

    #[test]
    fn causality_beats_clocks() {
        // A device with a fast clock confirmed; a slow one then picked, having seen it.
        let events = vec![
            ev("a", O::Placed, 1, &[]),
            ev("b", O::Confirmed, 900, &["a"]),
            ev("c", O::Picking, 5, &["b"]),
        ];
        let f = fold::<OrderLifecycle>(&events);
        assert_eq!(f.state, Some(OrderState::Picking));
        assert_eq!(f.timeline, vec![0, 1, 2]);
    }

    #[test]
    fn a_concurrent_cancellation_wins_over_packing_without_a_conflict() {
        let events = [
            ev("a", O::Placed, 1, &[]),
            ev("b", O::Picking, 2, &["a"]),
            ev("c", O::Packed, 9, &["b"]),
            ev("x", O::Cancelled, 3, &["a"]),
        ];
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
            let shuffled: Vec<_> = perm.iter().map(|&i| events[i].clone()).collect();
            let f = fold::<OrderLifecycle>(&shuffled);
            assert_eq!(f.state, Some(OrderState::Cancelled));
            assert!(f.conflicts.is_empty());
        }
    }

    #[test]
    fn cancelled_concurrent_with_completed_is_a_conflict_until_resolved() {
        let mut events = vec![
            ev("a", O::Placed, 1, &[]),
            ev("b", O::Packed, 2, &["a"]),
            ev("done", O::Completed, 5, &["b"]),
            ev("stop", O::Cancelled, 4, &["b"]),
        ];
        let f = fold::<OrderLifecycle>(&events);
        assert_eq!(f.conflicts.len(), 1);
        assert_eq!(f.conflicts[0].first.id, "stop");
        assert_eq!(f.conflicts[0].second.id, "done");
        let mut resolve = ev("r", O::ConflictResolved, 6, &["done", "stop"]);
        resolve.resolution = Some(O::Completed);
        events.push(resolve);
        let f = fold::<OrderLifecycle>(&events);
        assert!(f.conflicts.is_empty());
        assert_eq!(f.state, Some(OrderState::Completed));
    }

    #[test]
    fn delivered_conflicts_with_a_failed_attempt_only_on_the_same_attempt() {
        let base = vec![
            ev("a", D::Assigned, 1, &[]),
            ev("p", D::PickedUp, 2, &["a"]),
        ];
        let mut same = base.clone();
        same.push(ev("ok", D::Delivered, 3, &["p"]));
        same.push(ev("fail", D::FailedAttempt, 4, &["p"]));
        assert_eq!(fold::<DeliveryLifecycle>(&same).conflicts.len(), 1);

        // Second attempt delivered by the courier, while someone recorded a failure
        // on the first attempt concurrently with the retry: different attempts.
        let mut later = base;
        later.push(ev("f1", D::FailedAttempt, 3, &["p"]));
        later.push(ev("t", D::InTransit, 4, &["f1"]));
        later.push(ev("ok", D::Delivered, 5, &["t"]));
        later.push(ev("f1b", D::FailedAttempt, 4, &["p"]));
        let f = fold::<DeliveryLifecycle>(&later);
        assert!(f.conflicts.is_empty(), "{:?}", f.conflicts);
        assert_eq!(f.state, Some(DeliveryState::Delivered));
    }

    #[test]
    fn duplicates_and_cycles_do_not_break_the_fold() {
        let events = vec![
            ev("a", D::Assigned, 1, &[]),
            ev("a", D::Assigned, 1, &[]),
            ev("p", D::PickedUp, 2, &["a", "q"]),
            ev("q", D::InTransit, 3, &["p"]),
        ];
        let f = fold::<DeliveryLifecycle>(&events);
        assert_eq!(f.timeline.len(), 3);
        assert!(f.state.is_some());
    }
}
