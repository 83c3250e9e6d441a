//! TensorFlow SavedModels through TensorFlow's C API, loaded at run time from the
//! `tensorflow-cpu` wheel's libraries (see [`ffi`]).
//!
//! The libraries are located once per process ([`locate_library`]) and only when a
//! SavedModel is first loaded, so a repository without SavedModels never loads
//! TensorFlow, and a missing library is an error on each SavedModel version (it goes
//! to ERROR) rather than a crash.
//!
//! A SavedModel is loaded with `TF_LoadSessionFromSavedModel` under the tags of its
//! `[tensorflow]` config (default `serve`); the loader gives back the MetaGraphDef,
//! whose SignatureDefs say which graph tensors each signature's named inputs and
//! outputs are. `serving_default` (else the first signature by name) is the one
//! [`Backend::signature`] describes; the others are reached by name through
//! [`Backend::predict_signature`].

pub mod ffi;
mod proto;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};

use prost::Message;

use super::{Backend, BackendError, BackendOptions, ModelTraits, NamedSignature, Signature};
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec};
use ffi::Api;
use proto::{tensor_info, SignatureDef, TensorInfo};

/// The file that makes a version directory a SavedModel.
pub const SAVED_MODEL_FILE: &str = "saved_model.pb";

// TF Serving's default signature key, which the Backend trait's defaults answer to.
pub use super::DEFAULT_SIGNATURE;

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
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("FERROSERVE_TENSORFLOW_PATH").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        if let Some(up) = dir.parent() {
            candidates.push(dir.clone());
            candidates.push(up.to_path_buf());
        } else {
            candidates.push(dir);
        }
    }
    if let Some(found) = candidates.iter().find(|c| holds(c)) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "TensorFlow library {} not found (tried: {}); run scripts/setup.sh, or set \
         --tensorflow-path / FERROSERVE_TENSORFLOW_PATH to the tensorflow-cpu wheel's \
         tensorflow directory",
        ffi::CC_LIBRARY,
        tried.join(", ")
    ))
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

