//! Embedded defaults: with nothing configured, autos runs a private PostgreSQL cluster and an
//! S3-compatible store on loopback, so that it starts on a fresh machine.

pub mod postgres;
pub mod s3;
