//! The JWT claim extractor and the user identity of a request: never a panic; an id is
//! bounded and non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::active_users::identity::{self, Credentials};
use veza_observability::config::business::UserSource;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = identity::jwt_claim(data, "sub") {
        assert!(!id.is_empty() && id.len() <= 256);
    }
    let credentials = Credentials { authorization: Some(data), path: data, header: Some(data) };
    let _ = identity::user_hash(&UserSource::default(), &credentials);
    let _ = identity::user_hash(&UserSource::Header("x-user-id".into()), &credentials);
});
