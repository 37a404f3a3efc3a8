//! Embedded defaults: with nothing configured, autos runs a private PostgreSQL cluster, an
//! S3-compatible store and a sample MNI court on loopback, so that it starts on a fresh machine.

pub mod mni;
pub mod postgres;
pub mod s3;
