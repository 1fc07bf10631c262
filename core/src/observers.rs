//! Observer registries: subscribers held by the registry, a handle per
//! subscription that unsubscribes when dropped, and notification outside the lock so
//! an observer may subscribe or unsubscribe while it is called.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

type List<T> = Mutex<Vec<(u64, Arc<T>)>>;

/// The observers of one kind of event.
pub(crate) struct Registry<T: ?Sized> {
    list: Arc<List<T>>,
    next_id: AtomicU64,
}

impl<T: ?Sized> Default for Registry<T> {
    fn default() -> Self {
        Self {
            list: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Registry<T> {
    /// Add an observer; it stays until the returned handle is dropped.
    pub(crate) fn subscribe(&self, observer: Arc<T>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.list).push((id, observer));
        let list: Weak<List<T>> = Arc::downgrade(&self.list);
        Subscription {
            id,
            cancel: Some(Box::new(move || {
                if let Some(list) = list.upgrade() {
                    lock(&list).retain(|(i, _)| *i != id);
                }
            })),
        }
    }

    /// The current observers, to call outside the lock.
    pub(crate) fn observers(&self) -> Vec<Arc<T>> {
        lock(&self.list)
            .iter()
            .map(|(_, o)| Arc::clone(o))
            .collect()
    }
}

fn lock<T: ?Sized>(list: &List<T>) -> MutexGuard<'_, Vec<(u64, Arc<T>)>> {
    list.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps a subscription alive; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct Subscription {
    id: u64,
    cancel: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    /// Unsubscribe now (the same as dropping the handle).
    pub fn cancel(mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    trait Hear: Send + Sync {
        fn hear(&self);
    }
    struct Counter(AtomicUsize);
    impl Hear for Counter {
        fn hear(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn dropping_or_cancelling_a_handle_unsubscribes() {
        let registry: Registry<dyn Hear> = Registry::default();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let first = registry.subscribe(counter.clone());
        let second = registry.subscribe(counter.clone());
        registry.observers().iter().for_each(|o| o.hear());
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        drop(first);
        second.cancel();
        assert!(registry.observers().is_empty());
    }
}
