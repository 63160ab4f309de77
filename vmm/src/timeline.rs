//! The boot timeline: k42vm's own milestones and the guest's boot-stage markers, timestamped
//! from the moment k42vm started.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared, append-only list of (time since start, label).
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    enabled: bool,
    marks: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Timeline {
    /// A timeline starting at `start`; it prints at exit only when `enabled`.
    pub fn new(start: Instant, enabled: bool) -> Timeline {
        let timeline = Timeline {
            start,
            enabled,
            marks: Arc::new(Mutex::new(Vec::new())),
        };
        timeline.mark_at(start, "k42vm started");
        timeline
    }

    /// Records `label` now.
    pub fn mark(&self, label: &str) {
        self.mark_at(Instant::now(), label);
    }

    fn mark_at(&self, at: Instant, label: &str) {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.push((at.saturating_duration_since(self.start), label.to_string()));
    }

    /// The marks so far, in order of recording.
    pub fn marks(&self) -> Vec<(Duration, String)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Renders the timeline: one `timeline <ms> <label>` line per mark.
    pub fn render(&self) -> String {
        self.marks()
            .iter()
            .map(|(t, label)| format!("timeline {:.3} {}\n", t.as_secs_f64() * 1000.0, label))
            .collect()
    }

    /// Prints the timeline to stderr if `--timeline` asked for it.
    pub fn print_if_enabled(&self) {
        if self.enabled {
            eprint!("{}", self.render());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_ordered_and_rendered_in_milliseconds() {
        let t = Timeline::new(Instant::now(), true);
        t.mark("first guest instruction");
        std::thread::sleep(Duration::from_millis(2));
        t.mark("guest shutdown");
        let marks = t.marks();
        assert_eq!(marks.len(), 3);
        assert!(marks[2].0 >= marks[1].0 + Duration::from_millis(2));
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("timeline 0.000 k42vm started"));
        assert!(lines[2].ends_with(" guest shutdown"));
        let ms: f64 = lines[2].split(' ').nth(1).unwrap().parse().unwrap();
        assert!(ms >= 2.0);
    }
}
