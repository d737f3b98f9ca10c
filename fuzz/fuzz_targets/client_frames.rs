#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conclave_gateway::fuzz::client_frames(data);
});
