//! The scenarios of issue 7 and of the service scheduler (issue 13). Each returns its figures or the error of
//! the correctness check that failed; details (raw samples, per-round and
//! per-level numbers) go to the JSON.

mod fleet;
mod footprint;
mod recovery;
mod replay;
mod restart;
mod services;
mod task_start;

use serde_json::Value;

use crate::report::Metric;
use crate::{Ctx, Scenario};

pub fn run(ctx: &Ctx, scenario: Scenario, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    match scenario {
        Scenario::TaskStart => task_start::run(ctx, details),
        Scenario::Restart => restart::run(ctx, details),
        Scenario::Footprint => footprint::run(ctx, details),
        Scenario::Recovery => recovery::run(ctx, details),
        Scenario::Fleet => fleet::run(ctx, details),
        Scenario::Replay => replay::run(ctx, details),
        Scenario::Services => services::run_one(ctx, details),
        Scenario::ServicesScale => services::run_scale(ctx, details),
    }
}

/// Removes every container labelled `label` (`key=value`) on drop, also
/// when a scenario fails half-way.
pub(crate) struct LabelledCleanup(pub String);

impl Drop for LabelledCleanup {
    fn drop(&mut self) {
        berth_e2e::remove_labelled(&self.0);
    }
}
