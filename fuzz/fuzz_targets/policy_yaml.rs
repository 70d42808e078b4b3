//! The policy loader: any text is read as YAML documents the way `imgate policy lint` and
//! `imgate up` read policy files, each document taken as an IMPolicy, and the policies
//! compiled. Every step gives a value or an error that names the file, never a panic.
#![no_main]

use std::path::Path;

use imgate_crds::policy::IMPolicy;
use imgate_dataplane::inspect::policy::CompiledPolicy;
use libfuzzer_sys::fuzz_target;

#[path = "../../src/manifest.rs"]
#[allow(dead_code)]
mod manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    let documents = match manifest::parse(file, text) {
        Ok(documents) => documents,
        Err(error) => {
            assert_eq!(error.file, file);
            return;
        }
    };
    let policies: Vec<IMPolicy> = documents
        .into_iter()
        .filter_map(|document| serde_json::from_value(document.value).ok())
        .collect();
    let _ = CompiledPolicy::compile("fuzz", &policies);
});
