//! The VM's object store, and its one-way conversion into the public [`Value`] tree.
//!
//! Pickle objects are mutable after creation (`EMPTY_LIST`, `MEMOIZE`, then `APPENDS`), and
//! the memo must see those mutations, so the VM keeps objects in an arena addressed by
//! handles while it runs. Only when `STOP` is reached is the arena turned into `Value`s;
//! each object is converted once and shared via `Arc` wherever the pickle references it
//! again, so repeated memo `GET`s cost one copy.

use std::collections::HashMap;
use std::mem;
use std::sync::Arc;

use super::numpy::Dt;
use super::LoadError;
use crate::allowlist::Global;
use crate::value::{ArrayData, DType, NdArray, Value};

/// Index of an object in [`Heap::objs`].
pub(crate) type Handle = usize;

/// Preallocated handles for the constants pushed most often, so that they cost no
/// arena slot.
pub(crate) const NONE: Handle = 0;
pub(crate) const TRUE: Handle = 1;
pub(crate) const FALSE: Handle = 2;

pub(crate) enum Obj {
    /// Anything immutable and already final (numbers, strings, decoded arrays).
    Leaf(Value),
    List(Vec<Handle>),
    Tuple(Vec<Handle>),
    Dict(Vec<(Handle, Handle)>),
    Set(Vec<Handle>),
    /// An allowlisted global that has not been "called".
    Global(Global),
    /// An allowlisted class instance: constructor arguments and `BUILD` state.
    Instance(Box<Instance>),
    /// A `numpy.dtype(...)`, refined by a following `BUILD`.
    DType(Dt),
    /// `numpy.core.multiarray._reconstruct(...)` waiting for its `BUILD`.
    EmptyArray,
    /// A numpy object array; `items` is a list of its elements in C order.
    ObjectArray {
        shape: Vec<usize>,
        items: Handle,
    },
    /// A joblib `NumpyArrayWrapper` waiting for its `BUILD` (after which the array bytes
    /// follow in the file).
    JoblibWrapper,
    /// Placeholder left behind while an object is being converted.
    Taken,
}

pub(crate) struct Instance {
    pub(crate) module: String,
    pub(crate) name: String,
    pub(crate) args: Vec<Handle>,
    pub(crate) state: Option<Handle>,
}

impl Obj {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Obj::Leaf(Value::None) => "None",
            Obj::Leaf(Value::Bool(_)) => "bool",
            Obj::Leaf(Value::Int(_) | Value::BigInt(_)) => "int",
            Obj::Leaf(Value::Float(_)) => "float",
            Obj::Leaf(Value::Str(_)) => "str",
            Obj::Leaf(Value::Bytes(_)) => "bytes",
            Obj::Leaf(Value::Array(_)) => "numpy array",
            Obj::Leaf(Value::DType(_)) => "numpy dtype",
            Obj::Leaf(_) => "value",
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Dict(_) => "dict",
            Obj::Set(_) => "set",
            Obj::Global(_) => "class reference",
            Obj::Instance(_) => "object",
            Obj::DType(_) => "numpy dtype",
            Obj::EmptyArray | Obj::ObjectArray { .. } => "numpy array",
            Obj::JoblibWrapper => "joblib array wrapper",
            Obj::Taken => "object under conversion",
        }
    }
}

/// Counts bytes of decoded output against a limit derived from the input size, so that
/// no input can make the reader use more than a fixed multiple of its own size.
pub(crate) struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget { used: 0, limit }
    }

    pub(crate) fn charge(&mut self, bytes: usize, offset: usize) -> Result<(), LoadError> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= self.limit => {
                self.used = used;
                Ok(())
            }
            _ => Err(LoadError::LimitExceeded {
                offset,
                message: format!(
                    "decoded data would exceed the budget of {} bytes for this input",
                    self.limit
                ),
            }),
        }
    }

    /// Charges `count` items of `each` bytes, with overflow-checked multiplication.
    pub(crate) fn charge_n(
        &mut self,
        count: usize,
        each: usize,
        offset: usize,
    ) -> Result<(), LoadError> {
        let bytes = count.saturating_mul(each);
        self.charge(bytes, offset)
    }
}

