//! Progress bars on standard error, one per store.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar per store, fed by the migrator or the data generator.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Bars {
    /// Bars drawn on standard error, or nowhere when `hidden`.
    pub(crate) fn new(hidden: bool) -> Bars {
        let multi = MultiProgress::new();
        if hidden {
            multi.set_draw_target(ProgressDrawTarget::hidden());
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
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {pos:>9}/{len:<9} {per_sec:>12} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
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

impl migrator::Progress for Bars {
    fn progress(&self, e: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
        self.update(e.store, e.done, e.total);
        Ok(())
    }
}
