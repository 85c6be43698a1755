//! RMCP+ cryptography for cipher suites 3 and 17 on RustCrypto primitives: the RAKP key
//! exchange authentication codes, the session keys (SIK, K1, K2), the integrity AuthCode and
//! AES-CBC-128 confidentiality with IPMI's own padding. Pure functions over bytes.
//!
//! | suite | authentication | integrity | confidentiality |
//! | --- | --- | --- | --- |
//! | 3 | RAKP-HMAC-SHA1 | HMAC-SHA1-96 | AES-CBC-128 |
//! | 17 | RAKP-HMAC-SHA256 | HMAC-SHA256-128 | AES-CBC-128 |
//!
//! Facts from IPMI v2.0 §13.28–13.29 as ipmitool and OpenIPMI implement them: Kuid is the
//! password zero-padded to 20 bytes; SIK = HMAC_Kuid(Rm | Rc | role | name length | name);
//! K1 and K2 are HMAC_SIK over 20 bytes of 0x01 and 0x02 (20 bytes for SHA-256 too); the
//! AuthCode is HMAC_K1 over the session header through the next-header byte, truncated to 12
//! (SHA-1) or 16 (SHA-256) bytes; AES takes the first 16 bytes of K2.

use aes::Aes128;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// A cipher suite this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

/// Authentication algorithm numbers (table 13-17).
pub mod authentication {
    pub const RAKP_HMAC_SHA1: u8 = 0x01;
    pub const RAKP_HMAC_SHA256: u8 = 0x03;
}

/// Integrity algorithm numbers (table 13-18).
pub mod integrity {
    pub const HMAC_SHA1_96: u8 = 0x01;
    pub const HMAC_SHA256_128: u8 = 0x04;
}

/// Confidentiality algorithm numbers (table 13-19).
pub mod confidentiality {
    pub const AES_CBC_128: u8 = 0x01;
}

/// The user key (Kuid) and the BMC key (Kg) are 20 bytes (§13.31).
pub const KEY_LEN: usize = 20;
/// AES-128 block, key and IV length.
pub const AES_BLOCK: usize = 16;

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    pub fn authentication(self) -> u8 {
        match self {
            CipherSuite::Suite3 => authentication::RAKP_HMAC_SHA1,
            CipherSuite::Suite17 => authentication::RAKP_HMAC_SHA256,
        }
    }

    pub fn integrity(self) -> u8 {
        match self {
            CipherSuite::Suite3 => integrity::HMAC_SHA1_96,
            CipherSuite::Suite17 => integrity::HMAC_SHA256_128,
        }
    }

    pub fn confidentiality(self) -> u8 {
        confidentiality::AES_CBC_128
    }

    /// Length of the RAKP 4 integrity check value and of every AuthCode.
    pub fn auth_code_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// The HMAC over the concatenation of `parts`, with this suite's hash.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<sha1::Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cipher suite {}", self.id())
    }
}

/// A password (or BMC key) as the 20-byte key RAKP uses. Longer secrets are refused earlier,
/// when the configuration is read.
pub fn key20(secret: &[u8]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    let n = secret.len().min(KEY_LEN);
    key[..n].copy_from_slice(&secret[..n]);
    key
}

/// What both sides of a RAKP exchange know once RAKP 2 has arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange<'a> {
    pub suite: CipherSuite,
    /// Kuid: the user's password as a 20-byte key.
    pub user_key: [u8; KEY_LEN],
    pub console_session_id: u32,
    pub bmc_session_id: u32,
    /// Rm.
    pub console_random: [u8; 16],
    /// Rc.
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// The whole RAKP 1 role byte (privilege and lookup bit).
    pub role: u8,
    pub user_name: &'a [u8],
}

/// The session keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub sik: Vec<u8>,
    pub k1: Vec<u8>,
    pub k2: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

const CONST_1: [u8; 20] = [0x01; 20];
const CONST_2: [u8; 20] = [0x02; 20];

