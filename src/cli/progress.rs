//! Progress bars on standard error, for a person at a terminal only.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::util::progress::Progress;

/// Work of fewer steps than this gets no bar.
const MIN_STEPS: u64 = 100;

/// A [`Progress`] drawn as a bar with `message`; hidden when standard error is not a terminal (pipes, tests,
/// logs see clean output) or when the work is too small to need one.
pub struct Bar {
    message: &'static str,
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(message: &'static str) -> Bar {
        Bar { message, bar: None }
    }
}

impl Progress for Bar {
    fn start(&mut self, steps: u64) {
        if steps < MIN_STEPS || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.message);
        self.bar = Some(bar);
    }

    fn step(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
