//! Chunk access tokens as a chunkserver checks them on Read, Write,
//! Append and ApplyMutation. Only a token the key's holder signed for
//! exactly these fields passes; anything else is refused without a panic.
#![no_main]

use gfs_common::token::{READ, Verifier, WRITE, sign};
use gfs_proto::{ChunkToken, TokenKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = ChunkToken::decode(data) else { return };
    // A fixed key so that the seed corpus can hold validly signed tokens.
    let key = TokenKey { id: 7, secret: vec![0x5a; 32].into(), created_ms: 0, expires_ms: i64::MAX };
    let v = Verifier::default();
    v.set(std::slice::from_ref(&key));
    for now in [0, t.expires_ms, i64::MAX] {
        for (handle, version, right) in
            [(t.handle, t.version, READ), (t.handle, t.version, WRITE), (t.handle ^ 1, t.version, READ)]
        {
            if v.check(Some(&t), handle, version, right, now).is_ok() {
                let genuine = sign(&key, t.handle, t.version, t.rights, t.expires_ms, &t.user);
                assert_eq!(genuine, t, "a token passed that the master did not sign");
                assert_eq!((handle, version), (t.handle, t.version));
                assert_eq!(t.rights & right, right);
            }
        }
    }
});
