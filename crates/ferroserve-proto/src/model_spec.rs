//! `tensorflow.serving.ModelSpec`, written by hand so that a request naming both a
//! version and a version label can be refused.
//!
//! In `proto/tensorflow_serving/apis/model.proto` the two are members of the oneof
//! `version_choice`; a generated decoder keeps only the last one on the wire, so a
//! client that sets both would be silently served the label's version. This type has
//! the same fields, numbers and wire encoding, but keeps each member on its own, and
//! [`ModelSpec::version_choice`] says when both came.

/// Which model, which version, which signature a request is for.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ModelSpec {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `google.protobuf.Int64Value version = 2`, member of oneof `version_choice`.
    #[prost(message, optional, tag = "2")]
    pub version: Option<i64>,
    /// `string version_label = 4`, member of oneof `version_choice`.
    #[prost(string, optional, tag = "4")]
    pub version_label: Option<String>,
    /// Empty means "serving_default".
    #[prost(string, tag = "3")]
    pub signature_name: String,
}

/// The `version_choice` oneof of a [`ModelSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice<'a> {
    /// Neither: the latest version.
    Latest,
    Version(i64),
    Label(&'a str),
}

/// Both members of the oneof were on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BothVersionAndLabel {
    pub version: i64,
    pub label: String,
}

impl ModelSpec {
    pub fn version_choice(&self) -> Result<VersionChoice<'_>, BothVersionAndLabel> {
        match (&self.version, &self.version_label) {
            (None, None) => Ok(VersionChoice::Latest),
            (Some(v), None) => Ok(VersionChoice::Version(*v)),
            (None, Some(l)) => Ok(VersionChoice::Label(l)),
            (Some(v), Some(l)) => Err(BothVersionAndLabel {
                version: *v,
                label: l.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_encoding_is_that_of_the_oneof() {
        // name "m", version {value: 7}, signature "s", as protoc encodes the oneof form.
        let spec = ModelSpec {
            name: "m".into(),
            version: Some(7),
            version_label: None,
            signature_name: "s".into(),
        };
        assert_eq!(
            spec.encode_to_vec(),
            vec![0x0a, 1, b'm', 0x12, 2, 0x08, 7, 0x1a, 1, b's']
        );
        let labelled = ModelSpec::decode(&[0x0a, 1, b'm', 0x22, 2, b'c', b'a'][..]).unwrap();
        assert_eq!(labelled.version_choice(), Ok(VersionChoice::Label("ca")));
        // An empty label is still a label (oneof presence), as in TF Serving.
        let empty = ModelSpec::decode(&[0x22, 0][..]).unwrap();
        assert_eq!(empty.version_choice(), Ok(VersionChoice::Label("")));
    }

    #[test]
    fn both_members_are_reported() {
        let both = ModelSpec::decode(&[0x12, 2, 0x08, 1, 0x22, 1, b'x'][..]).unwrap();
        assert_eq!(
            both.version_choice(),
            Err(BothVersionAndLabel {
                version: 1,
                label: "x".into()
            })
        );
    }
}
