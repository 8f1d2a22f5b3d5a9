//! Human-friendly formatting shared by subcommands.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Local-time rendering of an RFC 3339 timestamp, to the second.
pub fn when(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(when_at)
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// A time for a table column, to the second, in UTC.
pub fn when_at(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Print a command's JSON result with the requests it sent to the store
/// (`"requests": {"put": …, "get": …, "list": …, "head": …, "delete": …}`),
/// after logging them (`-v`).
pub fn print_json_with_requests<S>(v: &impl serde::Serialize, repo: &lifeboat::repo::Repository<S>) {
    let counts = log_requests(repo);
    let mut v = serde_json::to_value(v).expect("serializable");
    if let Some(obj) = v.as_object_mut() {
        obj.insert("requests".into(), serde_json::to_value(counts).expect("serializable"));
    }
    print_json(&v);
}

/// Log the requests sent so far (shown with `-v`); returns them.
pub fn log_requests<S>(repo: &lifeboat::repo::Repository<S>) -> lifeboat::storage::RequestCounts {
    let c = repo.requests();
    tracing::info!(
        event = "storage.requests",
        put = c.put,
        get = c.get,
        list = c.list,
        head = c.head,
        delete = c.delete,
        total = c.total()
    );
    c
}

/// Stored records (the operations log's, drills') as `--json` lists them:
/// each record's fields with its repository key added as `key`.
pub fn keyed_records<R: serde::Serialize>(records: &[(String, R)]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|(key, r)| {
            let mut v = serde_json::to_value(r).expect("a record serializes");
            v.as_object_mut()
                .expect("a record is an object")
                .insert("key".into(), key.as_str().into());
            v
        })
        .collect()
}
