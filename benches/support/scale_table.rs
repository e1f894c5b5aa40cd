//! The scale forms' route table, shared by `make bench` and `make profile` so both ask the
//! same question.

/// `count` templates `/api/v1/:area/s<i>/:id`, any method, one service, room for 10,000 series.
pub fn scale_config(count: usize) -> String {
    let routes: Vec<String> = (0..count)
        .map(|i| format!("\"/api/v1/:area/s{i}/:id\""))
        .collect();
    format!(
        r#"{{"services": [{{"name": "bench", "prefixes": ["/api/"], "routes": [{}]}}], "business_metrics": [], "max_series": 12000}}"#,
        routes.join(", ")
    )
}
