//! The lab's private Tor network, as a test waits for it: started once per lab, whichever test
//! needs it first.

use std::{sync::Mutex, time::Duration};

use crate::testlab::lock;
use crate::{lab_tor, OrFail, TestLab};

/// Serialises starting Tor networks (two starts at once would run every node twice).
static TOR_START: Mutex<()> = Mutex::new(());

impl TestLab {
    /// Starts the lab's private Tor network unless it was started before (and perhaps stopped
    /// on purpose since: that is the test's to undo, with `lab_tor::start`). Returns at once;
    /// [`TestLab::wait_tor`] waits for a consensus.
    pub fn start_tor(&self) {
        let _one_at_a_time = lock(&TOR_START);
        if lab_tor::ever_started(&self.lab) {
            return;
        }
        lab_tor::setup(&self.lab)
            .and_then(|()| lab_tor::start(&self.lab))
            .or_fail(format_args!("lab {}: starting Tor", self.lab.prefix()));
    }

    /// Waits until the lab's private Tor network (started first if it never was) has a fresh
    /// consensus listing every node (bounded by [`lab_tor::READY_TIMEOUT`]); returns how long
    /// that took.
    pub fn wait_tor(&self) -> Duration {
        self.start_tor();
        lab_tor::wait_ready(&self.lab, lab_tor::READY_TIMEOUT)
            .or_fail(format_args!("lab {}", self.lab.prefix()))
    }

    /// Waits until the lab's onion service has published its descriptor (bounded by
    /// [`lab_tor::ONION_TIMEOUT`]); returns how long that took.
    pub fn wait_onion(&self) -> Duration {
        self.start_tor();
        lab_tor::wait_onion(&self.lab, lab_tor::ONION_TIMEOUT)
            .or_fail(format_args!("lab {}", self.lab.prefix()))
    }
}
