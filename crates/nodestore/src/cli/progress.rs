//! Progress bars on standard error, one per store: drawn only when
//! standard error is a terminal, without colour, rates in whole records per
//! second.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar per store, fed by the migrator or the data generator.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Bars {
    /// Bars drawn on standard error, or nowhere when `hidden` or when
    /// standard error is not a terminal (a log file or a pipe gets no
    /// redrawn lines).
    pub(crate) fn new(hidden: bool) -> Bars {
        let multi = MultiProgress::new();
        if hidden || !std::io::stderr().is_terminal() {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            multi.set_draw_target(ProgressDrawTarget::stderr());
        }
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Moves `store`'s bar to `done` of `total`; a bar ends at its total.
    pub(crate) fn update(&self, store: &'static str, done: u64, total: u64) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(store).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            // The template has no colour, so NO_COLOR holds as it is.
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {pos:>9}/{len:<9} {rate:>12} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", whole_rate(state.per_sec()));
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(store);
            bar
        });
        bar.set_length(total.max(done));
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}

/// A rate as whole records per second: `8897588/s`, never a fraction.
pub(crate) fn whole_rate(per_sec: f64) -> String {
    let n = if per_sec.is_finite() && per_sec > 0.0 {
        per_sec.round() as u64
    } else {
        0
    };
    format!("{n}/s")
}

impl migrator::Progress for Bars {
    fn progress(&self, e: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
        self.update(e.store, e.done, e.total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_records_per_second() {
        assert_eq!(whole_rate(8_897_588.753_447_815), "8897589/s");
        assert_eq!(whole_rate(0.4), "0/s");
        assert_eq!(whole_rate(f64::NAN), "0/s");
        assert_eq!(whole_rate(f64::INFINITY), "0/s");
    }

    #[test]
    fn a_bar_ends_at_its_total() {
        let bars = Bars::new(true);
        bars.update("accounts", 10, 100);
        bars.update("accounts", 120, 100);
        let b = bars.bars.lock().unwrap();
        let bar = &b["accounts"];
        assert_eq!((bar.position(), bar.length()), (120, Some(120)));
        assert!(bar.is_finished());
    }
}
