//! `docs/protocol.md` lists exactly what ApiVersions advertises.

use ringlog_net::apis::SERVED_APIS;

#[test]
fn protocol_doc_matches_served_apis() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md exists");
    let rows: Vec<(i16, String)> = doc
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(2)?.parse::<i16>().ok()?;
            Some((key, cells.get(3)?.to_string()))
        })
        .collect();
    assert_eq!(
        rows.len(),
        SERVED_APIS.len(),
        "one row per served API: {rows:?}"
    );
    for api in SERVED_APIS {
        let expected = format!("{}–{}", api.min_version, api.max_version);
        let row = rows
            .iter()
            .find(|(key, _)| *key == api.key as i16)
            .unwrap_or_else(|| panic!("{:?} missing from docs/protocol.md", api.key));
        assert_eq!(
            row.1, expected,
            "{:?} versions in docs/protocol.md",
            api.key
        );
    }
}