impl Exchange<'_> {
    fn name_len(&self) -> [u8; 1] {
        [self.user_name.len() as u8]
    }

    /// RAKP 2's key exchange authentication code: HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm,
    /// ULENGTHm, UNAMEm), full length.
    pub fn rakp2_auth_code(&self) -> Vec<u8> {
        self.suite.hmac(
            &self.user_key,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role],
                &self.name_len(),
                self.user_name,
            ],
        )
    }

    /// RAKP 3's key exchange authentication code: HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_auth_code(&self) -> Vec<u8> {
        self.suite.hmac(
            &self.user_key,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role],
                &self.name_len(),
                self.user_name,
            ],
        )
    }

    /// SIK = HMAC_Kg(Rm, Rc, ROLEm, ULENGTHm, UNAMEm) with Kg = Kuid (no BMC key), then
    /// K1 and K2.
    pub fn keys(&self) -> Keys {
        let sik = self.suite.hmac(
            &self.user_key,
            &[
                &self.console_random,
                &self.bmc_random,
                &[self.role],
                &self.name_len(),
                self.user_name,
            ],
        );
        let k1 = self.suite.hmac(&sik, &[&CONST_1]);
        let k2 = self.suite.hmac(&sik, &[&CONST_2]);
        Keys { sik, k1, k2 }
    }

    /// RAKP 4's integrity check value: HMAC_SIK(Rm, SIDc, GUIDc), truncated.
    pub fn rakp4_integrity_check(&self, keys: &Keys) -> Vec<u8> {
        let mut code = self.suite.hmac(
            &keys.sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        code.truncate(self.suite.auth_code_len());
        code
    }
}

/// The AuthCode of an authenticated datagram: HMAC_K1 over the covered bytes, truncated.
pub fn auth_code(suite: CipherSuite, keys: &Keys, covered: &[u8]) -> Vec<u8> {
    let mut code = suite.hmac(&keys.k1, &[covered]);
    code.truncate(suite.auth_code_len());
    code
}

/// Compares MACs without leaking where they differ.
pub fn same_mac(expected: &[u8], got: &[u8]) -> bool {
    expected.len() == got.len() && bool::from(expected.ct_eq(got))
}

/// Why a confidentiality payload does not decrypt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    #[error("an AES-CBC-128 payload is an IV plus whole 16-byte blocks, this one has {0} bytes")]
    Length(usize),
    #[error("the confidentiality trailer is malformed (wrong key, or a damaged datagram)")]
    Padding,
}

/// Encrypts an IPMI payload: the IV, then AES-CBC-128 under K2[0..16] of the payload, pad
/// bytes 1, 2, 3, … and the pad length (§13.29).
pub fn encrypt(keys: &Keys, iv: &[u8; AES_BLOCK], plaintext: &[u8]) -> Vec<u8> {
    let pad = (AES_BLOCK - (plaintext.len() + 1) % AES_BLOCK) % AES_BLOCK;
    let mut buffer = Vec::with_capacity(AES_BLOCK + plaintext.len() + pad + 1);
    buffer.extend_from_slice(plaintext);
    buffer.extend((1..=pad as u8).collect::<Vec<u8>>());
    buffer.push(pad as u8);
    let len = buffer.len();
    let key: [u8; AES_BLOCK] = aes_key(keys);
    cbc::Encryptor::<Aes128>::new(&key.into(), &(*iv).into())
        .encrypt_padded_mut::<NoPadding>(&mut buffer, len)
        .expect("the buffer is a whole number of blocks");
    let mut out = iv.to_vec();
    out.extend_from_slice(&buffer);
    out
}

/// Decrypts an IPMI payload produced by [`encrypt`] and checks its confidentiality trailer.
pub fn decrypt(keys: &Keys, payload: &[u8]) -> Result<Vec<u8>, CryptError> {
    if payload.len() < 2 * AES_BLOCK || !payload.len().is_multiple_of(AES_BLOCK) {
        return Err(CryptError::Length(payload.len()));
    }
    let (iv, ciphertext) = payload.split_at(AES_BLOCK);
    let iv: [u8; AES_BLOCK] = iv.try_into().expect("split at the block size");
    let key: [u8; AES_BLOCK] = aes_key(keys);
    let mut buffer = ciphertext.to_vec();
    cbc::Decryptor::<Aes128>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut buffer)
        .map_err(|_| CryptError::Padding)?;
    let pad = *buffer.last().ok_or(CryptError::Padding)? as usize;
    if pad >= AES_BLOCK || pad + 1 > buffer.len() {
        return Err(CryptError::Padding);
    }
    let data_len = buffer.len() - pad - 1;
    if !buffer[data_len..data_len + pad]
        .iter()
        .zip(1u8..)
        .all(|(b, want)| *b == want)
    {
        return Err(CryptError::Padding);
    }
    buffer.truncate(data_len);
    Ok(buffer)
}

