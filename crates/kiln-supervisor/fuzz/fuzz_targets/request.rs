//! `proto::parse` on arbitrary request lines must refuse or accept without
//! panicking; an accepted request names only valid unikernels, and
//! survives a round trip through JSON unchanged.
#![no_main]

use kiln_supervisor::proto::{self, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = proto::parse(data) else {
        return;
    };
    let name = match &request {
        Request::Ps {} => None,
        Request::Up { name, .. }
        | Request::Logs { name, .. }
        | Request::Stop { name, .. }
        | Request::Start { name }
        | Request::Restart { name, .. }
        | Request::Rm { name, .. }
        | Request::Stats { name }
        | Request::Inspect { name } => Some(name),
    };
    if let Some(name) = name {
        assert!(!name.contains('/') && !name.contains("..") && !name.is_empty());
    }
    let again = serde_json::to_vec(&request).unwrap();
    assert_eq!(proto::parse(&again).unwrap(), request);
});
