// A page of memory shared by the supervisor and one executor: which job the executor is
// running, since when, and its hard deadline. Costs the executor one store per job.
//
// The supervisor reads it to kill a job at its hard time limit and, when an executor
// dies, to know which job it was running (that job is the suspect; the batch's other
// jobs are innocent and run again). It is an anonymous memfd the executor inherits.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const PAGE: usize = 4096;
const JOB: usize = 0;
const STARTED: usize = 1;
const DEADLINE: usize = 2;

pub struct StatusPage {
    ptr: *mut AtomicU64,
}

// SAFETY: the page is only accessed through atomics and lives as long as the value.
unsafe impl Send for StatusPage {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for StatusPage {}

/// What the executor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub job: i64,
    pub started_ns: u64,
    pub deadline_ns: u64,
}

impl StatusPage {
    /// A new page and the descriptor to hand to the child (inheritable: no CLOEXEC).
    pub fn create() -> io::Result<(StatusPage, OwnedFd)> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is
        // checked before use.
        let fd = unsafe { libc::memfd_create(c"sync_worker_status".as_ptr(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on a valid descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let page = StatusPage::map(fd.as_raw_fd())?;
        Ok((page, fd))
    }

    /// Map a page created by `create` (in the executor, from the inherited descriptor).
    pub fn map(fd: RawFd) -> io::Result<StatusPage> {
        // SAFETY: mapping PAGE bytes of a memfd at least that long, shared, at an
        // address of the kernel's choice; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(StatusPage {
            ptr: ptr.cast::<AtomicU64>(),
        })
    }

    fn cell(&self, i: usize) -> &AtomicU64 {
        // SAFETY: ptr is a page-aligned mapping of PAGE bytes that lives as long as
        // self, i < 3, and AtomicU64 has the size and alignment of u64.
        unsafe { &*self.ptr.add(i) }
    }

    /// Executor: job `job` starts now and must be over by `hard_limit`.
    pub fn start(&self, job: i64, hard_limit: Duration) {
        let now = monotonic_ns();
        self.cell(STARTED).store(now, Ordering::Relaxed);
        self.cell(DEADLINE).store(
            now.saturating_add(hard_limit.as_nanos().min(u64::MAX as u128) as u64),
            Ordering::Relaxed,
        );
        self.cell(JOB).store(job as u64, Ordering::Release);
    }

    /// Executor: no job is running.
    pub fn idle(&self) {
        self.cell(JOB).store(0, Ordering::Release);
    }

    /// Supervisor: the job being run, if any.
    pub fn current(&self) -> Option<Current> {
        loop {
            let job = self.cell(JOB).load(Ordering::Acquire);
            if job == 0 {
                return None;
            }
            let started_ns = self.cell(STARTED).load(Ordering::Relaxed);
            let deadline_ns = self.cell(DEADLINE).load(Ordering::Relaxed);
            if self.cell(JOB).load(Ordering::Acquire) == job {
                return Some(Current {
                    job: job as i64,
                    started_ns,
                    deadline_ns,
                });
            }
        }
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no reference to it
        // outlives self.
        unsafe {
            libc::munmap(self.ptr.cast(), PAGE);
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_between_mappings() {
        let (a, fd) = StatusPage::create().unwrap();
        let b = StatusPage::map(fd.as_raw_fd()).unwrap();
        assert_eq!(b.current(), None);
        a.start(42, Duration::from_secs(1));
        let cur = b.current().unwrap();
        assert_eq!(cur.job, 42);
        assert!(cur.deadline_ns >= cur.started_ns + 999_000_000);
        a.idle();
        assert_eq!(b.current(), None);
    }
}
