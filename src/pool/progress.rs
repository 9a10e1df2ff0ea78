//! Progress bars for the pool's `map` and `imap` calls (cargo feature `progress`, on
//! `indicatif`); without the feature, or when not asked for, nothing is drawn and this
//! costs nothing.

/// The bar of one call, shared by the chunks that advance it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar for a call of `total` items (a spinner with a count when unknown), drawn on
    /// stderr when `enabled`.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(crate) fn new(enabled: bool, total: Option<u64>) -> Progress {
        #[cfg(feature = "progress")]
        {
            let bar = enabled.then(|| match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            });
            Progress { bar }
        }
        #[cfg(not(feature = "progress"))]
        Progress {}
    }

    /// `n` more items are done.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(crate) fn advance(&self, n: u64) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// The call is over.
    pub(crate) fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
