//! What pslite's command-line tools share: keeping the processes they
//! start from outliving them ([`parent`]).

pub mod parent;
