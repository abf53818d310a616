//! Generated protobuf messages and gRPC stubs of `proto/dbsync/v1`.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("dbsync.v1");

    /// Encoded `FileDescriptorSet` of every dbsync proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/dbsync_descriptor.bin"));
}

pub use v1::*;
