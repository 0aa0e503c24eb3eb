//! The README's promises that can drift from the code, held to it.

use std::collections::BTreeSet;

/// The README, from the workspace root.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

#[test]
fn the_readme_lists_exactly_the_metrics_the_services_record() {
    let readme = readme();
    let prefixes = [
        "auth_",
        "storage_",
        "gateway_",
        "converter_",
        "notifier_",
        "worker_",
    ];
    let suffixes = ["_total", "_seconds", "_streams"];
    let documented: BTreeSet<String> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|code| code.split('{').next().unwrap_or_default().to_owned())
        .filter(|name| {
            prefixes.iter().any(|p| name.starts_with(p))
                && suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    let recorded: BTreeSet<String> = [
        auth::meters::ALL,
        storage::meters::ALL,
        gateway::meters::ALL,
        converter::meters::ALL,
        notifier::meters::ALL,
        messaging::meters::ALL,
    ]
    .concat()
    .into_iter()
    .map(str::to_owned)
    .collect();
    let undocumented: Vec<_> = recorded.difference(&documented).collect();
    let unrecorded: Vec<_> = documented.difference(&recorded).collect();
    assert!(
        undocumented.is_empty() && unrecorded.is_empty(),
        "recorded but not in the README: {undocumented:?}; in the README but not recorded: {unrecorded:?}"
    );
}
