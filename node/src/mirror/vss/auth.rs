//! The remote mirror's keys (all from the seed) and its `Authorization` header.

use std::collections::HashMap;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ldk_node::bitcoin::hashes::{Hash, sha256};
use ldk_node::bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use ldk_node::vss_client::headers::{VssHeaderProvider, VssHeaderProviderError};
use sha2::Sha256;

use super::{VssAuth, VssMirrorError};
use crate::seed::Seed;

/// HKDF's salt for every remote-mirror key: a domain of its own, apart from backups and the
/// stick's logs.
const SALT: &[u8] = b"boltbox remote mirror v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// vss-auth-impls `signature.rs`: the 64-byte constant signed before the key and the time.
const SIGNING_CONSTANT: &[u8] = b"VSS Signature Authorizer Signing Salt Constant..................";

/// The remote mirror's keys, derived from the seed.
pub(super) struct VssKeys {
    /// Seals every value.
    value: ChaCha20Poly1305,
    /// Names the objects (HMAC-SHA256).
    names: [u8; 32],
    /// The VSS store id: opaque, the same for every device with this seed.
    pub(super) store_id: String,
    /// Signs requests under [`VssAuth::Signature`].
    auth: SecretKey,
}

impl VssKeys {
    pub(super) fn derive(seed: &Seed, network: crate::config::Network) -> Result<VssKeys, VssMirrorError> {
        // One seed on two networks is two nodes: two stores, apart.
        let salt = [SALT, network.to_string().as_bytes()].concat();
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), &seed.to_seed_bytes());
        let mut value = [0u8; 32];
        let mut names = [0u8; 32];
        let mut store = [0u8; 16];
        let mut auth = [0u8; 32];
        for (label, out) in [
            (&b"value key"[..], &mut value[..]),
            (b"name key", &mut names[..]),
            (b"store id", &mut store[..]),
            (b"auth key", &mut auth[..]),
        ] {
            hkdf.expand(label, out).map_err(|_| VssMirrorError::Settings("key derivation".into()))?;
        }
        // A 32-byte HKDF output is a valid secp256k1 key but for a chance of about 2^-128.
        let auth =
            SecretKey::from_slice(&auth).map_err(|_| VssMirrorError::Settings("the auth key".into()))?;
        Ok(VssKeys {
            value: ChaCha20Poly1305::new(&value.into()),
            names,
            store_id: format!("boltbox-{}", hex(&store)),
            auth,
        })
    }

    /// The opaque name of the object `label` names.
    pub(super) fn name(&self, label: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.names) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(label.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// `value` sealed under the object name `name`: nonce, ciphertext, tag.
    pub(super) fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, VssMirrorError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| VssMirrorError::Settings(format!("no random nonce: {e}")))?;
        let mut out = Vec::with_capacity(NONCE_LEN + value.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .value
            .encrypt_inout_detached(&Nonce::from(nonce), name.as_bytes(), (&mut out[NONCE_LEN..]).into())
            .map_err(|_| VssMirrorError::Settings("sealing failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The value sealed as `name`, or [`VssMirrorError::WrongSeed`].
    pub(super) fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, VssMirrorError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(VssMirrorError::WrongSeed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VssMirrorError::WrongSeed)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| VssMirrorError::WrongSeed)?;
        let mut plain = body.to_vec();
        self.value
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                name.as_bytes(),
                plain.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| VssMirrorError::WrongSeed)?;
        Ok(plain)
    }

    /// The header provider for `auth` (a bearer token is read from its file now).
    pub(super) fn headers(&self, auth: &VssAuth) -> Result<AuthHeaders, VssMirrorError> {
        match auth {
            VssAuth::Signature => Ok(AuthHeaders::Signature(self.auth)),
            VssAuth::BearerFile(path) => Ok(AuthHeaders::Bearer(read_token(path)?)),
        }
    }
}

/// The `Authorization` header of every request.
pub(super) enum AuthHeaders {
    Signature(SecretKey),
    Bearer(String),
}

