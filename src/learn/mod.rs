//! The machine-learning half of the training example: sparse logistic
//! regression trained by asynchronous SGD, as pure computation.

pub mod data;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
#[cfg(test)]
mod testing;
