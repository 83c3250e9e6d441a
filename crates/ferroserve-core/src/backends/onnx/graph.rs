//! What the ONNX backend reads from the model file itself, beside what ONNX Runtime
//! reports: the top-level graph's declared inputs and outputs (a tensor declared
//! without a shape is of unknown rank, which ONNX Runtime reports as a scalar) and
//! its nodes' wiring, with the class labels of the ai.onnx.ml classifier nodes
//! (ONNX Runtime's session exposes neither).
//!
//! The file is streamed once through a small buffer and only these parts are kept:
//! an initializer (a model's weights, possibly hundreds of MB) is seeked over, never
//! read, and of a node only its names and its `classlabels_*` attributes are read (a
//! `TreeEnsembleClassifier`'s other attributes can be large too). The protobuf wire
//! format is walked by hand for `ModelProto`, `GraphProto`, `NodeProto` and
//! `AttributeProto`, as prost would need each message whole in memory; the small
//! `ValueInfoProto`s are decoded with prost (the messages in [`proto`]). Field
//! numbers are `onnx/onnx.proto`'s.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// The domain of ONNX's traditional ML operators, where classifier nodes live.
const ML_DOMAIN: &str = "ai.onnx.ml";

/// The top-level graph of a model file: its declared inputs and outputs, and its
/// nodes with only what [`class_labels`] follows.
#[derive(Debug, Default)]
pub struct Graph {
    pub inputs: Vec<proto::ValueInfoProto>,
    pub outputs: Vec<proto::ValueInfoProto>,
    pub nodes: Vec<Node>,
}

/// One node of the graph: its wiring and, for a node with `classlabels_strings` or
/// `classlabels_int64s` attributes (`classlabels_ints` in LinearClassifier and
/// SVMClassifier), their values.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub classlabels_strings: Vec<String>,
    pub classlabels_int64s: Vec<i64>,
}

impl Node {
    /// For an ai.onnx.ml node that names classes (a classifier: `LinearClassifier`,
    /// `TreeEnsembleClassifier`, `SVMClassifier`, ..., or a `ZipMap`), `Some` of its
    /// classes, integers as their decimal text; `Some(None)` when it names classes
    /// both ways, which the operators forbid, so neither is trusted.
    /// The `bool` is whether they are text (`classlabels_strings`).
    fn classes(&self) -> Option<Option<(Vec<String>, bool)>> {
        if self.domain != ML_DOMAIN {
            return None;
        }
        match (
            self.classlabels_strings.is_empty(),
            self.classlabels_int64s.is_empty(),
        ) {
            (true, true) => None,
            (false, true) => Some(Some((self.classlabels_strings.clone(), true))),
            (true, false) => Some(Some((
                self.classlabels_int64s.iter().map(i64::to_string).collect(),
                false,
            ))),
            (false, false) => Some(None),
        }
    }
}

/// The classes of the columns of the graph output `probabilities`, `width` columns
/// wide: those of the ai.onnx.ml classifier nodes it is computed from (followed back
/// through the nodes between, a `Normalizer` or `Cast`, up to the first classifier
/// on each path, so that a stacked model's final classifier names them, not the
/// ones feeding it). `None` unless that is unambiguous: at least one such node,
/// every one naming the same classes, as many as the output has columns, and of the
/// kind of the model's label output when it has one (`label_is_text`: a classifier
/// whose classes are text labels integers: a stacked model's final classifier names
/// the positions of its classes, which an `ArrayFeatureExtractor` maps to their text).
pub fn class_labels(
    graph: &Graph,
    probabilities: &str,
    width: i64,
    label_is_text: Option<bool>,
) -> Option<Vec<String>> {
    let producers: HashMap<&str, &Node> = graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut found: Vec<Option<(Vec<String>, bool)>> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut pending = vec![probabilities];
    while let Some(tensor) = pending.pop() {
        if !seen.insert(tensor) {
            continue;
        }
        // A graph input or an initializer has no producer.
        let Some(node) = producers.get(tensor) else {
            continue;
        };
        match node.classes() {
            Some(classes) => found.push(classes),
            None => pending.extend(node.inputs.iter().map(String::as_str)),
        }
    }
    let (first, text) = found.first()?.clone()?;
    let agree = found
        .iter()
        .all(|c| c.as_ref().is_some_and(|(classes, _)| *classes == first));
    let kind_fits = label_is_text.is_none_or(|label| label == text);
    (agree && kind_fits && i64::try_from(first.len()).ok() == Some(width)).then_some(first)
}

