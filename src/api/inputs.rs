//! The checks a request's tensors pass before they are queued, whatever protocol
//! they came in on: each input matched to the signature by name (or the only or
//! default input), converted to the model's dtype and checked against its shape;
//! each requested output known and named once. Warm-up records go through the same
//! [`prepare_inputs`], so a record the live path would refuse never reaches a
//! backend.

use super::ApiError;
use crate::backends::Signature;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorSpec};

/// Matches request inputs to the signature by name, casts them to the model's
/// dtypes and checks their shapes.
pub fn prepare_inputs(
    signature: &Signature,
    default_input: Option<&str>,
    inputs: Vec<NamedTensor>,
) -> Result<Vec<NamedTensor>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::InvalidArgument(format!(
            "no inputs given; the model takes {}",
            describe_specs(&signature.inputs)
        )));
    }
    let mut prepared: Vec<NamedTensor> = Vec::with_capacity(inputs.len());
    for (name, tensor) in inputs {
        let spec = find_input(signature, default_input, &name)?;
        if prepared.iter().any(|(n, _)| *n == spec.name) {
            return Err(ApiError::InvalidArgument(format!(
                "input {:?} is given twice",
                spec.name
            )));
        }
        let tensor = convert_input(spec, tensor)?;
        prepared.push((spec.name.clone(), tensor));
    }
    if let Some(missing) = signature
        .inputs
        .iter()
        .find(|s| !prepared.iter().any(|(n, _)| *n == s.name))
    {
        return Err(ApiError::InvalidArgument(format!(
            "input {:?} is missing; the model takes {}",
            missing.name,
            describe_specs(&signature.inputs)
        )));
    }
    Ok(prepared)
}

fn find_input<'a>(
    signature: &'a Signature,
    default_input: Option<&str>,
    name: &str,
) -> Result<&'a TensorSpec, ApiError> {
    if name.is_empty() {
        if let Some(default) = default_input {
            return find_input(signature, None, default);
        }
        return match signature.inputs.as_slice() {
            [only] => Ok(only),
            _ => Err(ApiError::InvalidArgument(format!(
                "the model has several inputs, so each must be named: {}",
                describe_specs(&signature.inputs)
            ))),
        };
    }
    signature
        .inputs
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "the model has no input {name:?}; it takes {}",
                describe_specs(&signature.inputs)
            ))
        })
}

fn convert_input(spec: &TensorSpec, tensor: Tensor) -> Result<Tensor, ApiError> {
    if tensor.is_empty() {
        return Err(ApiError::InvalidArgument(format!(
            "input {:?} is empty (shape {:?})",
            spec.name,
            tensor.shape()
        )));
    }
    // Strings that name NaN or an infinity, and nothing else, for a float input:
    // TF Serving's JSON carries no dtype, so `["NaN"]` decoded as text.
    let named_floats = match (tensor.data(), spec.dtype) {
        (crate::tensor::TensorData::Bytes(v), DataType::F16 | DataType::F32 | DataType::F64) => v
            .iter()
            .map(|b| {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(crate::json_tensor::nonfinite_name)
            })
            .collect::<Option<Vec<f64>>>()
            .and_then(|floats| {
                Tensor::new(
                    tensor.shape().to_vec(),
                    crate::tensor::TensorData::F64(floats),
                )
                .ok()
            }),
        _ => None,
    };
    let tensor = named_floats.unwrap_or(tensor);
    let given = tensor.dtype();
    if spec.dtype == DataType::Bytes {
        // A NaN for a text column is what a missing value is to pandas, but a text
        // input has no missing value to give the model: say so, not just the dtype.
        if let Some(word) = first_nonfinite_name(&tensor) {
            return Err(ApiError::InvalidArgument(format!(
                "input {:?} takes text (BYTES), and {word} is a number, not text: a text \
                 value cannot be missing (there is no missing string to send)",
                spec.name
            )));
        }
    }
    if (given == DataType::Bytes) != (spec.dtype == DataType::Bytes) {
        return Err(ApiError::InvalidArgument(format!(
            "input {:?} must be {}, not {given}",
            spec.name, spec.dtype
        )));
    }
    // Numbers are not booleans, as TF Serving (which takes only JSON true/false
    // for DT_BOOL) and Triton (only BOOL for a BOOL input) hold; booleans for a
    // numeric input stay 1 and 0 (a pandas bool column a model was trained on).
    if spec.dtype == DataType::Bool && given != DataType::Bool {
        return Err(ApiError::InvalidArgument(format!(
            "input {:?} takes BOOL values (true or false), not {given}",
            spec.name
        )));
    }
    // One value per row for a `[-1, 1]` column input (TF Serving row format with
    // named scalars, `{"instances": [{"age": 65, ...}]}`, which gives `age` the
    // shape `[N]`; a scikit-learn column model's inputs are `[-1, 1]`) is the same
    // data: give it the trailing dimension. Never to a 0-d scalar: that would make
    // one row of a `[-1]` input out of it, which TensorFlow, TF Serving and Triton
    // refuse (a tensor of rank 0 for an input of rank 1), on every protocol.
    let mut column_shape = tensor.shape().to_vec();
    column_shape.push(1);
    let tensor = if !tensor.shape().is_empty()
        && !spec.accepts_shape(tensor.shape())
        && spec.accepts_shape(&column_shape)
    {
        tensor
            .reshape(column_shape)
            .map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        tensor
    };
    if !spec.accepts_shape(tensor.shape()) {
        return Err(ApiError::InvalidArgument(format!(
            "input {:?} has shape {:?}, but the model takes {:?} (-1: any size)",
            spec.name,
            tensor.shape(),
            spec.shape
        )));
    }
    tensor
        .cast(spec.dtype)
        .map_err(|e| ApiError::InvalidArgument(format!("input {:?}: {e}", spec.name)))
}

