//! The model page's "try it" form (`/console/fragments/models/{m}/try`): one field
//! per input of the model's signature, filled with an example row, posted by the
//! browser to the model's own predict endpoint.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::api;
use crate::http::AppState;
use crate::manager::VersionRequest;
use crate::tensor::DataType;

use super::{error_fragment, html};

/// How the form's values become a simple-API request (`POST /predict/{model}`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum FormMode {
    /// One text box: `{"text": "…"}` (fastText).
    Text,
    /// Values in column order: `{"features": [v, …]}`.
    Positional,
    /// Values by name: `{"features": {"name": v, …}}`.
    Named,
    /// One box of comma-separated values (the model's width is not known).
    List,
    /// One image file, sent as `multipart/form-data` (a model with
    /// `[preprocess] image`).
    Image,
}

impl FormMode {
    fn as_str(self) -> &'static str {
        match self {
            FormMode::Text => "text",
            FormMode::Positional => "positional",
            FormMode::Named => "named",
            FormMode::List => "list",
            FormMode::Image => "image",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FormField {
    /// The feature name sent (named mode), or the column's position.
    name: String,
    label: String,
    /// `number`, `text` or `textarea`.
    kind: &'static str,
}

impl FormField {
    fn new(name: impl Into<String>, label: impl Into<String>, kind: &'static str) -> FormField {
        FormField {
            name: name.into(),
            label: label.into(),
            kind,
        }
    }
}

#[derive(Template)]
#[template(path = "try_fragment.html")]
struct TryFragment {
    model: String,
    version: u64,
    format: &'static str,
    mode: &'static str,
    fields: Vec<FormField>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

fn is_text(dtype: DataType) -> bool {
    dtype == DataType::Bytes
}

fn spec_text(s: &crate::tensor::TensorSpec) -> String {
    if s.any_rank() {
        return format!("{} {:?} (any shape)", s.name, s.dtype);
    }
    let dims: Vec<String> = s
        .shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("{} {:?} [{}]", s.name, s.dtype, dims.join(", "))
}

/// The form a model's signature calls for: a text box for text models, one field
/// per named feature, one per column of a fixed-width input, or a list box.
/// What a model's `[preprocess]` table makes of its input, which decides the form
/// rather than the graph's tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Preprocessed {
    /// Tensors as the signature says.
    No,
    /// Text (a tokenizer or a segmenter).
    Text,
    /// An image file.
    Image,
}

fn form_for(
    metadata: &api::ModelMetadata,
    preprocessed: Preprocessed,
) -> (FormMode, Vec<FormField>) {
    let inputs = &metadata.signature.inputs;
    if preprocessed == Preprocessed::Image {
        return (
            FormMode::Image,
            vec![FormField::new("image", "Image (JPEG, PNG or WebP)", "file")],
        );
    }
    if metadata.format == "fasttext" || preprocessed == Preprocessed::Text {
        return (
            FormMode::Text,
            vec![FormField::new("text", "Text", "textarea")],
        );
    }
    if let Some(names) = &metadata.traits.feature_names {
        let fields = names
            .iter()
            .map(|n| {
                // A model fed column by column names its inputs after the features.
                let text = inputs
                    .iter()
                    .find(|i| &i.name == n)
                    .is_some_and(|i| is_text(i.dtype));
                FormField::new(n, n, if text { "text" } else { "number" })
            })
            .collect();
        return (FormMode::Named, fields);
    }
    if let [only] = inputs.as_slice() {
        if is_text(only.dtype) && only.shape.len() <= 2 && only.shape.get(1).is_none_or(|d| *d == 1)
        {
            return (
                FormMode::Positional,
                vec![FormField::new(
                    "0",
                    format!("{} (text)", only.name),
                    "textarea",
                )],
            );
        }
        if let [_, width] = only.shape.as_slice() {
            if (1..=256).contains(width) {
                let fields = (0..*width)
                    .map(|i| {
                        FormField::new(i.to_string(), format!("{} [{i}]", only.name), "number")
                    })
                    .collect();
                return (FormMode::Positional, fields);
            }
        }
        return (
            FormMode::List,
            vec![FormField::new(
                "values",
                format!("{} (comma-separated values)", only.name),
                "text",
            )],
        );
    }
    // Several inputs, one column each: fed by name.
    let fields = inputs
        .iter()
        .map(|i| {
            FormField::new(
                &i.name,
                &i.name,
                if is_text(i.dtype) { "text" } else { "number" },
            )
        })
        .collect();
    (FormMode::Named, fields)
}

pub(super) async fn try_fragment(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Response {
    let mut metadata = match api::model_metadata(&state, &model, &VersionRequest::Latest) {
        Ok(m) => m,
        Err(e) => return error_fragment(&e),
    };
    let preprocessed = match state.manager.resolve(&model, &VersionRequest::Latest) {
        Ok(handle) => {
            let config = handle.config();
            // The names the simple API takes: the config's before the model's own.
            if let Some(names) = &config.feature_names {
                metadata.traits.feature_names = Some(names.clone());
            }
            let p = &config.preprocess;
            if p.image.is_some() {
                Preprocessed::Image
            } else if p.tokenizer.is_some() || p.segmenter.is_some() {
                Preprocessed::Text
            } else {
                Preprocessed::No
            }
        }
        Err(_) => Preprocessed::No,
    };
    let (mode, fields) = form_for(&metadata, preprocessed);
    html(
        StatusCode::OK,
        &TryFragment {
            model,
            version: metadata.version,
            format: metadata.format,
            mode: mode.as_str(),
            fields,
            inputs: metadata.signature.inputs.iter().map(spec_text).collect(),
            outputs: metadata.signature.outputs.iter().map(spec_text).collect(),
        },
    )
}