fn api(options: &BackendOptions) -> Result<&'static Api, String> {
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
fn note_intra_op_pool(dir: &Path, intra_op_threads: u32) {
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

/// The entries of a version directory that are TensorFlow's to read when it loads a
/// SavedModel: the graph (`saved_model.pb`, else `saved_model.pbtxt`), its
/// fingerprint, and everything under `variables/` and `assets/`. (`assets.extra`
/// holds TF Serving's warm-up file, which the server reads itself as a regular file;
/// `config.toml` and `warmup.json` are the server's too.)
const SAVED_MODEL_FILES: [&str; 3] = [SAVED_MODEL_FILE, "saved_model.pbtxt", "fingerprint.pb"];
const SAVED_MODEL_DIRS: [&str; 2] = ["variables", "assets"];

/// The most entries [`check_regular_files`] looks at under `variables/` and
/// `assets/`: a SavedModel has a handful (one index, a few shards, some vocabulary
/// files), and the check must end on any tree.
pub const MAX_SAVED_MODEL_ENTRIES: usize = 10_000;

/// What a file that is neither a regular file nor a directory is, in the words the
/// server's `regular_file` module uses for a `config.toml` or warm-up file.
fn non_regular_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Refuses a SavedModel directory where TensorFlow would read something that is not
/// a regular file: a FIFO named `variables/variables.data-00000-of-00001` made
/// `TF_LoadSessionFromSavedModel` wait for a writer for ever, holding the version in
/// LOADING where it could be neither unloaded nor deleted, and a device such as
/// `/dev/zero` never ends. The error names the entry relative to `dir` and what it
/// is.
///
/// Links are followed, as TensorFlow (and the server's other readers) follow them,
/// into directories too (`variables` is often a link to shared storage); a
/// directory reached twice (a link loop) is walked once. An entry that cannot be
/// examined (a dangling link, no permission) is left to TensorFlow, which fails on
/// it at once rather than waiting. At most [`MAX_SAVED_MODEL_ENTRIES`] entries are
/// looked at; a tree with more is refused, so the check always ends.
pub fn check_regular_files(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let not_regular = |relative: &Path, kind: std::fs::FileType| {
        format!(
            "{}: it is {}, not a regular file",
            relative.display(),
            non_regular_kind(kind)
        )
    };
    for name in SAVED_MODEL_FILES {
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_file() => {}
            Ok(meta) if meta.is_dir() => {
                return Err(format!("{name}: it is a directory, not a regular file"))
            }
            Ok(meta) => return Err(not_regular(Path::new(name), meta.file_type())),
            Err(_) => {}
        }
    }
    let mut seen_dirs: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut entries = 0usize;
    for name in SAVED_MODEL_DIRS {
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_dir() => {
                if seen_dirs.insert((meta.dev(), meta.ino())) {
                    pending.push(PathBuf::from(name));
                }
            }
            // A regular file named `variables`: TensorFlow finds no variables in it,
            // which the load reports.
            Ok(meta) if meta.is_file() => {}
            Ok(meta) => return Err(not_regular(Path::new(name), meta.file_type())),
            Err(_) => {}
        }
    }
    while let Some(relative_dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(dir.join(&relative_dir)) else {
            continue;
        };
        for entry in listing.flatten() {
            entries += 1;
            if entries > MAX_SAVED_MODEL_ENTRIES {
                return Err(format!(
                    "{} and {} hold more than {MAX_SAVED_MODEL_ENTRIES} entries",
                    SAVED_MODEL_DIRS[0], SAVED_MODEL_DIRS[1]
                ));
            }
            let relative = relative_dir.join(entry.file_name());
            match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_file() => {}
                Ok(meta) if meta.is_dir() => {
                    if seen_dirs.insert((meta.dev(), meta.ino())) {
                        pending.push(relative);
                    }
                }
                Ok(meta) => return Err(not_regular(&relative, meta.file_type())),
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// A `TF_Status`, deleted on drop.
struct Status<'a> {
    api: &'a Api,
    raw: *mut ffi::TF_Status,
}

impl<'a> Status<'a> {
    fn new(api: &'a Api) -> Status<'a> {
        // SAFETY: plain constructor.
        Status {
            api,
            raw: unsafe { (api.TF_NewStatus)() },
        }
    }

    /// `Ok` when the status is OK, else TensorFlow's code and message.
    fn check(&self) -> Result<(), (c_int, String)> {
        // SAFETY: `raw` is a live status; the message lives as long as it.
        unsafe {
            let code = (self.api.TF_GetCode)(self.raw);
            if code == 0 {
                return Ok(());
            }
            let message = CStr::from_ptr((self.api.TF_Message)(self.raw))
                .to_string_lossy()
                .into_owned();
            Err((code, message))
        }
    }
}

impl Drop for Status<'_> {
    fn drop(&mut self) {
        // SAFETY: made by TF_NewStatus, deleted once.
        unsafe { (self.api.TF_DeleteStatus)(self.raw) }
    }
}

/// TensorFlow's `TF_Code` for INVALID_ARGUMENT.
const TF_INVALID_ARGUMENT: c_int = 3;
/// TensorFlow's code for an allocation that failed (`OOM when allocating ...`).
const TF_RESOURCE_EXHAUSTED: c_int = 8;
const TF_DEADLINE_EXCEEDED: c_int = 4;
/// The most dimensions a TensorFlow tensor has (`TensorShape::MaxDimensions()`).
const TF_MAX_DIMS: usize = 254;

/// A serialized `tensorflow.RunOptions` with `timeout_in_ms` (field 2, a varint) set
/// to `timeout`, at least 1 ms (0 would mean none).
fn run_options_with_timeout(timeout: std::time::Duration) -> Vec<u8> {
    let mut ms = timeout.as_millis().clamp(1, i64::MAX as u128) as u64;
    let mut out = vec![0x10];
    while ms >= 0x80 {
        out.push((ms as u8 & 0x7f) | 0x80);
        ms >>= 7;
    }
    out.push(ms as u8);
    out
}

/// One SignatureDef, resolved against the graph.
struct LoadedSignature {
    name: String,
    /// The graph tensor of each of `signature.inputs`, in the same order.
    inputs: Vec<ffi::TF_Output>,
    /// The graph tensor of each of `signature.outputs`, in the same order.
    outputs: Vec<ffi::TF_Output>,
}

pub struct TensorflowBackend {
    api: &'static Api,
    /// TensorFlow's sessions are safe to run from several threads at once, so one
    /// session serves every inference thread.
    session: *mut ffi::TF_Session,
    graph: *mut ffi::TF_Graph,
    /// Sorted by name, the default signature at `default`.
    signatures: Vec<LoadedSignature>,
    /// The same, as the model describes them (one entry per `signatures`).
    described: Vec<NamedSignature>,
    default: usize,
    traits: ModelTraits,
}

// SAFETY: a TF_Session may be run concurrently from several threads (c_api.h:
// "TF_SessionRun ... may be called concurrently"); the graph is only read after
// loading, and both are freed once, on drop.
unsafe impl Send for TensorflowBackend {}
unsafe impl Sync for TensorflowBackend {}

impl Drop for TensorflowBackend {
    fn drop(&mut self) {
        let status = Status::new(self.api);
        // SAFETY: made at load, freed once here.
        unsafe {
            (self.api.TF_CloseSession)(self.session, status.raw);
            (self.api.TF_DeleteSession)(self.session, status.raw);
            (self.api.TF_DeleteGraph)(self.graph);
        }
    }
}

fn dtype_from_tf(code: i32) -> Option<DataType> {
    Some(match code {
        ffi::TF_FLOAT => DataType::F32,
        ffi::TF_DOUBLE => DataType::F64,
        ffi::TF_INT32 => DataType::I32,
        ffi::TF_INT64 => DataType::I64,
        ffi::TF_UINT8 => DataType::U8,
        ffi::TF_INT8 => DataType::I8,
        ffi::TF_INT16 => DataType::I16,
        ffi::TF_UINT16 => DataType::U16,
        ffi::TF_UINT32 => DataType::U32,
        ffi::TF_UINT64 => DataType::U64,
        ffi::TF_BOOL => DataType::Bool,
        ffi::TF_STRING => DataType::Bytes,
        _ => return None,
    })
}

fn dtype_to_tf(dtype: DataType) -> Option<c_int> {
    Some(match dtype {
        DataType::F32 => ffi::TF_FLOAT,
        DataType::F64 => ffi::TF_DOUBLE,
        DataType::I32 => ffi::TF_INT32,
        DataType::I64 => ffi::TF_INT64,
        DataType::U8 => ffi::TF_UINT8,
        DataType::I8 => ffi::TF_INT8,
        DataType::I16 => ffi::TF_INT16,
        DataType::U16 => ffi::TF_UINT16,
        DataType::U32 => ffi::TF_UINT32,
        DataType::U64 => ffi::TF_UINT64,
        DataType::Bool => ffi::TF_BOOL,
        DataType::Bytes => ffi::TF_STRING,
        DataType::F16 => return None,
    })
}

/// TF Serving's output keys of a classification signature
/// (`signature_constants.h`): each row's class names, and their scores.
pub const CLASSIFY_OUTPUT_CLASSES: &str = "classes";
pub const CLASSIFY_OUTPUT_SCORES: &str = "scores";

/// The `classes` (strings) and `scores` (floats) outputs of a signature that has
/// both, as TF1 Estimators' `classification_signature_def` writes them: one class
/// name and one score per column, `[batch, classes]` each.
pub fn classification_outputs(signature: &Signature) -> Option<(&str, &str)> {
    let has = |name: &str, dtype_fits: fn(DataType) -> bool| {
        signature
            .outputs
            .iter()
            .any(|o| o.name == name && dtype_fits(o.dtype))
    };
    (has(CLASSIFY_OUTPUT_CLASSES, |d| d == DataType::Bytes)
        && has(CLASSIFY_OUTPUT_SCORES, |d| {
            matches!(d, DataType::F16 | DataType::F32 | DataType::F64)
        }))
    .then_some((CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES))
}

/// A TensorInfo's graph tensor name, `op:index`.
fn tensor_name(info: &TensorInfo) -> Option<&str> {
    // Sparse and composite encodings are not declared (see `proto`): they decode as
    // no encoding at all.
    match info.encoding.as_ref()? {
        tensor_info::Encoding::Name(name) => Some(name),
    }
}

impl TensorflowBackend {
    /// Loads the SavedModel in `dir` (the directory holding `saved_model.pb`).
    pub fn load(
        dir: &Path,
        options: &BackendOptions,
        config: &TensorflowConfig,
    ) -> Result<TensorflowBackend, BackendError> {
        let load_err = |what: &str, message: String| {
            BackendError::Load(format!(
                "cannot load TensorFlow SavedModel {}: {what}{message}",
                dir.display()
            ))
        };
        // Before TensorFlow is loaded or called: a FIFO it opened would hold this
        // thread, and the version, for good.
        check_regular_files(dir).map_err(|m| load_err("", m))?;
        let api = api(options).map_err(BackendError::Load)?;
        let export_dir = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| load_err("", "the path holds a NUL byte".into()))?;
        let tags: Vec<CString> = config
            .tags
            .iter()
            .map(|t| CString::new(t.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| load_err("", "a tag holds a NUL byte".into()))?;
        let tag_ptrs: Vec<*const c_char> = tags.iter().map(|t| t.as_ptr()).collect();
        for (name, n) in [
            ("intra_op_threads", config.intra_op_threads),
            ("inter_op_threads", config.inter_op_threads),
        ] {
            if n > MAX_THREADS {
                return Err(load_err(
                    "",
                    format!("{name} = {n} is more than the {MAX_THREADS} allowed"),
                ));
            }
        }
        let config_proto = proto::ConfigProto {
            intra_op_parallelism_threads: config.intra_op_threads as i32,
            inter_op_parallelism_threads: config.inter_op_threads as i32,
            // Without it TensorFlow runs every session on one process-wide inter-op
            // pool, sized by the first session created: a model's `inter_op_threads
            // = 1` made every other model's runs wait for its run. A session that
            // asks for no size keeps the shared pool, which then always has
            // TensorFlow's default size.
            use_per_session_threads: config.inter_op_threads > 0,
        }
        .encode_to_vec();
        let status = Status::new(api);
        // SAFETY: every pointer passed is live for the call; what TensorFlow returns
        // is owned here and freed below or by the backend's Drop.
        unsafe {
            let session_options = (api.TF_NewSessionOptions)();
            (api.TF_SetConfig)(
                session_options,
                config_proto.as_ptr().cast(),
                config_proto.len(),
                status.raw,
            );
            if let Err((_, m)) = status.check() {
                (api.TF_DeleteSessionOptions)(session_options);
                return Err(load_err("session options: ", m));
            }
            let graph = (api.TF_NewGraph)();
            let meta_graph = (api.TF_NewBuffer)();
            let session = (api.TF_LoadSessionFromSavedModel)(
                session_options,
                std::ptr::null(),
                export_dir.as_ptr(),
                tag_ptrs.as_ptr(),
                tag_ptrs.len() as c_int,
                graph,
                meta_graph,
                status.raw,
            );
            (api.TF_DeleteSessionOptions)(session_options);
            if let Err((_, m)) = status.check() {
                (api.TF_DeleteBuffer)(meta_graph);
                (api.TF_DeleteGraph)(graph);
                return Err(load_err("", m));
            }
            note_intra_op_pool(dir, config.intra_op_threads);
            let bytes =
                std::slice::from_raw_parts((*meta_graph).data.cast::<u8>(), (*meta_graph).length);
            let decoded = proto::MetaGraphDef::decode(bytes);
            (api.TF_DeleteBuffer)(meta_graph);
            let mut backend = TensorflowBackend {
                api,
                session,
                graph,
                signatures: Vec::new(),
                described: Vec::new(),
                default: 0,
                traits: ModelTraits::default(),
            };
            let meta_graph = decoded.map_err(|e| load_err("MetaGraphDef: ", e.to_string()))?;
            // TensorFlow loads a SavedModel whose variables are gone (it skips the
            // restore) and fails every run after; refuse it now instead.
            if !dir.join("variables/variables.index").is_file() {
                if let Some(op) = backend.variable_op() {
                    return Err(load_err(
                        "",
                        format!(
                            "variables/variables.index is missing, but the graph reads \
                             variables (a {op} operation)"
                        ),
                    ));
                }
            }
            backend.resolve_signatures(meta_graph.signature_def)?;
            Ok(backend)
        }
    }

    fn resolve_signatures(
        &mut self,
        defs: HashMap<String, SignatureDef>,
    ) -> Result<(), BackendError> {
        let mut defs: Vec<(String, SignatureDef)> = defs.into_iter().collect();
        defs.sort_by(|a, b| a.0.cmp(&b.0));
        // `__saved_model_init_op` is a SignatureDef holding only the init op.
        defs.retain(|(name, def)| !name.starts_with("__") && !def.outputs.is_empty());
        if defs.is_empty() {
            return Err(BackendError::Load(
                "the SavedModel has no SignatureDef with outputs under these tags".into(),
            ));
        }
        let mut skipped: Vec<String> = Vec::new();
        for (name, def) in defs {
            let specs = |map: &HashMap<String, TensorInfo>| {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut specs = Vec::new();
                let mut outputs = Vec::new();
                let mut names = Vec::new();
                for key in keys {
                    let (spec, output) = self.resolve_tensor(&name, key, &map[key])?;
                    specs.push(spec);
                    outputs.push(output);
                    names.push(tensor_name(&map[key]).unwrap_or_default().to_string());
                }
                Ok::<_, BackendError>((specs, outputs, names))
            };
            // A signature ferroserve cannot serve (a sparse tensor, an unsupported
            // dtype) is left out, as long as another one remains.
            let resolved = specs(&def.inputs).and_then(|i| Ok((i, specs(&def.outputs)?)));
            let ((input_specs, inputs, input_tensors), (output_specs, outputs, output_tensors)) =
                match resolved {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::warn!(signature = %name, error = %e, "SavedModel signature not served");
                        skipped.push(e.to_string());
                        continue;
                    }
                };
            self.signatures.push(LoadedSignature {
                name: name.clone(),
                inputs,
                outputs,
            });
            self.described.push(NamedSignature {
                name: name.clone(),
                method_name: def.method_name.clone(),
                signature: Signature {
                    inputs: input_specs,
                    outputs: output_specs,
                },
                input_tensors,
                output_tensors,
            });
        }
        if self.signatures.is_empty() {
            return Err(BackendError::Load(format!(
                "no signature of the SavedModel can be served: {}",
                skipped.join("; ")
            )));
        }
        self.default = self
            .signatures
            .iter()
            .position(|s| s.name == DEFAULT_SIGNATURE)
            .unwrap_or(0);
        let default = &self.described[self.default].signature;
        self.traits = match classification_outputs(default) {
            // A classification signature's `classes` holds every class name of each
            // row, whatever the input (TensorFlow then prunes the input away): the
            // answer is read from both, as TF Serving's Classify reads them.
            Some((classes, scores)) => ModelTraits {
                prediction_output: Some(classes.to_string()),
                probabilities_output: Some(scores.to_string()),
                ..ModelTraits::default()
            },
            None => ModelTraits {
                prediction_output: default.outputs.first().map(|o| o.name.clone()),
                ..ModelTraits::default()
            },
        };
        Ok(())
    }

    /// The name of a variable-creating operation of the graph, if it has one.
    fn variable_op(&self) -> Option<String> {
        let mut pos = 0usize;
        loop {
            // SAFETY: iterates the live graph with TensorFlow's own cursor; names
            // and types are NUL-terminated strings owned by the graph.
            unsafe {
                let op = (self.api.TF_GraphNextOperation)(self.graph, &mut pos);
                if op.is_null() {
                    return None;
                }
                let ty = CStr::from_ptr((self.api.TF_OperationOpType)(op));
                if matches!(ty.to_bytes(), b"VarHandleOp" | b"VariableV2" | b"Variable") {
                    return Some(ty.to_string_lossy().into_owned());
                }
            }
        }
    }

    /// The spec and graph tensor of one named input or output of a signature.
    fn resolve_tensor(
        &self,
        signature: &str,
        key: &str,
        info: &TensorInfo,
    ) -> Result<(TensorSpec, ffi::TF_Output), BackendError> {
        let what = || format!("signature {signature:?} tensor {key:?}");
        let name = tensor_name(info).ok_or_else(|| {
            BackendError::Load(format!(
                "{} is a sparse or composite tensor, which is not supported",
                what()
            ))
        })?;
        let (op, index) = match name.rsplit_once(':') {
            Some((op, index)) if index.parse::<c_int>().is_ok() => {
                (op, index.parse::<c_int>().unwrap_or(0))
            }
            _ => (name, 0),
        };
        let op_name = CString::new(op)
            .map_err(|_| BackendError::Load(format!("{}: bad tensor name", what())))?;
        // SAFETY: the graph is live; the name is NUL-terminated.
        let oper = unsafe { (self.api.TF_GraphOperationByName)(self.graph, op_name.as_ptr()) };
        if oper.is_null() {
            return Err(BackendError::Load(format!(
                "{}: the graph has no operation {op:?}",
                what()
            )));
        }
        // SAFETY: `oper` belongs to the live graph.
        if index < 0 || index >= unsafe { (self.api.TF_OperationNumOutputs)(oper) } {
            return Err(BackendError::Load(format!(
                "{}: operation {op:?} has no output {index}",
                what()
            )));
        }
        let dtype = dtype_from_tf(info.dtype).ok_or_else(|| {
            BackendError::Load(format!(
                "{} has unsupported dtype {}",
                what(),
                proto::dtype_name(info.dtype)
            ))
        })?;
        let shape = match &info.tensor_shape {
            Some(shape) if !shape.unknown_rank => shape.dim.iter().map(|d| d.size).collect(),
            // A tensor of unknown rank: any shape (TF Serving feeds whatever comes).
            _ => vec![crate::tensor::ANY_RANK],
        };
        Ok((
            TensorSpec {
                name: key.to_string(),
                dtype,
                shape,
            },
            ffi::TF_Output { oper, index },
        ))
    }

    fn find_index(&self, name: &str) -> Option<usize> {
        if name.is_empty() {
            return Some(self.default);
        }
        self.signatures.iter().position(|s| s.name == name)
    }

    fn run(
        &self,
        index: usize,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let signature = &self.signatures[index];
        let described = &self.described[index].signature;
        let mut feeds: Vec<ffi::TF_Output> = Vec::with_capacity(inputs.len());
        let mut values: Vec<OwnedTensor> = Vec::with_capacity(inputs.len());
        for (name, tensor) in &inputs {
            let i = described
                .inputs
                .iter()
                .position(|s| s.name == *name)
                .ok_or_else(|| {
                    BackendError::InvalidInput(format!(
                        "signature {:?} has no input {name:?}",
                        signature.name
                    ))
                })?;
            let spec = &described.inputs[i];
            if tensor.dtype() != spec.dtype {
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} is {} but the signature takes {}",
                    tensor.dtype(),
                    spec.dtype
                )));
            }
            if !spec.accepts_shape(tensor.shape()) {
                // Callers check shapes first (with their own messages); a kernel fed
                // a rank it does not take may abort the process rather than fail
                // (oneDNN's Conv2D), so no caller's tensor reaches TensorFlow unchecked.
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has shape {:?}, but the signature takes {:?} (-1: any size)",
                    tensor.shape(),
                    spec.shape
                )));
            }
            if tensor.shape().len() > TF_MAX_DIMS {
                // TF_AllocateTensor aborts the process on more (a CHECK in
                // TensorShape), so an input of any rank is bounded here.
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has {} dimensions; TensorFlow takes at most {TF_MAX_DIMS}",
                    tensor.shape().len()
                )));
            }
            if let Some(&d) = tensor.shape().iter().find(|&&d| i64::try_from(d).is_err()) {
                // Possible beside a dimension of 0 (no elements, so no size bound).
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has a dimension of {d}; TensorFlow takes at most {}",
                    i64::MAX
                )));
            }
            feeds.push(signature.inputs[i]);
            values.push(OwnedTensor::from_tensor(self.api, tensor)?);
        }
        if let Some(missing) = described
            .inputs
            .iter()
            .find(|s| !inputs.iter().any(|(n, _)| *n == s.name))
        {
            return Err(BackendError::InvalidInput(format!(
                "input {:?} is missing",
                missing.name
            )));
        }
        let wanted: Vec<usize> = if output_names.is_empty() {
            (0..signature.outputs.len()).collect()
        } else {
            output_names
                .iter()
                .map(|name| {
                    described
                        .outputs
                        .iter()
                        .position(|o| o.name == *name)
                        .ok_or_else(|| {
                            BackendError::InvalidInput(format!(
                                "signature {:?} has no output {name:?}",
                                signature.name
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        };
        let fetches: Vec<ffi::TF_Output> = wanted.iter().map(|&i| signature.outputs[i]).collect();
        let input_ptrs: Vec<*mut ffi::TF_Tensor> = values.iter().map(|v| v.raw).collect();
        let mut output_ptrs: Vec<*mut ffi::TF_Tensor> = vec![std::ptr::null_mut(); fetches.len()];
        let status = Status::new(self.api);
        // The run's deadline as TF Serving passes it: RunOptions.timeout_in_ms, past
        // which TensorFlow cancels the run between ops.
        let run_options = super::run_deadline().map(|d| {
            run_options_with_timeout(d.saturating_duration_since(std::time::Instant::now()))
        });
        let run_options_buffer = run_options.as_ref().map(|bytes| ffi::TF_Buffer {
            data: bytes.as_ptr().cast(),
            length: bytes.len(),
            data_deallocator: None,
        });
        // SAFETY: the arrays have the lengths passed; the input tensors and the run
        // options stay alive for the call; TensorFlow fills `output_ptrs` with
        // tensors we now own.
        unsafe {
            (self.api.TF_SessionRun)(
                self.session,
                run_options_buffer
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b as *const ffi::TF_Buffer),
                feeds.as_ptr(),
                input_ptrs.as_ptr(),
                feeds.len() as c_int,
                fetches.as_ptr(),
                output_ptrs.as_mut_ptr(),
                fetches.len() as c_int,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                status.raw,
            );
        }
        // The input tensors (`values`) live until the outputs are read: an output
        // may share an input's buffer (an identity signature).
        let outputs: Vec<OwnedTensor> = output_ptrs
            .into_iter()
            .filter(|p| !p.is_null())
            .map(|raw| OwnedTensor {
                api: self.api,
                raw,
                owns_strings: false,
            })
            .collect();
        if let Err((code, message)) = status.check() {
            let message = super::client_message(&message, None);
            return Err(match code {
                TF_INVALID_ARGUMENT => BackendError::InvalidInput(message),
                TF_RESOURCE_EXHAUSTED => BackendError::OutOfMemory(message),
                TF_DEADLINE_EXCEEDED => BackendError::DeadlineExceeded(message),
                _ => BackendError::Inference(message),
            });
        }
        wanted
            .iter()
            .zip(&outputs)
            .map(|(&i, out)| {
                let name = &described.outputs[i].name;
                Ok((name.clone(), out.to_tensor(name)?))
            })
            .collect()
    }
}

/// A `TF_Tensor` deleted on drop. Strings this process wrote into an input tensor
/// are freed first: TensorFlow's deallocator for `TF_AllocateTensor` frees only the
/// buffer.
struct OwnedTensor {
    api: &'static Api,
    raw: *mut ffi::TF_Tensor,
    owns_strings: bool,
}

impl Drop for OwnedTensor {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live tensor owned here; for strings, its buffer holds
        // that many initialised TF_TStrings.
        unsafe {
            if self.owns_strings {
                let n =
                    (self.api.TF_TensorByteSize)(self.raw) / std::mem::size_of::<ffi::TF_TString>();
                let data = (self.api.TF_TensorData)(self.raw).cast::<ffi::TF_TString>();
                for i in 0..n {
                    (self.api.TF_StringDealloc)(data.add(i));
                }
            }
            (self.api.TF_DeleteTensor)(self.raw);
        }
    }
}

impl OwnedTensor {
    fn from_tensor(api: &'static Api, tensor: &Tensor) -> Result<OwnedTensor, BackendError> {
        let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let code = dtype_to_tf(tensor.dtype()).ok_or_else(|| {
            BackendError::InvalidInput(format!(
                "{} inputs are not supported by the TensorFlow backend",
                tensor.dtype()
            ))
        })?;
        let n = tensor.len();
        let element = tensor
            .dtype()
            .fixed_size()
            .unwrap_or(std::mem::size_of::<ffi::TF_TString>());
        // SAFETY: the tensor is allocated with room for `n` elements and written
        // within it; it is owned by the returned value.
        unsafe {
            let raw =
                (api.TF_AllocateTensor)(code, dims.as_ptr(), dims.len() as c_int, n * element);
            if raw.is_null() {
                return Err(BackendError::Inference(
                    "TensorFlow could not allocate an input tensor".into(),
                ));
            }
            let data = (api.TF_TensorData)(raw);
            let mut owned = OwnedTensor {
                api,
                raw,
                owns_strings: false,
            };
            macro_rules! copy {
                ($v:expr) => {
                    if n > 0 {
                        std::ptr::copy_nonoverlapping($v.as_ptr(), data.cast(), n)
                    }
                };
            }
            match tensor.data() {
                TensorData::F32(v) => copy!(v),
                TensorData::F64(v) => copy!(v),
                TensorData::I32(v) => copy!(v),
                TensorData::I64(v) => copy!(v),
                TensorData::U8(v) => copy!(v),
                TensorData::I8(v) => copy!(v),
                TensorData::I16(v) => copy!(v),
                TensorData::U16(v) => copy!(v),
                TensorData::U32(v) => copy!(v),
                TensorData::U64(v) => copy!(v),
                TensorData::Bool(v) => {
                    let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
                    copy!(bytes)
                }
                TensorData::Bytes(v) => {
                    let strings = data.cast::<ffi::TF_TString>();
                    for i in 0..v.len() {
                        (api.TF_StringInit)(strings.add(i));
                    }
                    owned.owns_strings = true;
                    for (i, s) in v.iter().enumerate() {
                        (api.TF_StringCopy)(strings.add(i), s.as_ptr().cast(), s.len());
                    }
                }
                TensorData::F16(_) => unreachable!("refused above"),
            }
            Ok(owned)
        }
    }

    fn to_tensor(&self, name: &str) -> Result<Tensor, BackendError> {
        let api = self.api;
        // SAFETY: reads a live output tensor within its byte size.
        unsafe {
            let code = (api.TF_TensorType)(self.raw);
            let dtype = dtype_from_tf(code).ok_or_else(|| {
                BackendError::Inference(format!("output {name:?} has unsupported dtype {code}"))
            })?;
            let ndims = (api.TF_NumDims)(self.raw);
            let shape: Vec<usize> = (0..ndims)
                .map(|i| (api.TF_Dim)(self.raw, i).max(0) as usize)
                .collect();
            let n: usize = shape.iter().product();
            let data = (api.TF_TensorData)(self.raw);
            let bytes = (api.TF_TensorByteSize)(self.raw);
            let element = dtype
                .fixed_size()
                .unwrap_or(std::mem::size_of::<ffi::TF_TString>());
            if n > 0 && (data.is_null() || bytes < n * element) {
                return Err(BackendError::Inference(format!(
                    "output {name:?} holds {bytes} bytes for {n} elements"
                )));
            }
            macro_rules! read {
                ($t:ty) => {
                    if n == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(data.cast::<$t>(), n).to_vec()
                    }
                };
            }
            let values = match dtype {
                DataType::F32 => TensorData::F32(read!(f32)),
                DataType::F64 => TensorData::F64(read!(f64)),
                DataType::I32 => TensorData::I32(read!(i32)),
                DataType::I64 => TensorData::I64(read!(i64)),
                DataType::U8 => TensorData::U8(read!(u8)),
                DataType::I8 => TensorData::I8(read!(i8)),
                DataType::I16 => TensorData::I16(read!(i16)),
                DataType::U16 => TensorData::U16(read!(u16)),
                DataType::U32 => TensorData::U32(read!(u32)),
                DataType::U64 => TensorData::U64(read!(u64)),
                DataType::Bool => TensorData::Bool(read!(u8).into_iter().map(|b| b != 0).collect()),
                DataType::Bytes => {
                    let strings = data.cast::<ffi::TF_TString>();
                    TensorData::Bytes(
                        (0..n)
                            .map(|i| {
                                let s = strings.add(i);
                                let len = (api.TF_StringGetSize)(s);
                                let ptr = (api.TF_StringGetDataPointer)(s);
                                if len == 0 {
                                    Vec::new()
                                } else {
                                    std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec()
                                }
                            })
                            .collect(),
                    )
                }
                DataType::F16 => unreachable!("never mapped from TensorFlow"),
            };
            Tensor::new(shape, values).map_err(|e| BackendError::Inference(e.to_string()))
        }
    }
}

impl Backend for TensorflowBackend {
    fn format(&self) -> &'static str {
        "tensorflow"
    }

    fn signature(&self) -> &Signature {
        &self.described[self.default].signature
    }

    fn traits(&self) -> &ModelTraits {
        &self.traits
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        self.run(self.default, inputs, output_names)
    }

    fn signatures(&self) -> &[NamedSignature] {
        &self.described
    }

    fn signature_named(&self, name: &str) -> Option<&Signature> {
        self.find_index(name).map(|i| &self.described[i].signature)
    }

    fn predict_signature(
        &self,
        signature: &str,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let found = self.find_index(signature).ok_or_else(|| {
            BackendError::InvalidInput(format!("serving signature name {signature:?} not found"))
        })?;
        self.run(found, inputs, output_names)
    }
}

#[cfg(test)]
mod run_options_tests {
    use super::run_options_with_timeout;
    use std::time::Duration;

    /// `RunOptions { timeout_in_ms }` as protobuf writes it: tag 0x10, then the
    /// milliseconds as a varint; never 0 (no timeout).
    #[test]
    fn run_options_carry_the_timeout_in_milliseconds() {
        assert_eq!(
            run_options_with_timeout(Duration::from_millis(1500)),
            [0x10, 0xdc, 0x0b]
        );
        assert_eq!(
            run_options_with_timeout(Duration::from_millis(5)),
            [0x10, 5]
        );
        assert_eq!(run_options_with_timeout(Duration::ZERO), [0x10, 1]);
        assert_eq!(
            run_options_with_timeout(Duration::from_micros(300)),
            [0x10, 1]
        );
    }
}