/// Reads the top-level graph of the ONNX model at `path`, streaming (see the
/// module's doc).
pub fn read(path: &Path) -> io::Result<Graph> {
    let mut wire = Wire {
        reader: BufReader::with_capacity(64 * 1024, File::open(path)?),
        position: 0,
    };
    let mut graph = Graph::default();
    // ModelProto: graph = 7. Several occurrences of a message field merge, as
    // protobuf parsers do.
    while let Some((field, kind)) = wire.key_or_end()? {
        match (field, kind) {
            (7, LEN) => {
                let end = wire.end_of_message()?;
                read_graph(&mut wire, end, &mut graph)?;
            }
            _ => wire.skip(kind)?,
        }
    }
    Ok(graph)
}

/// GraphProto: node = 1, input = 11, output = 12; initializers (5) and the rest
/// are skipped.
fn read_graph<R: BufRead + io::Seek>(
    wire: &mut Wire<R>,
    end: u64,
    graph: &mut Graph,
) -> io::Result<()> {
    while wire.position < end {
        let (field, kind) = wire.key()?;
        match (field, kind) {
            (1, LEN) => {
                let end = wire.end_of_message()?;
                graph.nodes.push(read_node(wire, end)?);
            }
            (11 | 12, LEN) => {
                let bytes = wire.length_delimited()?;
                let info = <proto::ValueInfoProto as prost::Message>::decode(bytes.as_slice())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if field == 11 {
                    graph.inputs.push(info);
                } else {
                    graph.outputs.push(info);
                }
            }
            _ => wire.skip(kind)?,
        }
    }
    wire.check_end(end)
}

/// NodeProto: input = 1, output = 2, op_type = 4, attribute = 5, domain = 7.
fn read_node<R: BufRead + io::Seek>(wire: &mut Wire<R>, end: u64) -> io::Result<Node> {
    let mut node = Node::default();
    while wire.position < end {
        let (field, kind) = wire.key()?;
        match (field, kind) {
            (1, LEN) => node.inputs.push(wire.string()?),
            (2, LEN) => node.outputs.push(wire.string()?),
            (4, LEN) => node.op_type = wire.string()?,
            (7, LEN) => node.domain = wire.string()?,
            (5, LEN) => {
                let end = wire.end_of_message()?;
                read_attribute(wire, end, &mut node)?;
            }
            _ => wire.skip(kind)?,
        }
    }
    wire.check_end(end)?;
    Ok(node)
}

/// AttributeProto: name = 1, ints = 8 (packed or not), strings = 9. Only a
/// `classlabels_*` attribute's values are kept; an attribute whose values come
/// before its name (writers put the name first) has them kept until the name says.
fn read_attribute<R: BufRead + io::Seek>(
    wire: &mut Wire<R>,
    end: u64,
    node: &mut Node,
) -> io::Result<()> {
    let mut name: Option<String> = None;
    let mut ints = Vec::new();
    let mut strings = Vec::new();
    let wanted = |name: &Option<String>| {
        name.as_deref()
            .is_none_or(|n| INT_LABELS.contains(&n) || n == "classlabels_strings")
    };
    while wire.position < end {
        let (field, kind) = wire.key()?;
        match (field, kind) {
            (1, LEN) => name = Some(wire.string()?),
            (8, VARINT) if wanted(&name) => ints.push(wire.varint()? as i64),
            (8, LEN) if wanted(&name) => {
                let end = wire.end_of_message()?;
                while wire.position < end {
                    ints.push(wire.varint()? as i64);
                }
                wire.check_end(end)?;
            }
            (9, LEN) if wanted(&name) => strings.push(wire.string()?),
            _ => wire.skip(kind)?,
        }
    }
    wire.check_end(end)?;
    match name.as_deref() {
        Some("classlabels_strings") => node.classlabels_strings = strings,
        Some(n) if INT_LABELS.contains(&n) => node.classlabels_int64s = ints,
        _ => {}
    }
    Ok(())
}

