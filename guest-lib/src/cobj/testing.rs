//! Test support: CPUs for clustered objects in host tests, where each test thread says which
//! CPU it stands for.

extern crate std;

use std::cell::Cell;

use super::Cpus;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// `n` CPUs; the current one is the calling thread's (see [`on`]), 0 until it says.
pub struct ThreadCpus(pub usize);

impl Cpus for ThreadCpus {
    fn current(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn count(&self) -> usize {
        self.0
    }
}

/// Runs `f` as CPU `cpu` (for the calling thread, from now on).
pub fn on<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    CPU.with(|c| c.set(cpu));
    f()
}
