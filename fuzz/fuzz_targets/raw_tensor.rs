//! The raw tensor codec (KServe's binary extension and raw_input_contents): any bytes
//! decode to elements or an error, and what decodes encodes back to the same bytes.
#![no_main]

use ferroserve::raw_tensor;
use ferroserve::tensor::DataType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, a, b, raw @ ..] = data else {
        return;
    };
    let dtype = DataType::ALL[*selector as usize % DataType::ALL.len()];
    let count = u16::from_le_bytes([*a, *b]) as usize;
    if let Ok(decoded) = raw_tensor::decode(dtype, count, raw) {
        let mut again = Vec::new();
        raw_tensor::encode(&decoded, &mut again);
        if dtype != DataType::Bool {
            assert_eq!(again, raw, "{dtype:?} does not round-trip");
        }
    }
});
