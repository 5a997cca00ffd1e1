//! What the load generator asks for: a seeded random number generator, the pre-generated
//! keys, how the keyspace is split between connections, and the values it writes.
//!
//! Promises: the same seed, key count and connection layout give the same request sequence
//! on every run; nothing here allocates per request. A written value identifies the key and
//! the write it came from (its first [`STAMP_BYTES`] bytes), so a read can be checked exactly
//! without keeping values in memory.

use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::KvsError;

/// Bytes at the start of every value that say which key and which write it belongs to:
/// the write's version (u32 LE) and the key's index (u32 LE).
pub const STAMP_BYTES: usize = 8;

/// xoshiro256++ seeded through SplitMix64: fast, small and good enough for picking keys.
/// Not for anything that needs secrecy.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `stream` (e.g. a connection's number) under `seed`. Different streams
    /// of one seed are independent.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut x = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift on 64 random bits; the bias is below
    /// n / 2^64, under 2^-32 for any u32 `n`).
    pub fn below(&mut self, n: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u32
    }

    /// True with probability `threshold / 2^64` (see [`read_threshold`]).
    pub fn chance(&mut self, threshold: u64) -> bool {
        self.next_u64() < threshold
    }
}

/// The [`Rng::chance`] threshold for a read ratio in `0.0..=1.0`.
pub fn read_threshold(read_ratio: f64) -> u64 {
    if read_ratio >= 1.0 {
        u64::MAX
    } else if read_ratio <= 0.0 {
        0
    } else {
        (read_ratio * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Every key the generator uses, generated once, stored back to back: `k` followed by the
/// key's index in decimal, zero-padded to the key size (`k000000000000042` for 16 bytes).
#[derive(Debug)]
pub struct Keyspace {
    bytes: Vec<u8>,
    key_size: usize,
    count: u32,
}

impl Keyspace {
    /// Generates `count` distinct keys of `key_size` bytes each.
    pub fn new(count: u32, key_size: usize) -> Result<Keyspace, KvsError> {
        if count == 0 {
            return Err(KvsError::Config("--keys must be at least 1".into()));
        }
        let digits = (count - 1).checked_ilog10().unwrap_or(0) as usize + 1;
        if key_size < digits + 1 || key_size > KEY_BYTES_MAX {
            return Err(KvsError::Config(format!(
                "--key-size {key_size} cannot hold {count} distinct keys: it must be {} to \
                 {KEY_BYTES_MAX} bytes",
                digits + 1
            )));
        }
        let mut bytes = Vec::with_capacity(count as usize * key_size);
        let width = key_size - 1;
        for index in 0..count {
            bytes.push(b'k');
            bytes.extend_from_slice(format!("{index:0width$}").as_bytes());
        }
        Ok(Keyspace {
            bytes,
            key_size,
            count,
        })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// The key with index `index` (`index < count`).
    pub fn key(&self, index: u32) -> &[u8] {
        let start = index as usize * self.key_size;
        &self.bytes[start..start + self.key_size]
    }
}

/// The keys one connection uses: indices `first, first + step, first + 2*step, ...`,
/// `len` of them. With `--verify` each connection owns a stripe no other connection
/// touches, so what it last wrote to a key is exactly what a read must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stripe {
    pub first: u32,
    pub step: u32,
    pub len: u32,
}

impl Stripe {
    /// The whole keyspace.
    pub fn all(count: u32) -> Stripe {
        Stripe {
            first: 0,
            step: 1,
            len: count,
        }
    }

    /// Connection `conn`'s share when `count` keys are dealt round-robin to `conns`
    /// connections.
    pub fn dealt(count: u32, conn: u32, conns: u32) -> Stripe {
        debug_assert!(conn < conns);
        let len = count / conns + u32::from(conn < count % conns);
        Stripe {
            first: conn,
            step: conns,
            len,
        }
    }

    /// The keyspace index of the stripe's `local`-th key.
    pub fn global(&self, local: u32) -> u32 {
        debug_assert!(local < self.len);
        self.first + local * self.step
    }
}

/// The bytes of every value: random filler, of which the first [`STAMP_BYTES`] are replaced
/// by a stamp when a value is written.
#[derive(Debug)]
pub struct ValueTemplate {
    filler: Vec<u8>,
}

impl ValueTemplate {
    pub fn new(value_size: usize, seed: u64) -> Result<ValueTemplate, KvsError> {
        if value_size > VALUE_BYTES_MAX {
            return Err(KvsError::Config(format!(
                "--value-size {value_size} exceeds the {VALUE_BYTES_MAX}-byte limit"
            )));
        }
        // Printable filler keeps values readable in redis-cli and in packet captures.
        let mut rng = Rng::new(seed, u64::MAX);
        let filler = (0..value_size)
            .map(|_| b'a' + (rng.below(26) as u8))
            .collect();
        Ok(ValueTemplate { filler })
    }

    pub fn len(&self) -> usize {
        self.filler.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filler.is_empty()
    }

    /// Appends the value of write `version` to key `key`: the stamp (cut short if the value
    /// is shorter than [`STAMP_BYTES`]), then the filler.
    pub fn write(&self, key: u32, version: u32, out: &mut Vec<u8>) {
        let stamp = stamp(key, version);
        let cut = self.filler.len().min(STAMP_BYTES);
        out.extend_from_slice(&stamp[..cut]);
        out.extend_from_slice(&self.filler[cut..]);
    }

    /// The version of a value this template wrote for key `key`, or `None` if `value` is not
    /// such a value (wrong length, wrong key, different filler). Needs values of at least
    /// [`STAMP_BYTES`] bytes.
    pub fn version_of(&self, key: u32, value: &[u8]) -> Option<u32> {
        if value.len() != self.filler.len() || value.len() < STAMP_BYTES {
            return None;
        }
        let (head, rest) = value.split_at(STAMP_BYTES);
        if rest != &self.filler[STAMP_BYTES..] {
            return None;
        }
        let version = u32::from_le_bytes(head[..4].try_into().expect("four bytes"));
        let owner = u32::from_le_bytes(head[4..].try_into().expect("four bytes"));
        (owner == key).then_some(version)
    }
}

fn stamp(key: u32, version: u32) -> [u8; STAMP_BYTES] {
    let mut stamp = [0; STAMP_BYTES];
    stamp[..4].copy_from_slice(&version.to_le_bytes());
    stamp[4..].copy_from_slice(&key.to_le_bytes());
    stamp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_stream_give_the_same_sequence_and_streams_differ() {
        // Guards against runs that cannot be repeated, or connections that all pick the same keys.
        let a: Vec<u64> = (0..8)
            .scan(Rng::new(7, 1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::new(7, 1), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(Rng::new(7, 2), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        // Guards against an off-by-one that never picks the last key, or picks one past it.
        let mut rng = Rng::new(1, 0);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            seen[rng.below(10) as usize] += 1;
        }
        for count in seen {
            assert!((9_000..11_000).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn read_ratio_is_honoured() {
        // Guards against a mix that drifts from the requested read ratio.
        let mut rng = Rng::new(3, 0);
        let threshold = read_threshold(0.9);
        let reads = (0..100_000).filter(|_| rng.chance(threshold)).count();
        assert!((89_000..91_000).contains(&reads), "{reads}");
        assert!((0..1000).all(|_| rng.chance(read_threshold(1.0))));
        assert!((0..1000).all(|_| !rng.chance(read_threshold(0.0))));
    }

    #[test]
    fn keys_are_distinct_padded_and_sized() {
        // Guards against two indices mapping to one key, which would break --verify.
        let keys = Keyspace::new(1000, 16).expect("valid");
        assert_eq!(keys.key(0), b"k000000000000000");
        assert_eq!(keys.key(999), b"k000000000000999");
        let mut all: Vec<&[u8]> = (0..1000).map(|i| keys.key(i)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1000);
        assert!(Keyspace::new(1000, 3).is_err());
        assert!(Keyspace::new(1000, 4).is_ok());
        assert!(Keyspace::new(0, 16).is_err());
    }

    #[test]
    fn dealt_stripes_cover_the_keyspace_exactly_once() {
        // Guards against two connections sharing a key under --verify, or a key nobody owns.
        for (count, conns) in [(10, 3), (3, 5), (100_000, 50), (7, 7)] {
            let mut owners = vec![0u32; count as usize];
            for conn in 0..conns {
                let stripe = Stripe::dealt(count, conn, conns);
                for local in 0..stripe.len {
                    owners[stripe.global(local) as usize] += 1;
                }
            }
            assert!(
                owners.iter().all(|&n| n == 1),
                "{count} keys, {conns} conns"
            );
        }
    }

    #[test]
    fn a_written_value_reads_back_as_its_key_and_version_only() {
        // Guards against --verify accepting another key's value, another write, or a torn value.
        let template = ValueTemplate::new(100, 9).expect("valid");
        let mut value = Vec::new();
        template.write(42, 7, &mut value);
        assert_eq!(value.len(), 100);
        assert_eq!(template.version_of(42, &value), Some(7));
        assert_eq!(template.version_of(43, &value), None);
        let mut torn = value.clone();
        torn[60] ^= 1;
        assert_eq!(template.version_of(42, &torn), None);
        assert_eq!(template.version_of(42, &value[..99]), None);
        let mut tiny = Vec::new();
        ValueTemplate::new(3, 9)
            .expect("valid")
            .write(1, 1, &mut tiny);
        assert_eq!(tiny.len(), 3);
    }
}
