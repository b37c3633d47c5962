//! The compile cache: compiled components on disk, so that a restart with many plugins does
//! not recompile them (a Python component takes seconds to compile, milliseconds to load).
//!
//! Key: SHA-256 of the `.wasm` bytes plus wasmtime's engine compatibility hash (version,
//! target, settings), so any engine change misses. Entry: `QUARRYC1` magic, SHA-256 of the
//! payload, payload (`Component::serialize`). An entry is deserialized only after its hash
//! checks out; anything wrong (truncated, corrupt, stale) is deleted and recompiled, never
//! trusted blindly.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"QUARRYC1";
const HASH_LEN: usize = 32;

/// Counts compilations and cache hits, so tests and `quarry plugins` can tell what happened.
#[derive(Debug, Default)]
pub struct CompileStats {
    /// Components compiled from `.wasm` bytes.
    pub compiled: AtomicU64,
    /// Components loaded from the cache.
    pub cache_hits: AtomicU64,
    /// Cache entries found unusable (corrupt, stale) and replaced.
    pub cache_rejected: AtomicU64,
}

/// The on-disk cache of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{wasm_sha256}-{:016x}.cwasm", h.finish()))
    }

    /// The cached component for these bytes, if a sound entry exists.
    pub fn load(
        &self,
        engine: &Engine,
        wasm_sha256: &str,
        stats: &CompileStats,
    ) -> Option<Component> {
        let path = self.entry(engine, wasm_sha256);
        let bytes = std::fs::read(&path).ok()?;
        let reject = |why: &str| {
            tracing::warn!(entry = %path.display(), "compile cache entry unusable ({why}); recompiling");
            stats.cache_rejected.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(&path);
            None
        };
        if bytes.len() < MAGIC.len() + HASH_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return reject("bad header");
        }
        let (hash, payload) = bytes[MAGIC.len()..].split_at(HASH_LEN);
        if Sha256::digest(payload).as_slice() != hash {
            return reject("checksum mismatch");
        }
        // SAFETY: the payload is byte-for-byte what `store` wrote from `Component::serialize`
        // (checked by its SHA-256 above), for an engine with the same compatibility hash;
        // wasmtime additionally checks version and settings compatibility itself.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(c) => {
                stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Some(c)
            }
            Err(e) => reject(&format!("{e:#}")),
        }
    }

    /// Stores a compiled component; failures only cost a recompile later, so they are logged.
    pub fn store(&self, engine: &Engine, wasm_sha256: &str, component: &Component) {
        let result = (|| -> anyhow::Result<()> {
            let payload = component.serialize().map_err(anyhow::Error::from)?;
            std::fs::create_dir_all(&self.dir)?;
            let path = self.entry(engine, wasm_sha256);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut data = Vec::with_capacity(MAGIC.len() + HASH_LEN + payload.len());
            data.extend_from_slice(MAGIC);
            data.extend_from_slice(&Sha256::digest(&payload));
            data.extend_from_slice(&payload);
            std::fs::write(&tmp, &data)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), "cannot store a compiled component: {e:#}");
        }
    }
}
