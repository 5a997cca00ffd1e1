//! sled as a KvsEngine. (Being written.)
/// sled 0.34 behind [`super::KvsEngine`].
pub struct SledKvsEngine;
