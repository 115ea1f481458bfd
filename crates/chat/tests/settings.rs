//! The assistant's settings carry the upstream keys in plain text (they are sent to their
//! upstream); printing the settings must never show them.

use chat::RagSettings;

#[test]
fn debug_never_prints_the_upstream_keys() {
    let s = RagSettings {
        llm_url: "http://llm.example/v1".into(),
        llm_api_key: Some("sk-llm-key-value".into()),
        ncbi_api_key: Some("ncbi-key-value".into()),
        s2_api_key: Some("s2-key-value".into()),
        ..RagSettings::default()
    };
    let printed = format!("{s:?}");
    for key in ["sk-llm-key-value", "ncbi-key-value", "s2-key-value"] {
        assert!(!printed.contains(key), "{key} printed: {printed}");
    }
    // The rest is still there to debug with, and a set key says so.
    assert!(printed.contains("http://llm.example/v1"), "{printed}");
    assert_eq!(printed.matches("<redacted>").count(), 3, "{printed}");
}
