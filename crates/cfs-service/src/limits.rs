//! What one client, and all of them together, may take of the service:
//! requests in flight per user and in all, live mounts per user, image
//! reads and validations at once (each holds the image and its tree in
//! memory), and the time a request may take to arrive. A user is the uid
//! a client is charged to (`Peer::account_uid`: the owner of its user
//! namespaces), not the uid it runs as.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The service's limits (`cfs mount-service` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Largest image accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_image_bytes: u64,
    /// Most directory entries in an image.
    #[arg(long, value_name = "N", default_value_t = 4 << 20)]
    pub max_image_entries: u64,
    /// Deepest directory nesting in an image.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_image_depth: usize,
    /// Most live service mounts per user.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_mounts_per_user: usize,
    /// Most requests in progress per user.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_requests_per_user: usize,
    /// Most connections in progress in all.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections: usize,
    /// Most images read and validated at once (each costs about three
    /// times its size in memory).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_validations: usize,
    /// Seconds a client may take to send its request, and a request may
    /// wait for its turn to be validated.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub request_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_bytes: 256 << 20,
            max_image_entries: 4 << 20,
            max_image_depth: 256,
            max_mounts_per_user: 64,
            max_requests_per_user: 4,
            max_connections: 64,
            max_validations: 2,
            request_timeout: 30,
        }
    }
}

impl Limits {
    /// The request timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout.max(1))
    }

    /// The image limits for validation.
    pub fn image(&self) -> crate::validate::ImageLimits {
        crate::validate::ImageLimits {
            max_bytes: self.max_image_bytes,
            max_entries: self.max_image_entries,
            max_depth: self.max_image_depth,
        }
    }
}

/// Counts of what is in progress; a slot is given back when dropped.
#[derive(Debug, Default)]
pub struct Gate {
    connections: Mutex<usize>,
    per_uid: Mutex<HashMap<u32, usize>>,
    /// Mounts being made, per uid: counted with the live ones, under this
    /// lock, so that parallel requests can't all pass the check.
    mounting: Mutex<HashMap<u32, usize>>,
    validations: Mutex<usize>,
    validation_done: Condvar,
}

/// A request of one uid in progress.
#[derive(Debug)]
pub struct UidSlot<'a>(&'a Gate, u32);

/// A mount of one uid being made: counts against its mount limit until
/// dropped (once the mount is recorded, or given up).
#[derive(Debug)]
pub struct MountSlot<'a>(&'a Gate, u32);

/// Why a mount slot was not given.
#[derive(Debug, PartialEq, Eq)]
pub enum MountRefusal<E> {
    /// The uid has `live` mounts and `making` more, `max` in all.
    Full {
        /// Its live mounts.
        live: usize,
        /// Its mounts being made.
        making: usize,
    },
    /// Its live mounts could not be counted.
    Count(E),
}

/// An image validation in progress.
#[derive(Debug)]
pub struct ValidationSlot<'a>(&'a Gate);

impl Gate {
    /// Counts one more connection, if fewer than `max` are in progress;
    /// [`Gate::leave_connection`] when it ends.
    pub fn enter_connection(&self, max: usize) -> bool {
        let mut n = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let ok = *n < max;
        if ok {
            *n += 1;
        }
        ok
    }

    /// A connection counted by [`Gate::enter_connection`] ended.
    pub fn leave_connection(&self) {
        let mut n = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
    }

    /// A request slot for `uid`, if it has fewer than `max` in progress.
    pub fn request(&self, uid: u32, max: usize) -> Option<UidSlot<'_>> {
        let mut m = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_default();
        (*n < max).then(|| {
            *n += 1;
            UidSlot(self, uid)
        })
    }

    /// A mount slot for `uid`, if its live mounts (`live()`, counted under
    /// the lock) and those being made are fewer than `max`: checking and
    /// counting are one step.
    pub fn mount<E>(
        &self,
        uid: u32,
        max: usize,
        live: impl FnOnce() -> Result<usize, E>,
    ) -> Result<MountSlot<'_>, MountRefusal<E>> {
        let mut m = self.mounting.lock().unwrap_or_else(|p| p.into_inner());
        let live = live().map_err(MountRefusal::Count)?;
        let making = m.get(&uid).copied().unwrap_or(0);
        if live + making >= max {
            return Err(MountRefusal::Full { live, making });
        }
        *m.entry(uid).or_default() += 1;
        Ok(MountSlot(self, uid))
    }

    /// One of `max` validation slots, waited for until `deadline`.
    pub fn validation(&self, max: usize, deadline: Instant) -> Option<ValidationSlot<'_>> {
        let mut n = self.validations.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= max.max(1) {
            let left = deadline.checked_duration_since(Instant::now())?;
            n = self
                .validation_done
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        Some(ValidationSlot(self))
    }
}

impl Drop for UidSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.0.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Drop for MountSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.0.mounting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Drop for ValidationSlot<'_> {
    fn drop(&mut self) {
        *self.0.validations.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.validation_done.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let g = Gate::default();
        let a = g.request(1000, 2).unwrap();
        let _b = g.request(1000, 2).unwrap();
        assert!(g.request(1000, 2).is_none(), "a third request of uid 1000");
        assert!(g.request(1001, 2).is_some(), "another uid is not held up");
        drop(a);
        assert!(g.request(1000, 2).is_some());
        assert!(g.enter_connection(1));
        assert!(!g.enter_connection(1));
        g.leave_connection();
        assert!(g.enter_connection(1));
        let soon = Instant::now() + Duration::from_secs(5);
        let v = g.validation(1, soon).unwrap();
        let past = Instant::now();
        assert!(g.validation(1, past).is_none(), "a second validation");
        drop(v);
        let _v = g.validation(1, soon).unwrap();
    }

    #[test]
    fn parallel_mounts_count_against_the_limit_before_they_are_made() {
        let g = Gate::default();
        let live = || Ok::<_, ()>(0);
        let a = g.mount(1000, 1, live).unwrap();
        assert_eq!(
            g.mount(1000, 1, live).unwrap_err(),
            MountRefusal::Full { live: 0, making: 1 },
            "a second mount while the first is being made"
        );
        assert!(g.mount(1001, 1, live).is_ok(), "another uid");
        drop(a);
        assert!(g.mount(1000, 1, live).is_ok(), "given back");
        assert_eq!(
            g.mount(1000, 1, || Ok::<_, ()>(1)).unwrap_err(),
            MountRefusal::Full { live: 1, making: 0 }
        );
        assert_eq!(
            g.mount(1000, 1, || Err::<usize, _>("no cache"))
                .unwrap_err(),
            MountRefusal::Count("no cache")
        );
    }

    #[test]
    fn a_validation_slot_is_waited_for_until_the_deadline() {
        let g = Gate::default();
        let held = g.validation(1, Instant::now()).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                g.validation(1, Instant::now() + Duration::from_secs(20))
                    .is_some()
            });
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
            assert!(waiter.join().unwrap(), "the slot given back was taken");
        });
    }
}
