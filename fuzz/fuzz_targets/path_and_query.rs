//! Request paths and queries through the transcoder's route matching and
//! parameter binding, and through the AK/SK canonical URI and query.

#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;
use meshrelease::auth::signature;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let Ok(path_and_query) = std::str::from_utf8(rest) else {
        return;
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let _ = signature::canonical_uri(path);
    let _ = signature::canonical_query(query);
    let _ = signature::parse_authorization(path_and_query);
    let method = match selector % 5 {
        0 => http::Method::GET,
        1 => http::Method::POST,
        2 => http::Method::PUT,
        3 => http::Method::DELETE,
        _ => http::Method::PATCH,
    };
    let h = harness::harness();
    // Writes are dry runs or find nothing: the store stays empty.
    let uri = if method == http::Method::GET || method == http::Method::DELETE {
        path_and_query.to_owned()
    } else {
        match query {
            Some(q) => format!("{path}?{q}&dryRun=true"),
            None => format!("{path}?dryRun=true"),
        }
    };
    if let Some(response) = h.rest(method, &uri, Vec::new()) {
        harness::assert_no_fault(&response);
    }
});
