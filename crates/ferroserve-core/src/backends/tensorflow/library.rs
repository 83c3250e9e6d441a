//! Finding and loading TensorFlow's libraries (once per process), the settings
//! that are TensorFlow's own process-wide state, and a SavedModel's `[tensorflow]`
//! config.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use super::ffi::{self, Api};
use crate::backends::BackendOptions;

/// The process-wide TensorFlow library and the directory it came from. TensorFlow
/// cannot be unloaded, so the first successful load stays; a failure is not kept,
/// so a later load (after the library is installed) can succeed.
static API: parking_lot::Mutex<Option<(PathBuf, &'static Api)>> = parking_lot::Mutex::new(None);

/// Where the TensorFlow libraries are: the explicit setting (a directory, which
/// must hold them), else `FERROSERVE_TENSORFLOW_PATH`, else next to the running
/// executable (where `scripts/setup.sh` can put them) or one level up (test
/// binaries live in `target/<profile>/deps`).
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    let holds = |dir: &Path| dir.join(ffi::CC_LIBRARY).is_file();
    if let Some(dir) = configured {
        return if holds(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(format!(
                "TensorFlow library {} not found in {} (from --tensorflow-path or \
                 FERROSERVE_TENSORFLOW_PATH); give the directory of the tensorflow-cpu \
                 wheel's tensorflow package",
                ffi::CC_LIBRARY,
                dir.display()
            ))
        };
    }
    crate::backends::find_library("FERROSERVE_TENSORFLOW_PATH", Path::to_path_buf, holds).map_err(
        |tried| {
            format!(
                "TensorFlow library {} not found (tried: {tried}); run scripts/setup.sh, or \
                 set --tensorflow-path / FERROSERVE_TENSORFLOW_PATH to the tensorflow-cpu \
                 wheel's tensorflow directory",
                ffi::CC_LIBRARY,
            )
        },
    )
}

/// TensorFlow's switch for its oneDNN (MKL) kernels, read once, when the library first
/// runs a graph. The `tensorflow-cpu` wheel turns them on by default, and oneDNN's
/// kernels abort the whole process on input TensorFlow's own kernels answer with an
/// error (a `Conv2D` fed a tensor that is not of rank 4 fails a `CHECK` in
/// `tensor_format.h`) and fail on some they run (a max-pool of an empty image:
/// "could not create a descriptor"), so the server turns them off unless told
/// otherwise ([`default_onednn_off`]).
pub const ONEDNN_VARIABLE: &str = "TF_ENABLE_ONEDNN_OPTS";

/// Sets [`ONEDNN_VARIABLE`] to `0` unless it is set (a value the user chose stays,
/// `1` bringing the oneDNN kernels and their aborts back).
///
/// # Safety
/// Changes the process's environment: call it before any other thread starts (at
/// the top of `main`), since another thread reading the environment at the same
/// time is undefined behaviour. TensorFlow reads the variable later, from its own
/// threads, which is why it cannot be set where the library is loaded.
pub unsafe fn default_onednn_off() {
    if std::env::var_os(ONEDNN_VARIABLE).is_none() {
        std::env::set_var(ONEDNN_VARIABLE, "0");
    }
}

pub(super) fn api(options: &BackendOptions) -> Result<&'static Api, String> {
    let dir = locate_library(options.tensorflow_path.as_deref())?;
    let mut loaded = API.lock();
    if let Some((from, api)) = &*loaded {
        if *from != dir {
            tracing::warn!(loaded = %from.display(), asked = %dir.display(),
                "TensorFlow is already loaded from another directory; using it");
        }
        return Ok(api);
    }
    // Leaked on purpose: the library stays loaded for the life of the process.
    let api: &'static Api = Box::leak(Box::new(Api::load(&dir)?));
    // SAFETY: TF_Version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr((api.TF_Version)()) };
    let onednn = std::env::var(ONEDNN_VARIABLE)
        .unwrap_or_else(|_| "unset (TensorFlow's default: on)".into());
    tracing::info!(version = %version.to_string_lossy(), dir = %dir.display(),
        onednn_opts = %onednn, "TensorFlow loaded");
    *loaded = Some((dir, api));
    Ok(api)
}

/// How a SavedModel is loaded: the server's `[tensorflow]` table of a model's
/// `config.toml` (with the `serde` feature it deserializes from that table).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct TensorflowConfig {
    /// The MetaGraph's tag set to load. Default `["serve"]`, as TF Serving.
    pub tags: Vec<String>,
    /// TensorFlow's intra-op threads (`ConfigProto.intra_op_parallelism_threads`).
    /// Default 0: TensorFlow chooses (one per core), as TF Serving. At most
    /// [`MAX_THREADS`]. TensorFlow's CPU device has one intra-op pool per process,
    /// made by the first session created: only the first SavedModel the process
    /// loads sizes it, and a later one's different setting is logged as without
    /// effect.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "thread_count"))]
    pub intra_op_threads: u32,
    /// TensorFlow's inter-op threads (`ConfigProto.inter_op_parallelism_threads`).
    /// Default 0: the session shares TensorFlow's process-wide inter-op pool (its
    /// default size). Set, the session gets a pool of its own of that many threads
    /// (`use_per_session_threads`), which neither sizes nor waits on another
    /// model's. At most [`MAX_THREADS`].
    #[cfg_attr(feature = "serde", serde(deserialize_with = "thread_count"))]
    pub inter_op_threads: u32,
}

/// The most threads a `[tensorflow]` thread setting may ask for (the server's other
/// thread settings have the same bound): TensorFlow starts them all while the
/// version loads, and a pool of 100,000 took gigabytes before the first request.
pub const MAX_THREADS: u32 = 1024;

/// A thread count of `[tensorflow]`: 0 (TensorFlow chooses) to [`MAX_THREADS`].
#[cfg(feature = "serde")]
fn thread_count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = <u64 as serde::Deserialize>::deserialize(deserializer)?;
    match u32::try_from(n) {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "{n} threads is more than the {MAX_THREADS} allowed (0: TensorFlow chooses)"
        ))),
    }
}

impl Default for TensorflowConfig {
    fn default() -> TensorflowConfig {
        TensorflowConfig {
            tags: vec!["serve".to_string()],
            intra_op_threads: 0,
            inter_op_threads: 0,
        }
    }
}

/// The `intra_op_threads` of the first session this process created (0:
/// TensorFlow's default); `None` before it.
///
/// TensorFlow's CPU device takes its intra-op pool from a process-wide one that the
/// first session's options size (`LocalDevice`'s global pool); no `ConfigProto`
/// field gives a session a pool of its own. A later model's different setting
/// therefore does nothing, and is logged so rather than silently ignored.
static INTRA_OP_POOL: parking_lot::Mutex<Option<u32>> = parking_lot::Mutex::new(None);

/// Records the intra-op pool's size if this is the process's first session, or
/// warns that a different `intra_op_threads` of a later one has no effect.
pub(super) fn note_intra_op_pool(dir: &Path, intra_op_threads: u32) {
    let describe = |n: u32| match n {
        0 => "TensorFlow's default size".to_string(),
        n => format!("{n} threads"),
    };
    let mut pool = INTRA_OP_POOL.lock();
    match *pool {
        None => *pool = Some(intra_op_threads),
        Some(size) if intra_op_threads != 0 && intra_op_threads != size => {
            tracing::warn!(
                "{}: intra_op_threads = {intra_op_threads} has no effect: TensorFlow's \
                 intra-op pool is one per process, made with {} by the first SavedModel \
                 loaded",
                dir.display(),
                describe(size),
            );
        }
        Some(_) => {}
    }
}