/// vss-auth-impls `signature.rs`: hex of the compressed public key, hex of the compact ECDSA
/// signature over SHA-256(constant ‖ public key ‖ time), then the time (Unix seconds, decimal).
pub(super) fn signature_token(key: &SecretKey, now: u64) -> String {
    let secp = Secp256k1::signing_only();
    let public = PublicKey::from_secret_key(&secp, key).serialize();
    let time = now.to_string();
    let mut engine = sha256::Hash::engine();
    ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, SIGNING_CONSTANT);
    ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, &public);
    ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, time.as_bytes());
    let digest = sha256::Hash::from_engine(engine).to_byte_array();
    let signature = secp.sign_ecdsa(&Message::from_digest(digest), key).serialize_compact();
    format!("{}{}{time}", hex(&public), hex(&signature))
}

#[async_trait::async_trait]
impl VssHeaderProvider for AuthHeaders {
    async fn get_headers(&self, _request: &[u8]) -> Result<HashMap<String, String>, VssHeaderProviderError> {
        let value = match self {
            AuthHeaders::Signature(key) => signature_token(key, crate::unix_now()),
            AuthHeaders::Bearer(token) => format!("Bearer {token}"),
        };
        Ok(HashMap::from([("Authorization".to_string(), value)]))
    }
}

/// The token in `path`: a file not readable by group or others, holding one token. The
/// errors never include its contents.
pub(super) fn read_token(path: &std::path::Path) -> Result<String, VssMirrorError> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |why: String| VssMirrorError::Settings(format!("the VSS token file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad("it can be read by others: chmod 600 it".into()));
    }
    let bytes = crate::files::read_untrusted(path, 16 * 1024).map_err(|e| bad(e.to_string()))?;
    let token = String::from_utf8(bytes).map_err(|_| bad("not text".into()))?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(bad("it does not hold one token".into()));
    }
    Ok(token.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_token_verifies_as_the_server_checks_it() {
        let key = SecretKey::from_slice(&[7u8; 32]).expect("key");
        let token = signature_token(&key, 1_700_000_000);
        assert!(token.is_ascii() && token.len() > (33 + 64) * 2);
        let (public, rest) = token.split_at(66);
        let (signature, time) = rest.split_at(128);
        assert_eq!(time, "1700000000");
        let secp = Secp256k1::verification_only();
        let public = PublicKey::from_slice(&unhex(public)).expect("public key");
        let signature = ldk_node::bitcoin::secp256k1::ecdsa::Signature::from_compact(&unhex(signature))
            .expect("signature");
        let mut engine = sha256::Hash::engine();
        ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, SIGNING_CONSTANT);
        ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, &public.serialize());
        ldk_node::bitcoin::hashes::HashEngine::input(&mut engine, time.as_bytes());
        let digest = sha256::Hash::from_engine(engine).to_byte_array();
        secp.verify_ecdsa(&Message::from_digest(digest), &signature, &public).expect("verifies");
        assert_eq!(SIGNING_CONSTANT.len(), 64);
    }

    #[test]
    fn values_open_under_their_own_name_only_and_names_are_opaque() {
        let keys = VssKeys::derive(&Seed::generate(), crate::config::Network::Regtest).expect("keys");
        let sealed = keys.seal("a", b"channel state").expect("seal");
        assert_eq!(keys.open("a", &sealed).expect("open"), b"channel state");
        assert!(matches!(keys.open("b", &sealed), Err(VssMirrorError::WrongSeed)));
        assert!(matches!(keys.open("a", &sealed[..20]), Err(VssMirrorError::WrongSeed)));
        let other = VssKeys::derive(&Seed::generate(), crate::config::Network::Regtest).expect("keys");
        assert!(matches!(other.open("a", &sealed), Err(VssMirrorError::WrongSeed)));
        assert_ne!(keys.name("head"), other.name("head"));
        assert_eq!(keys.name("head").len(), 64);
        assert!(!keys.name("head").contains("head") && keys.store_id.starts_with("boltbox-"));
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2).expect("pair"), 16).expect("hex"))
            .collect()
    }
}
