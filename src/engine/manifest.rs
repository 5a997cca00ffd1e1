//! The compaction manifest: the commit point of a compaction.
//!
//! Written (as `compact.manifest.tmp`, fsynced, renamed, directory fsynced) once every output
//! segment and hint is durable under a `.tmp` name. Its presence means: rename the outputs into
//! place, delete the inputs, then delete the manifest. Each step is idempotent, so an open that
//! finds a manifest finishes the job. Layout (little-endian): `magic [8] | version u32 |
//! inputs u32 | outputs u32 | input ids u64... | output ids u64... | crc32c u32`.

pub const MANIFEST_NAME: &str = "compact.manifest";
const MAGIC: [u8; 8] = *b"KVS\0CMP\0";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionManifest {
    pub inputs: Vec<u64>,
    pub outputs: Vec<u64>,
}

impl CompactionManifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + 8 * (self.inputs.len() + self.outputs.len()));
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(self.inputs.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        for id in self.inputs.iter().chain(&self.outputs) {
            b.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<CompactionManifest, String> {
        if b.len() < 24 || b[0..8] != MAGIC {
            return Err("compaction manifest is damaged (bad magic or size)".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32c::crc32c(body) {
            return Err("compaction manifest checksum mismatch".into());
        }
        let u32_at =
            |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes")) as usize;
        if u32_at(8) != VERSION as usize {
            return Err("compaction manifest version not supported".into());
        }
        let (n_in, n_out) = (u32_at(12), u32_at(16));
        if body.len() != 20 + 8 * (n_in + n_out) {
            return Err("compaction manifest length does not match its counts".into());
        }
        let ids: Vec<u64> = body[20..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(CompactionManifest {
            inputs: ids[..n_in].to_vec(),
            outputs: ids[n_in..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_flips() {
        // Guards against a damaged manifest deleting the wrong segments.
        let m = CompactionManifest {
            inputs: vec![1, 2, 3],
            outputs: vec![9],
        };
        let b = m.encode();
        assert_eq!(CompactionManifest::decode(&b), Ok(m));
        for bit in 0..b.len() * 8 {
            let mut bad = b.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(CompactionManifest::decode(&bad).is_err(), "bit {bit}");
        }
    }
}
