//! Hand-written declarations of the TensorFlow C API functions the backend uses
//! (`tensorflow/c/c_api.h`, `tf_tensor.h`, `tf_status.h`, `tf_tstring.h` of the
//! `tensorflow-cpu` wheel), resolved at run time with `libloading`.
//!
//! TensorFlow splits them over two libraries: `libtensorflow_framework.so.2` (tensors,
//! statuses, strings) and `libtensorflow_cc.so.2` (graphs, sessions, SavedModel
//! loading). The framework is opened first, by path, then the cc library, which
//! names it as a dependency and so binds to that copy; each symbol is then looked
//! up in the cc library and, failing that, in the framework.
//!
//! Both are opened `RTLD_LOCAL`, as Python's `import tensorflow` opens them: the
//! framework exports its own copy of BoringSSL (`EVP_*`, `SSL_*`, …), and made
//! global it took the place of OpenSSL's functions for any library loaded after it
//! (Python's `_hashlib`, so `import pandas` after loading a SavedModel in the
//! Python package died with SIGSEGV).

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

pub enum TF_Status {}
pub enum TF_Graph {}
pub enum TF_Operation {}
pub enum TF_Session {}
pub enum TF_SessionOptions {}
pub enum TF_Tensor {}

#[repr(C)]
pub struct TF_Buffer {
    pub data: *const c_void,
    pub length: usize,
    pub data_deallocator: Option<unsafe extern "C" fn(*mut c_void, usize)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TF_Output {
    pub oper: *mut TF_Operation,
    pub index: c_int,
}

/// `TF_TString` (`tensorflow/core/platform/ctstring_internal.h`): 24 bytes, 8-aligned,
/// handled only through the library's `TF_String*` functions.
#[repr(C, align(8))]
pub struct TF_TString {
    _opaque: [u8; 24],
}

/// `TF_DataType` values (equal to `tensorflow.DataType`'s `DT_*` numbers).
pub const TF_FLOAT: c_int = 1;
pub const TF_DOUBLE: c_int = 2;
pub const TF_INT32: c_int = 3;
pub const TF_UINT8: c_int = 4;
pub const TF_INT16: c_int = 5;
pub const TF_INT8: c_int = 6;
pub const TF_STRING: c_int = 7;
pub const TF_INT64: c_int = 9;
pub const TF_BOOL: c_int = 10;
pub const TF_UINT16: c_int = 17;
pub const TF_UINT32: c_int = 22;
pub const TF_UINT64: c_int = 23;

/// The library file names in the wheel's `tensorflow/` directory.
pub const FRAMEWORK_LIBRARY: &str = "libtensorflow_framework.so.2";
pub const CC_LIBRARY: &str = "libtensorflow_cc.so.2";

macro_rules! api {
    ($($name:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The loaded libraries and the functions taken from them. The libraries are
        /// kept so the function pointers stay valid for the life of the process.
        pub struct Api {
            _framework: Library,
            _cc: Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            /// Opens the two libraries in `dir` and resolves every function.
            pub fn load(dir: &Path) -> Result<Api, String> {
                let open = |name: &str| -> Result<Library, String> {
                    let path: PathBuf = dir.join(name);
                    // SAFETY: loading TensorFlow runs its static initialisers, which
                    // is what the library is built for.
                    unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
                        .map_err(|e| {
                            // libloading's message is only "dlopen failed"; dlerror's
                            // (which file is missing, which symbol) is its source.
                            let reason = std::error::Error::source(&e)
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default();
                            format!("cannot load {}: {e}{reason}", path.display())
                        })
                };
                let framework = open(FRAMEWORK_LIBRARY)?;
                let cc = open(CC_LIBRARY)?;
                $(
                    let $name = {
                        let symbol = concat!(stringify!($name), "\0").as_bytes();
                        // SAFETY: the declared type is the one of the C header.
                        unsafe {
                            cc.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(symbol)
                                .or_else(|_| framework.get(symbol))
                                .map(|f| *f)
                                .map_err(|e| format!(
                                    "TensorFlow library in {} lacks {}: {e}",
                                    dir.display(),
                                    stringify!($name)
                                ))?
                        }
                    };
                )*
                Ok(Api { _framework: framework, _cc: cc, $($name,)* })
            }
        }
    };
}

api! {
    TF_Version: fn() -> *const c_char;
    TF_NewStatus: fn() -> *mut TF_Status;
    TF_DeleteStatus: fn(*mut TF_Status);
    TF_GetCode: fn(*const TF_Status) -> c_int;
    TF_Message: fn(*const TF_Status) -> *const c_char;
    TF_NewBuffer: fn() -> *mut TF_Buffer;
    TF_DeleteBuffer: fn(*mut TF_Buffer);
    TF_NewSessionOptions: fn() -> *mut TF_SessionOptions;
    TF_SetConfig: fn(*mut TF_SessionOptions, *const c_void, usize, *mut TF_Status);
    TF_DeleteSessionOptions: fn(*mut TF_SessionOptions);
    TF_NewGraph: fn() -> *mut TF_Graph;
    TF_DeleteGraph: fn(*mut TF_Graph);
    TF_GraphOperationByName: fn(*mut TF_Graph, *const c_char) -> *mut TF_Operation;
    TF_OperationNumOutputs: fn(*mut TF_Operation) -> c_int;
    TF_GraphNextOperation: fn(*mut TF_Graph, *mut usize) -> *mut TF_Operation;
    TF_OperationOpType: fn(*mut TF_Operation) -> *const c_char;
    TF_OperationOutputType: fn(TF_Output) -> c_int;
    TF_LoadSessionFromSavedModel: fn(
        *const TF_SessionOptions,
        *const TF_Buffer,
        *const c_char,
        *const *const c_char,
        c_int,
        *mut TF_Graph,
        *mut TF_Buffer,
        *mut TF_Status
    ) -> *mut TF_Session;
    TF_CloseSession: fn(*mut TF_Session, *mut TF_Status);
    TF_DeleteSession: fn(*mut TF_Session, *mut TF_Status);
    TF_SessionRun: fn(
        *mut TF_Session,
        *const TF_Buffer,
        *const TF_Output,
        *const *mut TF_Tensor,
        c_int,
        *const TF_Output,
        *mut *mut TF_Tensor,
        c_int,
        *const *const TF_Operation,
        c_int,
        *mut TF_Buffer,
        *mut TF_Status
    );
    TF_AllocateTensor: fn(c_int, *const i64, c_int, usize) -> *mut TF_Tensor;
    TF_DeleteTensor: fn(*mut TF_Tensor);
    TF_TensorType: fn(*const TF_Tensor) -> c_int;
    TF_NumDims: fn(*const TF_Tensor) -> c_int;
    TF_Dim: fn(*const TF_Tensor, c_int) -> i64;
    TF_TensorByteSize: fn(*const TF_Tensor) -> usize;
    TF_TensorData: fn(*const TF_Tensor) -> *mut c_void;
    TF_StringInit: fn(*mut TF_TString);
    TF_StringCopy: fn(*mut TF_TString, *const c_char, usize);
    TF_StringGetDataPointer: fn(*const TF_TString) -> *const c_char;
    TF_StringGetSize: fn(*const TF_TString) -> usize;
    TF_StringDealloc: fn(*mut TF_TString);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library that cannot be opened is named with the system's reason (the
    /// message was "cannot load …/libtensorflow_framework.so.2: dlopen failed",
    /// without saying the file was not there).
    #[test]
    fn a_library_that_cannot_be_opened_is_named_with_the_reason() {
        // Only the cc library, as a copy that lost the framework beside it.
        let dir = std::env::temp_dir().join(format!("ferroserve-tf-ffi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CC_LIBRARY), b"").unwrap();
        let error = Api::load(&dir).err();
        std::fs::remove_dir_all(&dir).unwrap();
        let error = error.expect("no library to load");
        assert!(
            error.contains(&format!(
                "{}: cannot open shared object file: No such file or directory",
                dir.join(FRAMEWORK_LIBRARY).display()
            )),
            "{error}"
        );
    }
}