/// The name (`NaN`, `Infinity`, `-Infinity`) of the first float of `tensor` that is
/// not finite, if it holds floats and one is not.
fn first_nonfinite_name(tensor: &Tensor) -> Option<&'static str> {
    use crate::tensor::TensorData;
    let value = match tensor.data() {
        TensorData::F16(v) => v
            .iter()
            .map(|&b| half::f16::from_bits(b).to_f64())
            .find(|x| !x.is_finite()),
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).find(|x| !x.is_finite()),
        TensorData::F64(v) => v.iter().copied().find(|x| !x.is_finite()),
        _ => None,
    }?;
    Some(if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    })
}

/// Checks that every wanted output exists and is named once: a name repeated would
/// repeat its whole tensor in the answer, so a small request could ask for an
/// answer thousands of times its model's output.
pub fn check_outputs(signature: &Signature, wanted: &[String]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::with_capacity(wanted.len());
    for name in wanted {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::InvalidArgument(format!(
                "output {name:?} is requested more than once; name each output at most once"
            )));
        }
        if !signature.outputs.iter().any(|o| o.name == *name) {
            return Err(ApiError::InvalidArgument(format!(
                "the model has no output {name:?}; it gives {}",
                describe_specs(&signature.outputs)
            )));
        }
    }
    Ok(())
}

fn describe_specs(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?} ({} {:?})", s.name, s.dtype, s.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DataType::F32,
                shape: vec![-1, 4],
            }],
            outputs: vec![TensorSpec {
                name: "label".into(),
                dtype: DataType::I64,
                shape: vec![-1],
            }],
        }
    }

    fn t(shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(shape, data).unwrap()
    }

    #[test]
    fn unnamed_input_goes_to_the_only_input_and_is_cast() {
        let out = prepare_inputs(
            &sig(),
            None,
            vec![("".into(), t(vec![1, 4], TensorData::F64(vec![1.0; 4])))],
        )
        .unwrap();
        assert_eq!(out[0].0, "input");
        assert_eq!(out[0].1.dtype(), DataType::F32);
    }

    #[test]
    fn numbers_are_not_booleans() {
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "flag".into(),
                dtype: DataType::Bool,
                shape: vec![-1],
            }],
            ..sig()
        };
        let prepare = |data| prepare_inputs(&sig, None, vec![("flag".into(), t(vec![2], data))]);
        let e = prepare(TensorData::I64(vec![1, 0]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input \"flag\" takes BOOL values (true or false), not INT64"),
            "{e}"
        );
        assert!(prepare(TensorData::F64(vec![1.0, 0.0])).is_err());
        let out = prepare(TensorData::Bool(vec![true, false])).unwrap();
        assert_eq!(out[0].1.dtype(), DataType::Bool);
    }

    #[test]
    fn bad_inputs_are_explained() {
        let msg = |inputs| {
            prepare_inputs(&sig(), None, inputs)
                .unwrap_err()
                .to_string()
        };
        assert!(msg(vec![(
            "x".into(),
            t(vec![1, 4], TensorData::F32(vec![1.0; 4]))
        )])
        .contains("no input \"x\""));
        assert!(msg(vec![(
            "input".into(),
            t(vec![1, 3], TensorData::F32(vec![1.0; 3]))
        )])
        .contains("shape [1, 3]"));
        assert!(msg(vec![(
            "input".into(),
            t(vec![1, 4], TensorData::Bytes(vec![vec![]; 4]))
        )])
        .contains("must be FP32"));
        assert!(msg(vec![]).contains("no inputs"));
        assert!(msg(vec![(
            "input".into(),
            t(vec![0, 4], TensorData::F32(vec![]))
        )])
        .contains("empty"));
        assert!(check_outputs(&sig(), &["nope".into()]).is_err());
    }

    #[test]
    fn an_output_named_twice_is_refused() {
        let err = check_outputs(&sig(), &["label".into(), "label".into()]).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidArgument(m) if m.contains("more than once")),
            "{err}"
        );
        assert!(check_outputs(&sig(), &["label".into()]).is_ok());
    }

    #[test]
    fn one_value_per_row_fills_a_column_input() {
        let column = Signature {
            inputs: vec![TensorSpec {
                name: "age".into(),
                dtype: DataType::F64,
                shape: vec![-1, 1],
            }],
            outputs: vec![],
        };
        let out = prepare_inputs(
            &column,
            None,
            vec![("age".into(), t(vec![3], TensorData::I64(vec![1, 2, 3])))],
        )
        .unwrap();
        assert_eq!(out[0].1.shape(), &[3, 1]);
        assert_eq!(out[0].1.dtype(), DataType::F64);
    }

    /// A 0-d scalar is no row: refused for a `[-1]` input (it was made `[1]`),
    /// naming the input and both shapes.
    #[test]
    fn a_scalar_is_not_one_row_of_a_vector_input() {
        let vector = Signature {
            inputs: vec![TensorSpec {
                name: "words".into(),
                dtype: DataType::Bytes,
                shape: vec![-1],
            }],
            outputs: vec![],
        };
        let scalar = t(vec![], TensorData::Bytes(vec![b"dog".to_vec()]));
        let err = prepare_inputs(&vector, None, vec![("words".into(), scalar)]).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidArgument(m)
                if m.contains("\"words\"") && m.contains("shape []") && m.contains("[-1]")),
            "{err}"
        );
        let row = t(vec![1], TensorData::Bytes(vec![b"dog".to_vec()]));
        let out = prepare_inputs(&vector, None, vec![("words".into(), row)]).unwrap();
        assert_eq!(out[0].1.shape(), &[1]);
    }
}