fn aes_key(keys: &Keys) -> [u8; AES_BLOCK] {
    let mut key = [0u8; AES_BLOCK];
    key.copy_from_slice(&keys.k2[..AES_BLOCK]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::ipmi::wire::tests::{FIRST_REQUEST_17, hex};
    use crate::power::ipmi::wire::{RequestMessage, decode_datagram};

    fn array(text: &str) -> [u8; 16] {
        hex(text).try_into().expect("16 bytes")
    }

    /// Suite 3, recorded from `ipmitool -I lanplus -C 3 -vvvv` (1.8.19) against ipmi_sim
    /// (OpenIPMI 2.0.33): tests/fixtures/ipmi/suite3-ipmitool-vvvv.log.
    fn suite3() -> Exchange<'static> {
        Exchange {
            suite: CipherSuite::Suite3,
            user_key: key20(b"secret"),
            console_session_id: 0xa0a2a3a4,
            bmc_session_id: 0x00000584,
            console_random: array("ad a3 af 39 d8 52 86 86 60 89 b1 cb 0d 52 13 fb"),
            bmc_random: array("15 82 db eb d9 4f c4 a6 5f 18 16 23 5e 4b 93 d3"),
            bmc_guid: array("a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef"),
            role: 0x14,
            user_name: b"admin",
        }
    }

    /// Suite 17, recorded from `ipmitool -I lanplus -C 17 -vvvv` against a throwaway responder
    /// whose HMACs came from Python's hashlib (scripts/ipmi-suite17-responder):
    /// tests/fixtures/ipmi/suite17-ipmitool-vvvv.log and suite17-datagrams.txt.
    fn suite17() -> Exchange<'static> {
        Exchange {
            suite: CipherSuite::Suite17,
            user_key: key20(b"secret"),
            console_session_id: 0xa0a2a3a4,
            bmc_session_id: 0x0bc0ffee,
            console_random: array("d9 62 23 32 b4 54 8b cc 19 cc a7 d5 7d 41 f1 a7"),
            bmc_random: array("10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f"),
            bmc_guid: array("a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af"),
            role: 0x14,
            user_name: b"admin",
        }
    }

    #[test]
    fn suite3_rakp_codes_and_keys_match_ipmitool_against_ipmi_sim() {
        let x = suite3();
        assert_eq!(
            x.rakp2_auth_code(),
            hex("3a 1c 30 cb e4 04 bf 11 18 84 b7 1b 0b ab bb e6 02 ea 93 92")
        );
        assert_eq!(
            x.rakp3_auth_code(),
            hex("c1 7c f7 3c 01 42 00 3c 76 6c 17 a4 c4 c0 99 dc b2 b7 ba 98")
        );
        let keys = x.keys();
        assert_eq!(
            keys.sik,
            hex("3a dd c1 68 e5 88 05 4b bc d9 ae 98 b4 a8 bb e7 fd b9 27 28")
        );
        assert_eq!(
            keys.k1,
            hex("49 ab fb 7e 76 ec 06 e5 74 2f 51 8b b4 44 88 88 d7 12 b6 33")
        );
        assert_eq!(
            keys.k2,
            hex("c8 17 fc 5c 0a 84 a5 e0 de 20 60 78 1e 2d f7 65 fb 92 91 20")
        );
        // ipmi_sim's RAKP 4 value, which ipmitool compared on its first 12 bytes.
        assert_eq!(
            x.rakp4_integrity_check(&keys),
            hex("6f 68 1f de 9b 4d ad b5 37 35 b0 c4")
        );
    }

    #[test]
    fn suite3_auth_codes_match_both_directions_of_the_recorded_session() {
        let keys = suite3().keys();
        // ipmitool → ipmi_sim: Set Session Privilege Level, sequence 3.
        let sent = hex(
            "06 c0 84 05 00 00 03 00 00 00 20 00 cb ec 1e f3 85 00 c5 4e 0f de 30 bd d7 83 39 69
             12 3b 28 6b b4 09 48 c5 9a 61 8a bf 98 19 03 68 ff ff 02 07",
        );
        assert_eq!(
            auth_code(CipherSuite::Suite3, &keys, &sent),
            hex("42 6d 9c e5 0c 29 94 de 28 ff ed dc")
        );
        // ipmi_sim → ipmitool: its answer, sequence 1.
        let received = hex(
            "06 c0 a4 a3 a2 a0 01 00 00 00 20 00 69 c3 4e 49 91 ee e1 c5 d8 18 3c 9f d9 bf 3d 97
             5b 4a 8a dd fb fc ff 6f 6f 50 20 e9 9b c4 cc 64 ff ff 02 07",
        );
        assert_eq!(
            auth_code(CipherSuite::Suite3, &keys, &received),
            hex("fb 19 25 6d a5 d8 31 e3 66 b8 78 ab")
        );
        // Its payload decrypts to the Set Session Privilege Level response: administrator.
        let plain = decrypt(&keys, &received[12..44]).expect("valid confidentiality trailer");
        assert_eq!(plain, hex("81 1c 63 20 04 3b 00 04 9d"));
        // ipmitool's request decrypts to the request with ipmitool's IV.
        let request = decrypt(&keys, &sent[12..44]).expect("valid confidentiality trailer");
        assert_eq!(request, hex("20 18 c8 81 04 3b 04 3c"));
        let iv = array("cb ec 1e f3 85 00 c5 4e 0f de 30 bd d7 83 39 69");
        assert_eq!(encrypt(&keys, &iv, &request), sent[12..44].to_vec());
    }

    #[test]
    fn suite17_rakp_codes_and_keys_match_ipmitool() {
        let x = suite17();
        assert_eq!(
            x.rakp2_auth_code(),
            hex("67 ae 14 87 d7 ad 80 c5 fc d4 2c e4 88 e1 5b b9
                 8b d7 ed 04 76 d5 d0 da ad fa 34 81 79 cf b2 b6")
        );
        assert_eq!(
            x.rakp3_auth_code(),
            hex("99 d8 23 ae ca 7b 41 dd 4e dc 23 e3 c1 4d fe ce
                 8b 09 32 ea 37 60 2d 59 57 b3 ad 69 78 c1 c2 3d")
        );
        let keys = x.keys();
        assert_eq!(
            keys.sik,
            hex("25 19 92 50 18 79 f6 59 d3 82 35 fb 9b 0b 5f c5
                 8d 78 32 2a c0 7b db 89 ab 52 88 5c 48 85 0c 38")
        );
        assert_eq!(
            keys.k1,
            hex("6c 48 9e d5 c1 36 4f 0d d9 fd a7 a0 87 1c 5e e5
                 29 13 51 11 4f 9a bb 98 ad e6 bd a4 ad 78 81 46")
        );
        assert_eq!(
            keys.k2,
            hex("1c 84 af f6 e2 31 74 46 a1 d9 56 19 b2 bf f7 0a
                 46 d1 51 f3 17 fe 29 d9 7c bd 61 82 4b 6e 88 03")
        );
        assert_eq!(
            x.rakp4_integrity_check(&keys),
            hex("6e 56 15 73 0b c1 2c 55 cc e0 b1 d0 1f cf c2 a7")
        );
    }

    #[test]
    fn suite17_first_session_datagram_of_ipmitool_verifies_and_decrypts() {
        let keys = suite17().keys();
        let bytes = hex(FIRST_REQUEST_17);
        let datagram = decode_datagram(&bytes, 16).expect("valid datagram");
        let integrity = datagram.integrity.expect("authenticated");
        assert!(same_mac(
            integrity.auth_code,
            &auth_code(CipherSuite::Suite17, &keys, integrity.covered)
        ));
        let plain = decrypt(&keys, datagram.payload).expect("valid confidentiality trailer");
        let request = RequestMessage::decode(&plain).expect("valid IPMI request");
        assert_eq!(
            (request.netfn, request.cmd, request.data),
            (0x06, 0x3b, &[0x04][..])
        );
        // Encrypting the request again under ipmitool's IV gives ipmitool's bytes.
        let iv: [u8; 16] = datagram.payload[..16].try_into().expect("IV");
        assert_eq!(encrypt(&keys, &iv, &plain), datagram.payload.to_vec());
    }

    #[test]
    fn confidentiality_padding_fills_whole_blocks_and_is_checked() {
        let keys = suite3().keys();
        let iv = [7u8; 16];
        for len in [0usize, 1, 14, 15, 16, 17, 31, 40] {
            let data: Vec<u8> = (0..len as u8).collect();
            let sealed = encrypt(&keys, &iv, &data);
            assert_eq!(sealed.len() % 16, 0, "{len} bytes");
            assert_eq!(decrypt(&keys, &sealed), Ok(data));
        }
        assert_eq!(decrypt(&keys, &[0; 20]), Err(CryptError::Length(20)));
        // The wrong key leaves garbage where the trailer should be.
        let sealed = encrypt(&keys, &iv, b"chassis");
        let other = suite17().keys();
        assert_eq!(decrypt(&other, &sealed), Err(CryptError::Padding));
    }
}
