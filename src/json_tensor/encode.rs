//! Answers written as JSON straight from the output tensors (`NestedJson` for TF
//! Serving REST and the simple API, `FlatJson` for KServe V2), never through a tree
//! of `serde_json::Value`s.

use base64::Engine;
use serde_json::Value;

use crate::tensor::{Tensor, TensorData};

/// A tensor (or part of one) written as JSON straight from its buffer, without
/// building a `serde_json::Value` tree first (a `Value` costs 32 bytes and an
/// allocation per element and array). FP32 elements take the fewest digits that
/// read back as the same float (TF Serving's way). Floats that are not finite become `"NaN"`,
/// `"Infinity"`, `"-Infinity"`; bytes that are not UTF-8 become `{"b64": …}`.
#[derive(Clone, Copy)]
pub struct NestedJson<'a> {
    data: &'a TensorData,
    shape: &'a [usize],
    start: usize,
    /// Bytes always as `{"b64": …}`, UTF-8 or not (TF Serving's rule for an output
    /// whose name ends in `_bytes`).
    b64: bool,
}

impl<'a> NestedJson<'a> {
    /// The whole tensor, nested by its shape.
    pub fn whole(tensor: &'a Tensor) -> NestedJson<'a> {
        NestedJson {
            data: tensor.data(),
            shape: tensor.shape(),
            start: 0,
            b64: false,
        }
    }

    /// The same, its bytes written as `{"b64": …}` whatever they hold when `yes`.
    pub fn b64_if(self, yes: bool) -> NestedJson<'a> {
        NestedJson { b64: yes, ..self }
    }

    /// Row `i` (of the first dimension), nested.
    pub fn row(tensor: &'a Tensor, i: usize) -> NestedJson<'a> {
        let rest = &tensor.shape()[1..];
        NestedJson {
            data: tensor.data(),
            shape: rest,
            start: i * rest.iter().product::<usize>(),
            b64: false,
        }
    }
}

impl serde::Serialize for NestedJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.shape.split_first() {
            None => match self.data {
                TensorData::Bytes(v) if self.b64 => b64_json(&v[self.start], serializer),
                _ => ElementJson(self.data, self.start, true).serialize(serializer),
            },
            Some((&n, rest)) => {
                let stride: usize = rest.iter().product();
                let mut seq = serializer.serialize_seq(Some(n))?;
                for i in 0..n {
                    seq.serialize_element(&NestedJson {
                        data: self.data,
                        shape: rest,
                        start: self.start + i * stride,
                        b64: self.b64,
                    })?;
                }
                seq.end()
            }
        }
    }
}

/// A tensor's elements as one flat JSON array (KServe V2 `data`), written directly.
#[derive(Clone, Copy)]
pub struct FlatJson<'a>(pub &'a Tensor);

impl serde::Serialize for FlatJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for i in 0..self.0.len() {
            seq.serialize_element(&ElementJson(self.0.data(), i, false))?;
        }
        seq.end()
    }
}

/// `{"b64": "…"}`.
fn b64_json<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry(
        "b64",
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    )?;
    map.end()
}

/// A float as answers write floats: a number, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (serde writes those as `null`).
pub fn float_json(x: impl Into<f64>) -> Value {
    let x: f64 = x.into();
    if x.is_nan() {
        Value::from("NaN")
    } else if x.is_infinite() {
        Value::from(if x > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        Value::from(x)
    }
}

/// An `f32` as TF Serving writes one (`WriteDecimal`): in the fewest digits that
/// read back as the same float (`0.979`, not the double it converts to,
/// `0.9789999723434448`); non-finite ones as [`float_json`] writes them.
pub fn f32_json(x: f32) -> Value {
    if !x.is_finite() {
        return float_json(x);
    }
    // The shortest text of the f32 read as an f64: the double whose shortest text
    // is that same text.
    Value::from(x.to_string().parse::<f64>().unwrap_or(f64::from(x)))
}

/// One element of a tensor; with `.2`, an FP32 element in the fewest digits that
/// read back as the same float (`1.2`), as TF Serving writes them (`WriteDecimal`),
/// else as the double it converts to (`1.2000000476837158`), as Triton's V2 JSON
/// does.
struct ElementJson<'a>(&'a TensorData, usize, bool);

