//! An app's OCI manifest chain from a store of blobs the input writes (the check is
//! `test_kit::fuzzing::oci`, where its seeds are built).

pub fn run(data: &[u8]) {
    test_kit::fuzzing::check("oci_chain").expect("a fuzzing target")(data)
}