/// The attributes that name integer classes: `classlabels_int64s`
/// (TreeEnsembleClassifier, ZipMap) and `classlabels_ints` (LinearClassifier,
/// SVMClassifier).
const INT_LABELS: [&str; 2] = ["classlabels_int64s", "classlabels_ints"];

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// A protobuf wire-format reader that knows how far into the file it is, so that
/// a nested message's end is a position.
struct Wire<R> {
    reader: R,
    position: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<R: BufRead + io::Seek> Wire<R> {
    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.reader.read_exact(&mut b)?;
        self.position += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("varint longer than 10 bytes"))
    }

    fn key(&mut self) -> io::Result<(u32, u8)> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| invalid("field number too large"))?;
        Ok((field, (key & 7) as u8))
    }

    /// The next key, or `None` at the end of the file (between two fields).
    fn key_or_end(&mut self) -> io::Result<Option<(u32, u8)>> {
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// Reads a length and gives the position where the data it prefixes ends.
    fn end_of_message(&mut self) -> io::Result<u64> {
        let len = self.varint()?;
        self.position
            .checked_add(len)
            .ok_or_else(|| invalid("length past the end of any file"))
    }

    fn check_end(&self, end: u64) -> io::Result<()> {
        if self.position == end {
            Ok(())
        } else {
            Err(invalid("a field runs past the end of its message"))
        }
    }

    fn length_delimited(&mut self) -> io::Result<Vec<u8>> {
        let len = self.varint()?;
        // Read through `take`, so that a corrupt length allocates no more than the
        // file holds.
        let mut bytes = Vec::new();
        (&mut self.reader).take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.position += len;
        Ok(bytes)
    }

    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.length_delimited()?).map_err(|_| invalid("a string is not UTF-8"))
    }

    fn skip_bytes(&mut self, n: u64) -> io::Result<()> {
        let offset = i64::try_from(n).map_err(|_| invalid("length too large"))?;
        self.reader.seek_relative(offset)?;
        self.position += n;
        Ok(())
    }

    fn skip(&mut self, kind: u8) -> io::Result<()> {
        match kind {
            VARINT => self.varint().map(drop),
            I64 => self.skip_bytes(8),
            LEN => {
                let len = self.varint()?;
                self.skip_bytes(len)
            }
            I32 => self.skip_bytes(4),
            _ => Err(invalid("unsupported protobuf wire type (a group?)")),
        }
    }
}