impl serde::Serialize for ElementJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let float = |f: f64, serializer: S| {
            if f.is_finite() {
                serializer.serialize_f64(f)
            } else if f.is_nan() {
                serializer.serialize_str("NaN")
            } else if f > 0.0 {
                serializer.serialize_str("Infinity")
            } else {
                serializer.serialize_str("-Infinity")
            }
        };
        let i = self.1;
        match self.0 {
            TensorData::Bool(v) => serializer.serialize_bool(v[i]),
            TensorData::U8(v) => serializer.serialize_u8(v[i]),
            TensorData::U16(v) => serializer.serialize_u16(v[i]),
            TensorData::U32(v) => serializer.serialize_u32(v[i]),
            TensorData::U64(v) => serializer.serialize_u64(v[i]),
            TensorData::I8(v) => serializer.serialize_i8(v[i]),
            TensorData::I16(v) => serializer.serialize_i16(v[i]),
            TensorData::I32(v) => serializer.serialize_i32(v[i]),
            TensorData::I64(v) => serializer.serialize_i64(v[i]),
            TensorData::F16(v) => float(half::f16::from_bits(v[i]).to_f64(), serializer),
            TensorData::F32(v) if self.2 && v[i].is_finite() => serializer.serialize_f32(v[i]),
            TensorData::F32(v) => float(v[i] as f64, serializer),
            TensorData::F64(v) => float(v[i], serializer),
            TensorData::Bytes(v) => match std::str::from_utf8(&v[i]) {
                Ok(s) => serializer.serialize_str(s),
                Err(_) => b64_json(&v[i], serializer),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    mod erased {
        pub trait Ser {
            fn to_text(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn to_text(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    fn fp32_is_written_as_tf_serving_writes_it_in_nested_json_only() {
        let t = Tensor::new(vec![3], TensorData::F32(vec![1.2, 3.0, f32::INFINITY])).unwrap();
        let nested = serde_json::to_string(&NestedJson::whole(&t)).unwrap();
        assert_eq!(nested, r#"[1.2,3.0,"Infinity"]"#);
        let flat = serde_json::to_string(&FlatJson(&t)).unwrap();
        assert_eq!(flat, r#"[1.2000000476837158,3.0,"Infinity"]"#);
    }

    /// Scores outside a tensor (classify, top_classes) are written as tensors'
    /// floats are: non-finite ones as strings (they were `null`).
    #[test]
    fn lone_floats_are_written_as_tensor_floats_are() {
        assert_eq!(float_json(f32::NAN), json!("NaN"));
        assert_eq!(float_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(float_json(f32::INFINITY), json!("Infinity"));
        assert_eq!(float_json(0.1f32), json!(0.1f32));
        assert_eq!(float_json(0.1f64).to_string(), "0.1");
        assert_eq!(float_json(-0.25f32), json!(-0.25));
    }

    /// TF Serving's classify scores and regress values are floats written in
    /// their fewest digits, as its predict answers write FP32 tensors.
    #[test]
    fn a_lone_f32_is_written_in_its_fewest_digits() {
        for (x, text) in [
            (0.979f32, "0.979"),
            (0.1, "0.1"),
            (-2.5e-8, "-2.5e-8"),
            (f32::MAX, "3.4028235e+38"),
            (f32::MIN_POSITIVE, "1.1754944e-38"),
            (1.0, "1.0"),
        ] {
            let v = f32_json(x);
            assert_eq!(v.to_string(), text);
            assert_eq!(v.as_f64().unwrap() as f32, x);
        }
        assert_eq!(f32_json(f32::NAN), json!("NaN"));
        assert_eq!(f32_json(f32::NEG_INFINITY), json!("-Infinity"));
    }

    #[test]
    fn tensors_are_written_as_json() {
        let text = |v: &dyn erased::Ser| v.to_text();
        let f = Tensor::new(
            vec![2, 3],
            TensorData::F32(vec![1.5, f32::NAN, -0.25, f32::INFINITY, 3.0, 0.5]),
        )
        .unwrap();
        assert_eq!(
            text(&NestedJson::whole(&f)),
            r#"[[1.5,"NaN",-0.25],["Infinity",3.0,0.5]]"#
        );
        assert_eq!(text(&NestedJson::row(&f, 1)), r#"["Infinity",3.0,0.5]"#);
        assert_eq!(
            text(&FlatJson(&f)),
            r#"[1.5,"NaN",-0.25,"Infinity",3.0,0.5]"#
        );
        let i = Tensor::new(vec![3], TensorData::I64(vec![-1, 0, i64::MAX])).unwrap();
        assert_eq!(text(&NestedJson::whole(&i)), "[-1,0,9223372036854775807]");
        let b = Tensor::new(
            vec![2, 1],
            TensorData::Bytes(vec![b"setosa".to_vec(), vec![0xff, 0x00]]),
        )
        .unwrap();
        assert_eq!(
            text(&NestedJson::whole(&b)),
            r#"[["setosa"],[{"b64":"/wA="}]]"#
        );
        let t = Tensor::new(
            vec![2, 2, 1],
            TensorData::Bool(vec![true, false, false, true]),
        )
        .unwrap();
        assert_eq!(text(&NestedJson::row(&t, 1)), "[[false],[true]]");
        let scalar = Tensor::new(vec![], TensorData::F64(vec![f64::NEG_INFINITY])).unwrap();
        assert_eq!(text(&NestedJson::whole(&scalar)), r#""-Infinity""#);
        let empty = Tensor::new(vec![0, 3], TensorData::U8(vec![])).unwrap();
        assert_eq!(text(&NestedJson::whole(&empty)), "[]");
        assert_eq!(text(&FlatJson(&empty)), "[]");
    }
}
