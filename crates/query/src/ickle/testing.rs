//! Helpers for tests and benches: a descriptor pool from one in-memory .proto file.

use prost_reflect::DescriptorPool;

struct OneFile {
    name: String,
    source: String,
}

impl protox::file::FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == self.name {
            protox::file::File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Compiles one self-contained .proto source.
pub fn pool_from_source(name: &str, source: &str) -> Result<DescriptorPool, String> {
    let mut compiler = protox::Compiler::with_file_resolver(OneFile {
        name: name.into(),
        source: source.into(),
    });
    compiler.open_file(name).map_err(|e| e.to_string())?;
    Ok(compiler.descriptor_pool())
}