enum Converted {
    Todo,
    InProgress,
    Done(Value),
}

pub(crate) struct Heap {
    pub(crate) objs: Vec<Obj>,
}

impl Heap {
    pub(crate) fn new() -> Self {
        Heap {
            objs: vec![
                Obj::Leaf(Value::None),
                Obj::Leaf(Value::Bool(true)),
                Obj::Leaf(Value::Bool(false)),
            ],
        }
    }

    pub(crate) fn alloc(
        &mut self,
        obj: Obj,
        budget: &mut Budget,
        offset: usize,
    ) -> Result<Handle, LoadError> {
        budget.charge(mem::size_of::<Obj>(), offset)?;
        self.objs.push(obj);
        Ok(self.objs.len() - 1)
    }

    pub(crate) fn get(&self, handle: Handle) -> &Obj {
        // Handles only come from `alloc`, so they are always in range; `Taken` stands in
        // for the impossible case rather than panicking.
        self.objs.get(handle).unwrap_or(&Obj::Taken)
    }

    pub(crate) fn get_mut(&mut self, handle: Handle) -> Option<&mut Obj> {
        self.objs.get_mut(handle)
    }

    pub(crate) fn int(&self, handle: Handle) -> Option<i64> {
        match self.get(handle) {
            Obj::Leaf(Value::Int(i)) => Some(*i),
            Obj::Leaf(Value::Bool(b)) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub(crate) fn bool(&self, handle: Handle) -> Option<bool> {
        match self.get(handle) {
            Obj::Leaf(Value::Bool(b)) => Some(*b),
            Obj::Leaf(Value::Int(i)) => Some(*i != 0),
            _ => None,
        }
    }

    pub(crate) fn str(&self, handle: Handle) -> Option<&str> {
        match self.get(handle) {
            Obj::Leaf(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn bytes(&self, handle: Handle) -> Option<&[u8]> {
        match self.get(handle) {
            Obj::Leaf(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn tuple(&self, handle: Handle) -> Option<&[Handle]> {
        match self.get(handle) {
            Obj::Tuple(items) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn is_ndarray_type(&self, handle: Handle) -> bool {
        matches!(self.get(handle), Obj::Global(Global::NumpyNdarray))
    }

    pub(crate) fn is_none(&self, handle: Handle) -> bool {
        matches!(self.get(handle), Obj::Leaf(Value::None))
    }

    /// The string-keyed entries of a dict object, last value winning as in Python,
    /// for lookups in big dicts (dtype fields) without a linear scan per key.
    pub(crate) fn str_dict(&self, handle: Handle) -> Option<HashMap<&str, Handle>> {
        match self.get(handle) {
            Obj::Dict(items) => Some(
                items
                    .iter()
                    .filter_map(|&(k, v)| Some((self.str(k)?, v)))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Number of entries of a dict object (0 for anything else).
    pub(crate) fn dict_len(&self, handle: Handle) -> usize {
        match self.get(handle) {
            Obj::Dict(items) => items.len(),
            _ => 0,
        }
    }

    /// Looks up a string key in a small dict object (joblib wrapper state) by a linear
    /// scan; callers bound the dict's size first.
    pub(crate) fn dict_get(&self, handle: Handle, key: &str) -> Option<Handle> {
        match self.get(handle) {
            Obj::Dict(items) => items
                .iter()
                .rev()
                .find(|(k, _)| self.str(*k) == Some(key))
                .map(|&(_, v)| v),
            _ => None,
        }
    }

    /// Turns the object graph under `root` into a `Value` tree.
    pub(crate) fn into_value(
        self,
        root: Handle,
        max_depth: usize,
        budget: &mut Budget,
        offset: usize,
    ) -> Result<Value, LoadError> {
        let converted = (0..self.objs.len()).map(|_| Converted::Todo).collect();
        let mut converter = Converter {
            objs: self.objs,
            converted,
            max_depth,
            budget,
            offset,
        };
        converter.value(root)
    }
}

struct Converter<'b> {
    objs: Vec<Obj>,
    converted: Vec<Converted>,
    max_depth: usize,
    budget: &'b mut Budget,
    offset: usize,
}

/// One step of the explicit-stack traversal: visit an object (pushing its children),
/// or finish it once its children's values are on the value stack.
enum Task {
    Visit { handle: Handle, depth: usize },
    Finish { handle: Handle, obj: Obj },
}

impl Converter<'_> {
    fn limit(&self, message: String) -> LoadError {
        LoadError::LimitExceeded {
            offset: self.offset,
            message,
        }
    }

    /// Post-order traversal with explicit stacks, so that no input nesting can overflow
    /// the thread's stack; `max_depth` bounds the nesting accepted.
    fn value(&mut self, root: Handle) -> Result<Value, LoadError> {
        let mut tasks = vec![Task::Visit {
            handle: root,
            depth: 0,
        }];
        let mut values: Vec<Value> = Vec::new();
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit { handle, depth } => {
                    if depth > self.max_depth {
                        return Err(self.limit(format!(
                            "containers nested deeper than {} levels",
                            self.max_depth
                        )));
                    }
                    let slot =
                        self.converted
                            .get_mut(handle)
                            .ok_or_else(|| LoadError::Malformed {
                                offset: self.offset,
                                message: "dangling object reference".into(),
                            })?;
                    match slot {
                        Converted::Done(value) => {
                            let value = value.clone();
                            self.budget.charge(
                                mem::size_of::<Value>() + owned_size(&value),
                                self.offset,
                            )?;
                            values.push(value);
                            continue;
                        }
                        Converted::InProgress => {
                            return Err(LoadError::Unsupported {
                                offset: self.offset,
                                feature: "self-referencing (recursive) objects".into(),
                            })
                        }
                        Converted::Todo => *slot = Converted::InProgress,
                    }
                    let obj = mem::replace(&mut self.objs[handle], Obj::Taken);
                    let children = children(&obj);
                    tasks.push(Task::Finish { handle, obj });
                    tasks.extend(children.into_iter().rev().map(|child| Task::Visit {
                        handle: child,
                        depth: depth + 1,
                    }));
                }
                Task::Finish { handle, obj } => {
                    let count = child_count(&obj);
                    let split =
                        values
                            .len()
                            .checked_sub(count)
                            .ok_or_else(|| LoadError::Malformed {
                                offset: self.offset,
                                message: "internal: value stack underflow".into(),
                            })?;
                    let children = values.split_off(split);
                    let value = self.finish(obj, children)?;
                    self.budget
                        .charge(mem::size_of::<Value>() + owned_size(&value), self.offset)?;
                    self.converted[handle] = Converted::Done(value.clone());
                    values.push(value);
                }
            }
        }
        values.pop().ok_or_else(|| LoadError::Malformed {
            offset: self.offset,
            message: "internal: no value produced".into(),
        })
    }

    /// Builds the value of `obj` from its children's values (in `children` order).
    fn finish(&mut self, obj: Obj, children: Vec<Value>) -> Result<Value, LoadError> {
        Ok(match obj {
            Obj::Leaf(value) => value,
            Obj::List(_) => Value::List(Arc::new(children)),
            Obj::Tuple(_) => Value::Tuple(Arc::new(children)),
            Obj::Set(_) => Value::Set(Arc::new(children)),
            Obj::Dict(_) => {
                let mut pairs = Vec::with_capacity(children.len() / 2);
                let mut iter = children.into_iter();
                while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                    pairs.push((k, v));
                }
                Value::Dict(Arc::new(pairs))
            }
            Obj::Global(Global::NumpyScalarType(dtype)) => Value::DType(dtype),
            // An allowlisted class passed as data (numpy's `__bit_generator_ctor(MT19937)`)
            // reads as an object with neither arguments nor state.
            Obj::Global(Global::Class { module, name }) => Value::Object {
                module,
                name,
                args: Arc::new(Vec::new()),
                state: None,
            },
            Obj::Global(global) => {
                return Err(LoadError::Unsupported {
                    offset: self.offset,
                    feature: format!("class reference \"{}\" used as data", global.dotted_name()),
                })
            }
            Obj::Instance(instance) => {
                let Instance {
                    module,
                    name,
                    args,
                    state,
                } = *instance;
                let mut children = children;
                let state = match state {
                    Some(_) => children.pop().map(Arc::new),
                    None => None,
                };
                debug_assert_eq!(children.len(), args.len());
                Value::Object {
                    module,
                    name,
                    args: Arc::new(children),
                    state,
                }
            }
            Obj::DType(dt) => Value::DType(dt.dtype),
            Obj::EmptyArray => {
                return Err(LoadError::Numpy {
                    offset: self.offset,
                    message: "array reconstructed without its BUILD state".into(),
                })
            }
            Obj::ObjectArray { shape, .. } => {
                let elements = match children.into_iter().next() {
                    Some(Value::List(list) | Value::Tuple(list)) => {
                        self.budget
                            .charge_n(list.len(), mem::size_of::<Value>(), self.offset)?;
                        for item in list.iter() {
                            self.budget.charge(owned_size(item), self.offset)?;
                        }
                        Arc::unwrap_or_clone(list)
                    }
                    _ => {
                        return Err(LoadError::Numpy {
                            offset: self.offset,
                            message: "object array data is not a list".into(),
                        })
                    }
                };
                Value::Array(Arc::new(NdArray {
                    dtype: DType::Object,
                    shape,
                    data: ArrayData::Object(elements),
                }))
            }
            Obj::JoblibWrapper => {
                return Err(LoadError::Malformed {
                    offset: self.offset,
                    message: "joblib array wrapper without its BUILD state".into(),
                })
            }
            Obj::Taken => {
                return Err(LoadError::Malformed {
                    offset: self.offset,
                    message: "object referenced while being converted".into(),
                })
            }
        })
    }
}

/// The handles `obj`'s value is built from, in the order `Converter::finish` expects.
fn children(obj: &Obj) -> Vec<Handle> {
    match obj {
        Obj::List(items) | Obj::Tuple(items) | Obj::Set(items) => items.clone(),
        Obj::Dict(pairs) => pairs.iter().flat_map(|&(k, v)| [k, v]).collect(),
        Obj::Instance(instance) => instance
            .args
            .iter()
            .copied()
            .chain(instance.state)
            .collect(),
        Obj::ObjectArray { items, .. } => vec![*items],
        _ => Vec::new(),
    }
}

fn child_count(obj: &Obj) -> usize {
    match obj {
        Obj::List(items) | Obj::Tuple(items) | Obj::Set(items) => items.len(),
        Obj::Dict(pairs) => pairs.len().saturating_mul(2),
        Obj::Instance(instance) => instance.args.len() + usize::from(instance.state.is_some()),
        Obj::ObjectArray { .. } => 1,
        _ => 0,
    }
}

/// Bytes a clone of `value` copies beyond the node itself (shared `Arc`s cost nothing).
fn owned_size(value: &Value) -> usize {
    match value {
        Value::Str(s) => s.len(),
        Value::Bytes(b) | Value::BigInt(b) => b.len(),
        Value::Object { module, name, .. } => module.len() + name.len(),
        Value::DType(DType::Record(fields)) => fields
            .len()
            .saturating_mul(mem::size_of::<crate::value::RecordField>() + 32),
        _ => 0,
    }
}
