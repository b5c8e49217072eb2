#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pslite_core::fuzzing::slice(data));
