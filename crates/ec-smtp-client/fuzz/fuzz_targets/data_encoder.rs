#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    ec_smtp_client::fuzzing::check_data_encoder(input);
});
