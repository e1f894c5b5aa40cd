//! Paths and methods against the Veza route table, and arbitrary route templates: never a
//! panic, and a label is always a configured template (or `other`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::config;
use veza_observability::labels::Method;
use veza_observability::routes::RouteTable;

thread_local! {
    static SETTINGS: config::Settings = config::load(None).expect("the built-in configuration loads");
}

fuzz_target!(|data: &[u8]| SETTINGS.with(|settings| check(settings, data)));

fn check(settings: &config::Settings, data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let method = Method::ALL[usize::from(selector) % Method::ALL.len()];
    let route = settings.routes.resolve(method, rest);
    if let Some(endpoint) = route.endpoint {
        assert!(settings.routes.template_text(endpoint).is_some());
        assert!(route.service.is_some());
    }
    if let Ok(template) = std::str::from_utf8(rest) {
        let mut table = RouteTable::default();
        if let Ok(service) = table.add_service("svc") {
            if table.add_route(template, service).is_ok() {
                let _ = table.resolve(method, template.as_bytes());
            }
        }
    }
}
