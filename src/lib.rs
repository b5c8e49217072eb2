//! pslite
