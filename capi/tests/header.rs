//! `include/oxccl.h` is generated from this crate by cbindgen: this test
//! generates it again and fails when the committed header differs, so the
//! header and the library cannot drift. `OXCCL_UPDATE_HEADER=1 cargo test
//! -p oxccl-capi --test header` rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_is_the_generated_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml");
    let bindings =
        cbindgen::Builder::new().with_crate(dir).with_config(config).generate().expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    let path = dir.join("../include/oxccl.h");
    if std::env::var("OXCCL_UPDATE_HEADER").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write include/oxccl.h");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/oxccl.h differs from what capi/src declares: run OXCCL_UPDATE_HEADER=1 cargo test -p oxccl-capi \
         --test header, and commit the header"
    );
}
