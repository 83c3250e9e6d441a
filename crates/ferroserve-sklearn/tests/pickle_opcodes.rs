//! Hand-assembled pickle streams, one behaviour each: opcodes that CPython 3 rarely or
//! never writes (protocol 0/1 forms, INST/OBJ, NEWOBJ_EX, POP_MARK…) and the exact
//! errors for misuse.

use std::sync::Arc;

use ferroserve_sklearn::value::{ArrayData, Value};
use ferroserve_sklearn::{read_pickle, LoadError};

fn list(items: Vec<Value>) -> Value {
    Value::List(Arc::new(items))
}

fn tuple(items: Vec<Value>) -> Value {
    Value::Tuple(Arc::new(items))
}

fn err(bytes: &[u8]) -> String {
    read_pickle(bytes).unwrap_err().to_string()
}

#[test]
fn integers_in_every_encoding() {
    let cases: &[(&[u8], Value)] = &[
        (b"I42\n.", Value::Int(42)),
        (b"I-7\n.", Value::Int(-7)),
        (b"I01\n.", Value::Bool(true)),
        (b"I00\n.", Value::Bool(false)),
        (b"L123L\n.", Value::Int(123)),
        (b"\x80\x02J\xfe\xff\xff\xff.", Value::Int(-2)),
        (b"\x80\x02K\xff.", Value::Int(255)),
        (b"\x80\x02M\xff\xff.", Value::Int(65535)),
        (b"\x80\x02\x8a\x00.", Value::Int(0)),
        (b"\x80\x02\x8a\x01\xff.", Value::Int(-1)),
        (b"\x80\x02\x8a\x02\x00\x80.", Value::Int(-32768)),
        (
            b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.",
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ),
        (b"\x80\x02\x8b\x02\x00\x00\x00\xff\x7f.", Value::Int(32767)),
        (
            b"L-18446744073709551616L\n.",
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(&read_pickle(bytes).unwrap(), want, "{bytes:?}");
    }
}

#[test]
fn floats_strings_and_bytes() {
    assert_eq!(read_pickle(b"F1.25\n.").unwrap(), Value::Float(1.25));
    assert_eq!(
        read_pickle(b"\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00.").unwrap(),
        Value::Float(1.5)
    );
    assert_eq!(
        read_pickle(b"S'a\\'b\\x41\\n'\n.").unwrap(),
        Value::Str("a'bA\n".into())
    );
    assert_eq!(
        read_pickle(b"Vcaf\\u00e9 \\U0001d11e\n.").unwrap(),
        Value::Str("café 𝄞".into())
    );
    assert_eq!(
        read_pickle(b"\x80\x02U\x02\xe9a.").unwrap(),
        Value::Str("éa".into())
    );
    assert_eq!(
        read_pickle(b"\x80\x03C\x02\x00\x01.").unwrap(),
        Value::Bytes(vec![0, 1])
    );
    assert_eq!(
        read_pickle(b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00z.").unwrap(),
        Value::Bytes(b"z".to_vec())
    );
    assert!(err(b"\x80\x04\x8c\x01\xff.").contains("not valid UTF-8"));
}

#[test]
fn stack_and_mark_manipulation() {
    // MARK 1 2 POP_MARK 3 DUP TUPLE2 -> (3, 3)
    assert_eq!(
        read_pickle(b"\x80\x02(K\x01K\x021K\x032\x86.").unwrap(),
        tuple(vec![Value::Int(3), Value::Int(3)])
    );
    // POP on an empty stack above a MARK pops the mark.
    assert_eq!(read_pickle(b"\x80\x02N(0.").unwrap(), Value::None);
    assert!(err(b"\x80\x020.").contains("no MARK"));
    assert!(err(b"\x80\x02(2.").contains("stack underflow"));
    // TUPLE1 cannot reach below an open MARK.
    assert!(err(b"\x80\x02N(\x85.").contains("stack underflow"));
}

#[test]
fn containers_and_memo() {
    // Protocol 0 with text PUT/GET: [1, {'a': 5}, 'a'], the last 'a' from memo 2.
    let value = read_pickle(b"(lp0\nI1\na(dp1\nVa\np2\nI5\nsag2\na.").unwrap();
    let a = Value::Str("a".into());
    assert_eq!(
        value,
        list(vec![
            Value::Int(1),
            Value::Dict(Arc::new(vec![(a.clone(), Value::Int(5))])),
            a,
        ])
    );
    assert_eq!(
        read_pickle(b"\x80\x02(K\x01K\x02t.").unwrap(),
        tuple(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn self_references_are_refused_not_looped() {
    assert!(err(b"(lp0\ng0\na.").contains("recursive"));
}

#[test]
fn sets_frozensets_and_additems() {
    assert_eq!(
        read_pickle(b"\x80\x04\x8f(K\x01K\x02\x90.").unwrap(),
        Value::Set(Arc::new(vec![Value::Int(1), Value::Int(2)]))
    );
    assert_eq!(
        read_pickle(b"\x80\x04(K\x01\x91.").unwrap(),
        Value::Set(Arc::new(vec![Value::Int(1)]))
    );
    assert!(err(b"\x80\x04](K\x01\x90.").contains("not a set"));
    assert!(err(b"\x80\x02}K\x01a.").contains("not a list"));
    assert!(err(b"\x80\x02]K\x01K\x02s.").contains("not a dict"));
    assert!(err(b"\x80\x02(K\x01d.").contains("odd number"));
}

#[test]
fn inst_obj_newobj_ex_build_an_allowlisted_class() {
    let want = |args: Vec<Value>, state: Option<Value>| Value::Object {
        module: "sklearn.linear_model._base".into(),
        name: "LinearRegression".into(),
        args: Arc::new(args),
        state: state.map(Arc::new),
    };
    assert_eq!(
        read_pickle(b"(K\x01isklearn.linear_model._base\nLinearRegression\n.").unwrap(),
        want(vec![Value::Int(1)], None)
    );
    assert_eq!(
        read_pickle(b"(csklearn.linear_model._base\nLinearRegression\nK\x02o}b.").unwrap(),
        want(vec![Value::Int(2)], Some(Value::Dict(Arc::new(vec![]))))
    );
    assert_eq!(
        read_pickle(
            b"\x80\x04\x8c\x1asklearn.linear_model._base\x8c\x10LinearRegression\x93)}\x92."
        )
        .unwrap(),
        want(vec![], None)
    );
    assert!(err(
        b"\x80\x04\x8c\x1asklearn.linear_model._base\x8c\x10LinearRegression\x93)}K\x01K\x01s\x92."
    )
    .contains("keyword arguments"));
    // copyreg._reconstructor(cls, object, None), the protocol 0/1 spelling.
    assert_eq!(
        read_pickle(
            b"ccopy_reg\n_reconstructor\n(csklearn.linear_model._base\nLinearRegression\nc__builtin__\nobject\nNtR."
        )
        .unwrap(),
        want(vec![], None)
    );
}

#[test]
fn calling_anything_else_is_refused() {
    assert_eq!(
        err(b"\x80\x02cnumpy\nfloat64\n)R."),
        "refused to call \"numpy.float64\" at offset 18: this type is only accepted as data, not called"
    );
    assert!(err(b"\x80\x02K\x01)R.").contains("cannot call a int"));
    assert!(err(b"\x80\x02cbuiltins\nslice\n)R.").contains("slice takes 1 to 3"));
    assert!(matches!(
        read_pickle(b"\x80\x02cos\nsystem\n."),
        Err(LoadError::Refused { .. })
    ));
}

#[test]
fn numpy_frombuffer_fortran_and_scalars() {
    // _frombuffer(b'\x01\x02\x03\x04\x05\x06', dtype('u1'), (2, 3), 'F') -> [[1,3,5],[2,4,6]]
    let pickle = b"\x80\x02cnumpy._core.numeric\n_frombuffer\n(C\x06\x01\x02\x03\x04\x05\x06cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R(K\x02K\x03tX\x01\x00\x00\x00FtR.";
    let Value::Array(array) = read_pickle(pickle).unwrap() else {
        panic!()
    };
    assert_eq!(array.shape, vec![2, 3]);
    assert_eq!(array.data, ArrayData::Int(vec![1, 3, 5, 2, 4, 6]));
    // numpy.core.multiarray.scalar(dtype('<f8'), 8 bytes)
    let scalar = b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08\x00\x00\x00\x00\x00\x00\xf8\x3f\x86R.";
    assert_eq!(read_pickle(scalar).unwrap(), Value::Float(1.5));
}

#[test]
fn refused_features_name_themselves() {
    assert!(err(b"\x80\x02Pid\n.").contains("persistent ids"));
    assert!(err(b"\x80\x02\x83\x01\x00.").contains("extension registry"));
    assert!(err(b"\x80\x05\x98.").contains("out-of-band"));
}

#[test]
fn errors_carry_the_offset_of_the_opcode() {
    assert_eq!(
        err(b"\x80\x02N\xfe."),
        "invalid pickle at offset 3: unknown opcode 0xfe"
    );
    assert_eq!(
        err(b"\x80\x02X\x10\x00\x00\x00ab."),
        "truncated input at offset 7: needed 16 more bytes, 3 available"
    );
}

#[test]
fn value_accessors_walk_a_rebuilt_estimator() {
    let pickle = b"\x80\x02csklearn.linear_model._base\nLinearRegression\n)\x81}(X\x05\x00\x00\x00alphaG?\xe0\x00\x00\x00\x00\x00\x00X\x04\x00\x00\x00nameX\x02\x00\x00\x00lrX\x05\x00\x00\x00steps(K\x01K\x02lub.";
    let model = read_pickle(pickle).unwrap();
    assert_eq!(model.attr("alpha").and_then(Value::as_f64), Some(0.5));
    assert_eq!(model.attr("name").and_then(Value::as_str), Some("lr"));
    let steps = model.attr("steps").and_then(Value::as_list).unwrap();
    assert_eq!(steps[1].as_i64(), Some(2));
    assert_eq!(steps[1].as_f64(), Some(2.0));
    assert!(model.attr("missing").is_none());
    assert!(model.as_array().is_none());
}
