//! AES-128-CCM with a 4-byte MIC, as used by BTHome v2, MiBeacon v4/v5 and
//! the pvvx/ATC encrypted custom formats (RustCrypto `aes` + `ccm`).
//!
//! Invariants: callers pass nonces of exactly the generic length `N` and a
//! 4-byte tag; anything else is reported as `Malformed` (never a panic).
//! Authentication failure maps to `DecodeError::BadKey`; no plaintext is
//! returned unless the MIC verified.

use aes::Aes128;
use ccm::aead::generic_array::{ArrayLength, GenericArray};
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::U4;
use ccm::{Ccm, NonceSize};

use super::DecodeError;

/// Length of the message integrity check used by every supported format.
pub(crate) const MIC_LEN: usize = 4;

/// Verify and decrypt `ciphertext` (detached 4-byte `mic`).
pub(crate) fn open<N: NonceSize + ArrayLength<u8>>(
    key: &[u8; 16],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    mic: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    if nonce.len() != N::USIZE || mic.len() != MIC_LEN {
        return Err(DecodeError::Malformed("bad nonce or MIC length".into()));
    }
    let cipher = Ccm::<Aes128, U4, N>::new(GenericArray::from_slice(key));
    let mut buf = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(nonce),
            aad,
            &mut buf,
            GenericArray::from_slice(mic),
        )
        .map_err(|_| DecodeError::BadKey)?;
    Ok(buf)
}

/// AES-CCM decryption *without* authentication (MiBeacon v2/v3 send no MIC): the CTR
/// keystream of CCM with a 13-byte nonce (L = 2), blocks counted from 1. A wrong key
/// yields garbage, which the caller's object parser must survive.
pub(crate) fn ccm_unauthenticated(key: &[u8; 16], nonce: &[u8; 13], ciphertext: &[u8]) -> Vec<u8> {
    use aes::cipher::BlockEncrypt;
    let cipher = Aes128::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(ciphertext.len());
    for (i, chunk) in ciphertext.chunks(16).enumerate() {
        let mut block = [0u8; 16];
        block[0] = 0x01; // flags: L - 1
        block[1..14].copy_from_slice(nonce);
        block[14..].copy_from_slice(&((i + 1) as u16).to_be_bytes());
        let mut ks = GenericArray::from(block);
        cipher.encrypt_block(&mut ks);
        out.extend(chunk.iter().zip(ks.iter()).map(|(c, k)| c ^ k));
    }
    out
}

/// Test-only inverse of [`open`]: returns `ciphertext || mic`.
#[cfg(test)]
pub(crate) fn seal<N: NonceSize + ArrayLength<u8>>(
    key: &[u8; 16],
    nonce: &[u8],
    aad: &[u8],
    plain: &[u8],
) -> Vec<u8> {
    let cipher = Ccm::<Aes128, U4, N>::new(GenericArray::from_slice(key));
    let mut buf = plain.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf)
        .expect("encrypt");
    buf.extend_from_slice(&tag);
    buf
}
