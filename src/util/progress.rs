//! How long work reports how far it is (an import's row checks, `render --all`); the command line draws a
//! progress bar with it, everything else ignores it.

/// Told how far a piece of work is.
pub trait Progress {
    /// `steps` steps are about to be done.
    fn start(&mut self, steps: u64) {
        let _ = steps;
    }
    /// One more step is done.
    fn step(&mut self) {}
    /// Every step is done.
    fn finish(&mut self) {}
}

/// No progress reporting.
pub struct Silent;

impl Progress for Silent {}
