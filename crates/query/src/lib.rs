//! ferrod's query side: the schema registry behind `___protobuf_metadata` (`schema`) and the Ickle
//! subset Keycloak and the HotRod clients send with QUERY (`ickle`).

pub mod ickle;
pub mod schema;
pub mod wrapped;
