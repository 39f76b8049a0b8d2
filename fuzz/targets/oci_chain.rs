//! An app's OCI manifest chain from a store of blobs the input writes (the check is
//! `usb_update::fuzzing::oci`, where its seeds are built).

pub fn run(data: &[u8]) {
    usb_update::fuzzing::check("oci_chain").expect("a fuzzing target")(data)
}