/// The ONNX messages decoded whole with prost's derive (field numbers from
/// `onnx/onnx.proto`): a graph's declared inputs and outputs. prost skips every
/// field not declared.
pub mod proto {
    /// `onnx.ValueInfoProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    /// `onnx.TypeProto`: of its `value` oneof only `tensor_type` (a sequence, map or
    /// optional type decodes with none).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeProtoTensor>,
    }

    /// `onnx.TypeProto.Tensor`, without its `elem_type` (ONNX Runtime reports it): no
    /// `shape` is unknown rank.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProtoTensor {
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// `onnx.TensorShapeProto`: only whether there is one matters here, so none of
    /// its dimensions are declared.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/onnx")
            .join(name)
            .join("model.onnx")
    }

    fn node(op_type: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            op_type: op_type.into(),
            domain: ML_DOMAIN.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            ..Node::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_classifiers_labels_are_read_from_the_file() {
        // LinearClassifier -> Normalizer -> probabilities (skl2onnx, string classes).
        let iris = read(&fixture("iris_str")).unwrap();
        assert_eq!(iris.nodes.len(), 2, "{iris:?}");
        assert_eq!(iris.nodes[0].op_type, "LinearClassifier");
        assert_eq!(
            iris.nodes[0].outputs,
            strings(&["label", "probability_tensor"])
        );
        assert_eq!(
            class_labels(&iris, "probabilities", 3, None),
            Some(strings(&["setosa", "versicolor", "virginica"]))
        );
        // Text classes for a label output of numbers (a stacked model's final
        // classifier names positions): not trusted; for a text label, they are.
        assert_eq!(class_labels(&iris, "probabilities", 3, Some(false)), None);
        assert_eq!(
            class_labels(&iris, "probabilities", 3, Some(true)),
            Some(strings(&["setosa", "versicolor", "virginica"]))
        );
        // LinearClassifier names integer classes in `classlabels_ints`.
        let ints = read(&fixture("iris_lr_int")).unwrap();
        assert_eq!(
            class_labels(&ints, "probabilities", 3, Some(false)),
            Some(strings(&["1", "5", "7"]))
        );
        assert_eq!(class_labels(&ints, "probabilities", 3, Some(true)), None);
        // Not as many as the output's columns: not trusted.
        assert_eq!(class_labels(&iris, "probabilities", 4, None), None);
        assert_eq!(class_labels(&iris, "probabilities", -1, None), None);
        // The label output is not computed from the scores, but from the classifier.
        assert_eq!(class_labels(&iris, "no_such_output", 3, None), None);
        // TreeEnsembleClassifier with integer classes, written as their text.
        let ints = read(&fixture("iris_int")).unwrap();
        assert_eq!(
            class_labels(&ints, "probabilities", 3, None),
            Some(strings(&["1", "5", "7"]))
        );
        // Binary, with a one-hot encoding and Concats before the classifier.
        let bank = read(&fixture("bank_columns")).unwrap();
        assert_eq!(
            class_labels(&bank, "probabilities", 2, None),
            Some(strings(&["no", "yes"]))
        );
        assert_eq!(bank.inputs.len(), 4, "{:?}", bank.inputs);
        // A graph with no classifier names no classes.
        let plain = read(&fixture("half_io")).unwrap();
        let output = plain.outputs[0].name.clone();
        assert_eq!(class_labels(&plain, &output, 3, None), None);
        assert!(read(&fixture("no_such_model")).is_err());
    }

    #[test]
    fn labels_are_trusted_only_when_unambiguous() {
        let mut a = node("LinearClassifier", &["x"], &["la", "pa"]);
        a.classlabels_strings = strings(&["a", "b"]);
        let mut b = node("SVMClassifier", &["x"], &["lb", "pb"]);
        b.classlabels_int64s = vec![3, 9];
        let mut same_as_a = node("TreeEnsembleClassifier", &["x"], &["lc", "pc"]);
        same_as_a.classlabels_strings = strings(&["a", "b"]);
        let mean = |inputs: &[&str]| Node {
            domain: String::new(),
            ..node("Mean", inputs, &["p"])
        };
        let graph = |nodes: Vec<Node>| Graph {
            nodes,
            ..Graph::default()
        };
        // Two classifiers averaged: they must agree.
        let disagree = graph(vec![a.clone(), b.clone(), mean(&["pa", "pb"])]);
        assert_eq!(class_labels(&disagree, "p", 2, None), None);
        let agree = graph(vec![a.clone(), same_as_a, mean(&["pa", "pc"])]);
        assert_eq!(
            class_labels(&agree, "p", 2, None),
            Some(strings(&["a", "b"]))
        );
        // Stacked: the final classifier names the classes, not those it is fed by.
        let mut meta = node("LinearClassifier", &["pb"], &["l", "p"]);
        meta.classlabels_strings = strings(&["x", "y"]);
        let stacked = graph(vec![b.clone(), meta]);
        assert_eq!(
            class_labels(&stacked, "p", 2, None),
            Some(strings(&["x", "y"]))
        );
        assert_eq!(
            class_labels(&stacked, "pb", 2, None),
            Some(strings(&["3", "9"]))
        );
        // A node naming classes both ways is not trusted.
        let mut both = a.clone();
        both.classlabels_int64s = vec![1, 2];
        assert_eq!(class_labels(&graph(vec![both]), "pa", 2, None), None);
        // Attributes outside ai.onnx.ml are not class labels.
        let mut custom = a;
        custom.domain = "com.example".into();
        assert_eq!(class_labels(&graph(vec![custom]), "pa", 2, None), None);
        // A cycle (invalid, but a file may hold one) ends.
        let cycle = graph(vec![mean(&["p"])]);
        assert_eq!(class_labels(&cycle, "p", 2, None), None);
    }
}
