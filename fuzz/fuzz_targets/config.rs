//! Any text offered as a config file parses and validates to a config or a
//! clean error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::from_toml(text) {
        if let Ok(cfg) = cfg.validate() {
            // A valid config is usable: its derived values do not panic.
            let _ = cfg.limits.to_limits();
            let _ = format!("{cfg:?}");
        }
    }
});
