//! Persistent worker threads that run a grid's blocks.
//!
//! A launch used to start its worker threads and join them again
//! (`std::thread::scope`), which costs tens of microseconds per launch and
//! dominates the small kernels an inference step is made of. The pool's
//! threads are started the first time a launch wants them and then wait
//! for work for the life of the process.
//!
//! A launch hands the pool a *job* — the function that runs blocks until
//! none is left, and how many helpers may join it — and runs that same
//! function on its own thread too. Because the launching thread always
//! takes part, a launch makes progress even when every pool thread is busy
//! with other launches (from other streams or processes' threads), so two
//! launches never wait on each other. Before [`run`] returns it withdraws
//! whatever the helpers have not claimed yet and waits for the helpers
//! that did, which is what makes lending them a borrowed closure sound.
//!
//! Nothing is allocated per launch: the job lives on the launching
//! thread's stack and the queue keeps its capacity.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Most helper threads the pool starts (a launch asks for at most 64
/// workers, itself included).
const MAX_HELPERS: usize = 63;

/// CPUs this process may use, asked once: `available_parallelism` reads
/// cgroup files on Linux, far too slow to ask per launch.
pub fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One launch's work, on the launching thread's stack.
struct Job<'a> {
    work: &'a (dyn Fn(u32) + Sync),
    /// Helpers running `work` now; changed under the pool's lock.
    running: AtomicUsize,
}

/// A job waiting for helpers. `job` points at a [`Job`] that outlives the
/// entry: [`run`] removes the entry and waits for `running` to drop to
/// zero before its `Job` goes out of scope.
struct Entry {
    job: *const Job<'static>,
    /// Helpers that may still join.
    slots: usize,
    /// The `smid` the next helper gets (the launching thread is 0).
    next_smid: u32,
}

// SAFETY: an entry only travels between threads under the pool's lock, and
// the `Job` it points to is `Sync` (a `Sync` closure and an atomic) and
// alive for as long as the entry can be reached (see `Entry`).
unsafe impl Send for Entry {}

struct State {
    queue: VecDeque<Entry>,
    /// Helper threads started so far.
    helpers: usize,
}

struct Pool {
    state: Mutex<State>,
    /// Signalled when a job is queued.
    work: Condvar,
    /// Signalled when a helper finishes its part of a job.
    done: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(16),
            helpers: 0,
        }),
        work: Condvar::new(),
        done: Condvar::new(),
    })
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock (the work runs outside it),
        // so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts helpers until there are `want` (or starting one fails: the
    /// launching thread then does more of the work itself).
    fn grow(&'static self, st: &mut State, want: usize) {
        while st.helpers < want.min(MAX_HELPERS) {
            let started = std::thread::Builder::new()
                .name(format!("vgpu-ptx-{}", st.helpers + 1))
                .spawn(move || self.helper());
            if started.is_err() {
                break;
            }
            st.helpers += 1;
        }
    }

    fn helper(&self) {
        let mut st = self.lock();
        loop {
            let Some(e) = st.queue.front_mut() else {
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let (job, smid) = (e.job, e.next_smid);
            e.next_smid += 1;
            e.slots -= 1;
            if e.slots == 0 {
                st.queue.pop_front();
            }
            // SAFETY: the entry was still queued, so its job is alive, and
            // stays so until `running` is back to zero (see `Entry`).
            let job = unsafe { &*job };
            job.running.fetch_add(1, Ordering::Relaxed);
            drop(st);
            // The work catches its blocks' panics itself; this only keeps a
            // helper (and the launch waiting for it) alive if that failed.
            let _ = catch_unwind(AssertUnwindSafe(|| (job.work)(smid)));
            st = self.lock();
            // The last touch of `job`: once the launching thread sees zero
            // under the lock, it may return.
            job.running.fetch_sub(1, Ordering::Relaxed);
            self.done.notify_all();
        }
    }
}

/// Runs `work(smid)` on the calling thread (smid 0) and on up to
/// `workers - 1` pool threads (smids 1, 2, ...) at once, and returns when
/// every one of them has returned. `work` must itself stop when nothing is
/// left to do: a helper may join late, after the others finished.
pub(crate) fn run(workers: usize, work: &(dyn Fn(u32) + Sync)) {
    let helpers = workers.saturating_sub(1).min(MAX_HELPERS);
    if helpers == 0 {
        work(0);
        return;
    }
    let p = pool();
    let job = Job {
        work,
        running: AtomicUsize::new(0),
    };
    // SAFETY: only the lifetime is erased; `job` outlives every use through
    // the entry, as the wait below ensures.
    let erased: *const Job<'static> = unsafe { std::mem::transmute(&job as *const Job<'_>) };
    {
        let mut st = p.lock();
        p.grow(&mut st, helpers);
        st.queue.push_back(Entry {
            job: erased,
            slots: helpers,
            next_smid: 1,
        });
    }
    if helpers == 1 {
        p.work.notify_one();
    } else {
        p.work.notify_all();
    }
    work(0);
    let mut st = p.lock();
    // Helpers that have not joined yet would find nothing left to do.
    st.queue.retain(|e| !std::ptr::eq(e.job, erased));
    while job.running.load(Ordering::Relaxed) > 0 {
        st = p.done.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_item_runs_once_and_the_pool_is_reused() {
        for round in 0..200u64 {
            let next = AtomicU64::new(0);
            let sum = AtomicU64::new(0);
            let n = 1 + round % 37;
            run(4, &|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                sum.fetch_add(i + 1, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), n * (n + 1) / 2);
        }
        // The pool grew to what the launches asked, once (other tests in
        // this process ask for fewer).
        assert!(pool().lock().helpers <= 3);
    }

    #[test]
    fn concurrent_launches_do_not_wait_on_each_other() {
        // Two launches whose work waits for the other's: each makes
        // progress on its own launching thread even with every helper busy.
        let flags = [AtomicU64::new(0), AtomicU64::new(0)];
        std::thread::scope(|s| {
            for me in 0..2 {
                let flags = &flags;
                s.spawn(move || {
                    run(2, &|smid| {
                        if smid == 0 {
                            flags[me].store(1, Ordering::SeqCst);
                            while flags[1 - me].load(Ordering::SeqCst) == 0 {
                                std::hint::spin_loop();
                            }
                        }
                    })
                });
            }
        });
    }
}
