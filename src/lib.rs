//! pslite

pub mod learn;
