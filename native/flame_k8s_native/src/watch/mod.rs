//! The watch layer: shared pod watches over the `api` layer, awaits on them, and pod readiness.

pub mod autoscaler;
pub mod await_pod;
pub mod follow;
pub mod hub;
pub mod readiness;
pub mod runner_state;
pub mod selector;
pub mod source;
#[cfg(test)]
mod test_support;
