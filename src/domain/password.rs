//! argon2id password hashes as PHC strings, computed in a caller-owned memory block.
//!
//! Hashing is pure CPU work; where it runs (a bounded pool of long-lived threads) is decided by
//! `crate::hashing`. Reusing one block per thread avoids allocating and faulting in 19 MiB per
//! hash.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// The configured cost, and the scratch memory sized for it.
#[derive(Clone, Debug)]
pub struct Hasher {
    params: Params,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
}

const OUTPUT_LEN: usize = 32;

impl Hasher {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, Some(OUTPUT_LEN))
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        Ok(Self { params })
    }

    /// A scratch block for [`Hasher::hash`] and [`Hasher::verify`] at these parameters.
    pub fn scratch(&self) -> Vec<Block> {
        vec![Block::default(); self.params.block_count()]
    }

    /// Hashes with a fresh random salt; returns the PHC string.
    pub fn hash(&self, password: &[u8], scratch: &mut [Block]) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let mut salt_bytes = [0u8; 16];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = [0u8; OUTPUT_LEN];
        compute(&self.params, password, salt_raw, &mut out, scratch)?;
        let output = Output::new(&out).map_err(|e| HashError::Argon2(e.to_string()))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: (&self.params)
                .try_into()
                .map_err(|e: argon2::password_hash::Error| HashError::Argon2(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc`, in constant time. A hash made with other
    /// parameters (the config changed since) is checked with its own.
    pub fn verify(
        &self,
        password: &[u8],
        phc: &str,
        scratch: &mut [Block],
    ) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc).map_err(|e| HashError::Argon2(e.to_string()))?;
        let params = Params::try_from(&parsed).map_err(|e| HashError::Argon2(e.to_string()))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(HashError::Argon2("PHC string without salt or hash".into()));
        };
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let mut out = vec![0u8; expected.len()];
        let params = Params::new(
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            Some(expected.len()),
        )
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        if params.block_count() == scratch.len() {
            compute(&params, password, salt_raw, &mut out, scratch)?;
        } else {
            let mut other = vec![Block::default(); params.block_count()];
            compute(&params, password, salt_raw, &mut out, &mut other)?;
        }
        Ok(out.as_slice().ct_eq(expected.as_bytes()).into())
    }
}

fn compute(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    scratch: &mut [Block],
) -> Result<(), HashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt, out, scratch)
        .map_err(|e| HashError::Argon2(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[test]
    fn hash_then_verify_with_real_parameters() {
        let h = Hasher::new(19_456, 2, 1).unwrap();
        let mut scratch = h.scratch();
        let phc = h.hash(b"correct horse", &mut scratch).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.verify(b"correct horse", &phc, &mut scratch).unwrap());
        assert!(!h.verify(b"correct horsE", &phc, &mut scratch).unwrap());
    }

    #[test]
    fn interoperates_with_the_reference_verifier() {
        let h = Hasher::new(19_456, 2, 1).unwrap();
        let phc = h.hash(b"pa55word!", &mut h.scratch()).unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"pa55word!", &parsed)
            .is_ok());
    }

    #[test]
    fn verifies_hashes_made_with_other_parameters() {
        // Cheap parameters: this test is about the parameter switch, not the cost.
        let old = Hasher::new(64, 1, 1).unwrap();
        let phc = old.hash(b"secret-pass", &mut old.scratch()).unwrap();
        let new = Hasher::new(128, 1, 1).unwrap();
        assert!(new
            .verify(b"secret-pass", &phc, &mut new.scratch())
            .unwrap());
    }
}
