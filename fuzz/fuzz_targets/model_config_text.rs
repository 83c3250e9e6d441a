//! Any model config file, in TF Serving's protobuf text format or in TOML, parses to
//! a list or an error: never a panic.
#![no_main]

use ferroserve::model_config_list::ModelConfigList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = ModelConfigList::parse_text_format(text) {
        let _ = list.validate();
    }
    if let Ok(list) = ModelConfigList::parse_toml(text) {
        let _ = list.validate();
    }
});
