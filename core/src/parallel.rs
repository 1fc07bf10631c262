//! CPU-bound work split over the machine's cores: loading a page of snapshots on a
//! device, applying a group of uploads on the relay. Results come back in the
//! order of the items, so callers stay deterministic whatever the thread count.

/// At most this many threads (the calling one included) work on one call.
const MAX_THREADS: usize = 4;

/// How many threads to use for `work` units when splitting pays from `min_work`
/// on: 1 (the calling thread alone) below that or on a single core.
pub(crate) fn threads_for(work: usize, min_work: usize) -> usize {
    if work < min_work {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_THREADS)
}

/// `f` over every item, in order, on `threads` threads: the items are cut into
/// that many runs of neighbours, the calling thread takes the first. A panic in
/// `f` is raised again on the calling thread.
pub(crate) fn map_mut<T, R, F>(items: &mut [T], threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(&mut T) -> R + Sync,
{
    if threads < 2 || items.len() < 2 {
        return items.iter_mut().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut parts = items.chunks_mut(chunk);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || part.iter_mut().map(f).collect::<Vec<_>>()))
            .collect();
        let mut results: Vec<R> = first.iter_mut().map(f).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => results.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}

/// [`map_mut`] over shared items.
pub(crate) fn map<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let mut refs: Vec<&T> = items.iter().collect();
    map_mut(&mut refs, threads, |item| f(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_items_whatever_the_threads() {
        let items: Vec<u32> = (0..103).collect();
        let expected: Vec<u32> = items.iter().map(|i| i * 3).collect();
        for threads in 1..=5 {
            assert_eq!(
                map(&items, threads, |i| i * 3),
                expected,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn items_are_changed_in_place() {
        let mut items: Vec<u32> = (0..10).collect();
        let old = map_mut(&mut items, 3, |i| {
            let old = *i;
            *i += 100;
            old
        });
        assert_eq!(old, (0..10).collect::<Vec<_>>());
        assert_eq!(items, (100..110).collect::<Vec<_>>());
    }

    #[test]
    fn small_work_stays_on_the_calling_thread() {
        assert_eq!(threads_for(5, 64), 1);
        assert!(threads_for(64, 64) >= 1);
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panic_on_another_thread_reaches_the_caller() {
        let items: Vec<u32> = (0..8).collect();
        map(&items, 4, |i| {
            if *i == 7 {
                panic!("boom");
            }
            *i
        });
    }
}
