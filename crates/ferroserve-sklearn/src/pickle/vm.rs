//! The pickle virtual machine: one iterative loop over opcodes (protocols 0–5).
//!
//! Invariant: the loop never recurses and never calls anything named in the file.
//! Globals come only from [`crate::allowlist::resolve`]; "calling" one (`REDUCE`,
//! `NEWOBJ`, `INST`, `OBJ`) follows the plain-data recipe its [`Global`] variant stands for.
//! Every opcode adds at most one arena object, so VM memory grows with the input size.

use std::collections::HashMap;

use super::heap::{Budget, Handle, Heap, Instance, Obj, FALSE, NONE, TRUE};
use super::numpy::{self, Dt};
use super::reader::Reader;
use super::{Limits, LoadError};
use crate::allowlist::{resolve, Global};
use crate::joblib;
use crate::value::{DType, Value};

pub(crate) struct Vm<'a, 'b> {
    pub(crate) reader: Reader<'a>,
    pub(crate) heap: Heap,
    stack: Vec<Handle>,
    /// Stack lengths at each open `MARK` (Python's "metastack").
    marks: Vec<usize>,
    /// Keyed by the pickle's own memo indices; a `HashMap` so that a huge index costs
    /// one entry, not a huge vector.
    memo: HashMap<u64, Handle>,
    pub(crate) budget: &'b mut Budget,
    pub(crate) limits: &'b Limits,
    /// Whether joblib array wrappers may appear. Off inside the nested pickle of a joblib
    /// object array (joblib reads those with a plain unpickler), which also keeps that
    /// nesting to one level.
    pub(crate) joblib_arrays: bool,
    /// Whether a class on no list becomes [`Global::Inert`] instead of being refused
    /// (the per-model opt-in for users' own wrapper classes).
    pub(crate) inert_classes: bool,
    /// Offset of the opcode being executed, for error messages.
    op_offset: usize,
}

impl<'a, 'b> Vm<'a, 'b> {
    pub(crate) fn new(
        data: &'a [u8],
        start: usize,
        budget: &'b mut Budget,
        limits: &'b Limits,
        joblib_arrays: bool,
    ) -> Self {
        Vm {
            reader: Reader::new(data, start),
            heap: Heap::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget,
            limits,
            joblib_arrays,
            inert_classes: false,
            op_offset: start,
        }
    }

    /// Accept unknown classes as inert attribute bags (see [`Global::Inert`]).
    pub(crate) fn with_inert_classes(mut self, inert: bool) -> Self {
        self.inert_classes = inert;
        self
    }

    /// [`resolve`], or with the opt-in an unknown class as [`Global::Inert`].
    fn resolve(&self, module: &str, name: &str) -> Result<Global, LoadError> {
        match resolve(module, name) {
            Err(LoadError::Refused { module, name }) if self.inert_classes => {
                Ok(Global::Inert { module, name })
            }
            other => other,
        }
    }

    pub(crate) fn malformed(&self, message: impl Into<String>) -> LoadError {
        LoadError::Malformed {
            offset: self.op_offset,
            message: message.into(),
        }
    }

    pub(crate) fn offset(&self) -> usize {
        self.op_offset
    }

    fn unsupported(&self, feature: impl Into<String>) -> LoadError {
        LoadError::Unsupported {
            offset: self.op_offset,
            feature: feature.into(),
        }
    }

    pub(crate) fn alloc(&mut self, obj: Obj) -> Result<Handle, LoadError> {
        self.heap.alloc(obj, self.budget, self.op_offset)
    }

    fn push(&mut self, obj: Obj) -> Result<(), LoadError> {
        let handle = self.alloc(obj)?;
        self.stack.push(handle);
        Ok(())
    }

    fn push_value(&mut self, value: Value) -> Result<(), LoadError> {
        self.push(Obj::Leaf(value))
    }

    fn stack_base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Handle, LoadError> {
        if self.stack.len() <= self.stack_base() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<Handle, LoadError> {
        if self.stack.len() <= self.stack_base() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Handle>, LoadError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        if mark > self.stack.len() {
            return Err(self.malformed("MARK above the stack top"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), LoadError> {
        // Memo keys written by CPython count up from 0, one per memoized object, so a
        // key beyond the input length cannot come from a real pickle.
        if key > self.reader.input_len() as u64 {
            return Err(LoadError::LimitExceeded {
                offset: self.op_offset,
                message: format!("memo index {key} is larger than the input"),
            });
        }
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), LoadError> {
        let handle = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(format!("memo key {key} not found")))?;
        self.stack.push(handle);
        Ok(())
    }

    fn line_str(&mut self) -> Result<&'a str, LoadError> {
        let line = self.reader.line()?;
        std::str::from_utf8(line).map_err(|_| self.malformed("text argument is not UTF-8"))
    }

    fn line_int(&mut self) -> Result<u64, LoadError> {
        let text = self.line_str()?;
        text.trim()
            .parse()
            .map_err(|_| self.malformed(format!("invalid memo key {text:?}")))
    }

    fn utf8(&self, bytes: &[u8]) -> Result<Value, LoadError> {
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_owned()))
            .map_err(|_| self.malformed("string is not valid UTF-8"))
    }

    /// Runs until `STOP`; returns the top of the stack, converted, and the offset just
    /// after `STOP`.
    pub(crate) fn run(mut self) -> Result<(Value, usize), LoadError> {
        loop {
            self.op_offset = self.reader.pos();
            let op = self.reader.u8()?;
            if op == b'.' {
                let root = self.pop()?;
                // CPython never leaves a MARK open at STOP; a stream that does is not
                // something pickle.dump wrote.
                if !self.marks.is_empty() {
                    return Err(
                        self.malformed(format!("STOP with {} unclosed MARKs", self.marks.len()))
                    );
                }
                let end = self.reader.pos();
                let offset = self.op_offset;
                let value =
                    self.heap
                        .into_value(root, self.limits.max_depth, self.budget, offset)?;
                return Ok((value, end));
            }
            self.step(op)?;
        }
    }

    fn step(&mut self, op: u8) -> Result<(), LoadError> {
        match op {
            // Framing and protocol.
            0x80 => {
                let proto = self.reader.u8()?;
                if proto > 5 {
                    return Err(self.unsupported(format!("pickle protocol {proto}")));
                }
            }
            0x95 => {
                // FRAME only tells a streaming reader how much to prefetch; the data is
                // already in memory, so the length is checked and otherwise ignored.
                let len = self.reader.u64_le()?;
                if len > self.reader.remaining() as u64 {
                    return Err(LoadError::Truncated {
                        offset: self.op_offset,
                        needed: len,
                        available: self.reader.remaining(),
                    });
                }
            }
            // Stack manipulation.
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.stack.len() > self.stack_base() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            // Constants and numbers.
            b'N' => self.stack.push(NONE),
            0x88 => self.stack.push(TRUE),
            0x89 => self.stack.push(FALSE),
            b'I' => {
                let text = self.line_str()?;
                match text {
                    "00" => self.stack.push(FALSE),
                    "01" => self.stack.push(TRUE),
                    _ => {
                        let v = parse_decimal(text)
                            .ok_or_else(|| self.malformed("invalid INT argument"))?;
                        self.push_value(v)?;
                    }
                }
            }
            b'L' => {
                let text = self.line_str()?;
                let digits = text.strip_suffix('L').unwrap_or(text);
                let v =
                    parse_decimal(digits).ok_or_else(|| self.malformed("invalid LONG argument"))?;
                self.push_value(v)?;
            }
            b'J' => {
                let v = self.reader.i32_le()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = self.reader.u8()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = self.reader.u16_le()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            0x8a => {
                let n = self.reader.u8()?;
                let bytes = self.reader.take(u64::from(n))?;
                self.push_value(decode_long(bytes))?;
            }
            0x8b => {
                let n = self.reader.i32_le()?;
                let n = u64::try_from(n).map_err(|_| self.malformed("negative LONG4 length"))?;
                let bytes = self.reader.take(n)?;
                self.push_value(decode_long(bytes))?;
            }
            b'F' => {
                let text = self.line_str()?;
                let v: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| self.malformed(format!("invalid FLOAT {text:?}")))?;
                self.push_value(Value::Float(v))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.reader.array()?);
                self.push_value(Value::Float(v))?;
            }
            // Strings and bytes.
            b'S' => {
                let line = self.reader.line()?;
                let bytes = decode_string_literal(line)
                    .ok_or_else(|| self.malformed("invalid STRING literal"))?;
                self.push_value(Value::Str(latin1(&bytes)))?;
            }
            b'T' => {
                let n = self.reader.i32_le()?;
                let n =
                    u64::try_from(n).map_err(|_| self.malformed("negative BINSTRING length"))?;
                let bytes = self.reader.take(n)?;
                // Python 2 `str`: read as latin-1, the encoding numpy and sklearn use.
                self.push_value(Value::Str(latin1(bytes)))?;
            }
            b'U' => {
                let n = self.reader.u8()?;
                let bytes = self.reader.take(u64::from(n))?;
                self.push_value(Value::Str(latin1(bytes)))?;
            }
            b'V' => {
                let line = self.reader.line()?;
                let text = decode_raw_unicode_escape(line)
                    .ok_or_else(|| self.malformed("invalid UNICODE argument"))?;
                self.push_value(Value::Str(text))?;
            }
            b'X' => {
                let n = self.reader.u32_le()?;
                let bytes = self.reader.take(u64::from(n))?;
                let value = self.utf8(bytes)?;
                self.push_value(value)?;
            }
            0x8c => {
                let n = self.reader.u8()?;
                let bytes = self.reader.take(u64::from(n))?;
                let value = self.utf8(bytes)?;
                self.push_value(value)?;
            }
            0x8d => {
                let n = self.reader.u64_le()?;
                let bytes = self.reader.take(n)?;
                let value = self.utf8(bytes)?;
                self.push_value(value)?;
            }
            b'B' => {
                let n = self.reader.u32_le()?;
                let bytes = self.reader.take(u64::from(n))?;
                self.push_value(Value::Bytes(bytes.to_vec()))?;
            }
            b'C' => {
                let n = self.reader.u8()?;
                let bytes = self.reader.take(u64::from(n))?;
                self.push_value(Value::Bytes(bytes.to_vec()))?;
            }
            0x8e | 0x96 => {
                // BINBYTES8 and BYTEARRAY8: a bytearray is plain bytes once read.
                let n = self.reader.u64_le()?;
                let bytes = self.reader.take(n)?;
                self.push_value(Value::Bytes(bytes.to_vec()))?;
            }
            // Containers.
            b')' => self.push(Obj::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Obj::Tuple(items))?;
            }
            b']' => self.push(Obj::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Obj::List(items))?;
            }
            b'}' => self.push(Obj::Dict(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Obj::Dict(pairs))?;
            }
            0x8f => self.push(Obj::Set(Vec::new()))?,
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Obj::Set(items))?;
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.extend_dict(pairs)?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.heap.get_mut(target) {
                    Some(Obj::Set(set)) => set.extend(items),
                    _ => return Err(self.malformed("ADDITEMS on something that is not a set")),
                }
            }
            // Memo.
            b'p' => {
                let key = self.line_int()?;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = self.reader.u8()?;
                self.memo_put(u64::from(key))?;
            }
            b'r' => {
                let key = self.reader.u32_le()?;
                self.memo_put(u64::from(key))?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            b'g' => {
                let key = self.line_int()?;
                self.memo_get(key)?;
            }
            b'h' => {
                let key = self.reader.u8()?;
                self.memo_get(u64::from(key))?;
            }
            b'j' => {
                let key = self.reader.u32_le()?;
                self.memo_get(u64::from(key))?;
            }
            // Globals and object construction.
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let global = self.resolve(module, name)?;
                self.push(Obj::Global(global))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.heap.str(module), self.heap.str(name))
                else {
                    return Err(self.malformed("STACK_GLOBAL arguments are not strings"));
                };
                let global = self.resolve(module, name)?;
                self.push(Obj::Global(global))?;
            }
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let global = self.resolve(module, name)?;
                let args = self.pop_mark()?;
                let obj = self.call(&global, &args)?;
                self.push(obj)?;
            }
            b'o' => {
                let items = self.pop_mark()?;
                let (&class, args) = items
                    .split_first()
                    .ok_or_else(|| self.malformed("OBJ without a class"))?;
                let global = self.global_at(class)?;
                let obj = self.call(&global, args)?;
                self.push(obj)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let global = self.global_at(callable)?;
                let args = self.tuple_items(args, "REDUCE arguments")?;
                let obj = self.call(&global, &args)?;
                self.push(obj)?;
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                let global = self.global_at(class)?;
                let args = self.tuple_items(args, "NEWOBJ arguments")?;
                let obj = self.new_object(&global, &args)?;
                self.push(obj)?;
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let global = self.global_at(class)?;
                if !matches!(self.heap.get(kwargs), Obj::Dict(items) if items.is_empty()) {
                    return Err(self.unsupported("NEWOBJ_EX with keyword arguments"));
                }
                let args = self.tuple_items(args, "NEWOBJ_EX arguments")?;
                let obj = self.new_object(&global, &args)?;
                self.push(obj)?;
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            // Refused features.
            b'P' | b'Q' => return Err(self.unsupported("persistent ids (PERSID/BINPERSID)")),
            0x82..=0x84 => return Err(self.unsupported("extension registry codes (EXT1/2/4)")),
            0x97 | 0x98 => {
                return Err(self.unsupported("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER)"))
            }
            _ => return Err(self.malformed(format!("unknown opcode 0x{op:02x}"))),
        }
        Ok(())
    }

    fn pairs(&self, items: Vec<Handle>) -> Result<Vec<(Handle, Handle)>, LoadError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Handle>) -> Result<(), LoadError> {
        let target = self.top()?;
        match self.heap.get_mut(target) {
            Some(Obj::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.malformed("APPEND(S) on something that is not a list")),
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Handle, Handle)>) -> Result<(), LoadError> {
        let target = self.top()?;
        match self.heap.get_mut(target) {
            Some(Obj::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => Err(self.malformed("SETITEM(S) on something that is not a dict")),
        }
    }

    fn global_at(&self, handle: Handle) -> Result<Global, LoadError> {
        match self.heap.get(handle) {
            Obj::Global(global) => Ok(global.clone()),
            other => Err(self.malformed(format!("cannot call a {}", other.kind()))),
        }
    }

    /// Copies a tuple's items. The copy is charged to the budget: a memoized tuple can be
    /// passed to any number of REDUCEs for two bytes each.
    pub(crate) fn tuple_items(
        &mut self,
        handle: Handle,
        what: &str,
    ) -> Result<Vec<Handle>, LoadError> {
        let items = self
            .heap
            .tuple(handle)
            .map(<[Handle]>::to_vec)
            .ok_or_else(|| self.malformed(format!("{what} are not a tuple")))?;
        self.budget
            .charge_n(items.len(), std::mem::size_of::<Handle>(), self.op_offset)?;
        Ok(items)
    }

    /// `bytes(text, "latin1")` and `_codecs.encode(text, "latin1")`: how protocol 2
    /// writes a bytes object.
    fn latin1_bytes(&self, heap: &Heap, text: Handle, not_str: &str) -> Result<Obj, LoadError> {
        let text = heap.str(text).ok_or_else(|| self.malformed(not_str))?;
        let bytes =
            encode_latin1(text).ok_or_else(|| self.malformed("text is not latin-1 encodable"))?;
        Ok(Obj::Leaf(Value::Bytes(bytes)))
    }

    fn refuse_call(&self, global: &Global, reason: &str) -> LoadError {
        let dotted = global.dotted_name();
        let (module, name) = dotted.rsplit_once('.').unwrap_or(("", &dotted));
        LoadError::RefusedCall {
            module: module.to_owned(),
            name: name.to_owned(),
            offset: self.op_offset,
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn dtype_at(&self, handle: Handle) -> Result<Dt, LoadError> {
        match self.heap.get(handle) {
            Obj::DType(dt) => Ok(dt.clone()),
            other => Err(LoadError::Numpy {
                offset: self.op_offset,
                message: format!("expected a numpy dtype, found a {}", other.kind()),
            }),
        }
    }

    fn instance(&self, module: &str, name: &str, args: Vec<Handle>) -> Obj {
        Obj::Instance(Box::new(Instance {
            module: module.to_owned(),
            name: name.to_owned(),
            args,
            state: None,
        }))
    }

    /// `REDUCE` / `INST` / `OBJ`: what calling `global(*args)` would produce, rebuilt from
    /// plain data.
    fn call(&mut self, global: &Global, args: &[Handle]) -> Result<Obj, LoadError> {
        let heap = &self.heap;
        match global {
            Global::NumpyReconstruct => match args {
                [subtype, ..]
                    if matches!(heap.get(*subtype), Obj::Global(Global::NumpyNdarray)) =>
                {
                    Ok(Obj::EmptyArray)
                }
                _ => Err(self.refuse_call(global, "only plain numpy.ndarray is rebuilt")),
            },
            Global::NumpyDType => {
                let code = args
                    .first()
                    .and_then(|&h| heap.str(h))
                    .ok_or_else(|| self.malformed("numpy.dtype needs a type code string"))?;
                Ok(Obj::DType(Dt::from_code(code, self.op_offset)?))
            }
            Global::NumpyScalar => {
                let [dtype, data, ..] = args else {
                    return Err(self.malformed("numpy scalar needs a dtype and data"));
                };
                let dt = self.dtype_at(*dtype)?;
                if matches!(dt.dtype, DType::Object) {
                    // An object scalar is just the object itself.
                    return clone_leaf(heap, *data)
                        .ok_or_else(|| self.unsupported("numpy object scalar of a container"));
                }
                let raw = bytes_like(heap, *data)
                    .ok_or_else(|| self.malformed("numpy scalar data is not bytes"))?;
                Ok(Obj::Leaf(numpy::scalar(&dt, &raw, self.op_offset)?))
            }
            Global::NumpyFromBuffer => {
                let [buffer, dtype, shape, order] = args else {
                    return Err(self.malformed("_frombuffer needs (buffer, dtype, shape, order)"));
                };
                let dt = self.dtype_at(*dtype)?;
                let shape = numpy::shape_of(heap, *shape, self.op_offset)?;
                let fortran = match heap.str(*order) {
                    Some("C") => false,
                    Some("F") => true,
                    _ => return Err(self.malformed("_frombuffer order must be 'C' or 'F'")),
                };
                let raw = heap
                    .bytes(*buffer)
                    .ok_or_else(|| self.malformed("_frombuffer buffer is not bytes"))?;
                let array =
                    numpy::decode_array(&dt, shape, fortran, raw, self.budget, self.op_offset)?;
                Ok(Obj::Leaf(Value::Array(std::sync::Arc::new(array))))
            }
            Global::CopyregReconstructor => {
                let [class, base, state] = args else {
                    return Err(self.malformed("copyreg._reconstructor needs 3 arguments"));
                };
                if !matches!(heap.get(*base), Obj::Global(Global::BuiltinsObject))
                    || !heap.is_none(*state)
                {
                    return Err(self.refuse_call(
                        global,
                        "only objects with base builtins.object are rebuilt",
                    ));
                }
                let class = self.global_at(*class)?;
                self.new_object(&class, &[])
            }
            Global::OrderedDict => match args {
                [] => Ok(Obj::Dict(Vec::new())),
                [items] => {
                    let items = match heap.get(*items) {
                        Obj::List(items) | Obj::Tuple(items) => {
                            self.budget.charge_n(items.len(), 16, self.op_offset)?;
                            items.clone()
                        }
                        _ => return Err(self.malformed("OrderedDict argument is not a list")),
                    };
                    let mut pairs = Vec::with_capacity(items.len());
                    for item in items {
                        match heap.tuple(item) {
                            Some([k, v]) => pairs.push((*k, *v)),
                            _ => return Err(self.malformed("OrderedDict item is not a pair")),
                        }
                    }
                    Ok(Obj::Dict(pairs))
                }
                _ => Err(self.malformed("OrderedDict takes at most one argument")),
            },
            Global::Set => match args {
                [] => Ok(Obj::Set(Vec::new())),
                [items] => match heap.get(*items) {
                    Obj::List(items) | Obj::Tuple(items) | Obj::Set(items) => {
                        self.budget.charge_n(items.len(), 16, self.op_offset)?;
                        Ok(Obj::Set(items.clone()))
                    }
                    _ => Err(self.malformed("set argument is not a list")),
                },
                _ => Err(self.malformed("set takes at most one argument")),
            },
            Global::Slice => {
                if args.is_empty() || args.len() > 3 {
                    return Err(self.malformed("slice takes 1 to 3 arguments"));
                }
                Ok(self.instance("builtins", "slice", args.to_vec()))
            }
            Global::CodecsEncode => match args {
                [text, encoding] if is_latin1_name(heap, *encoding) => {
                    self.latin1_bytes(heap, *text, "_codecs.encode needs a str")
                }
                _ => Err(self.refuse_call(global, "only latin-1 encoding of a str is rebuilt")),
            },
            Global::Bytes | Global::ByteArray => match args {
                [] => Ok(Obj::Leaf(Value::Bytes(Vec::new()))),
                [data] if heap.bytes(*data).is_some() => Ok(Obj::Leaf(Value::Bytes(
                    heap.bytes(*data).unwrap_or_default().to_vec(),
                ))),
                [text, encoding] if is_latin1_name(heap, *encoding) => {
                    self.latin1_bytes(heap, *text, "bytearray needs a str")
                }
                _ => Err(self.refuse_call(global, "only bytes/str data arguments are rebuilt")),
            },
            Global::Class { module, name } => Ok(self.instance(module, name, args.to_vec())),
            Global::NewObjHelper { .. } => match args {
                [class] => {
                    let class = self.global_at(*class)?;
                    match class {
                        Global::Class { .. } => self.new_object(&class, &[]),
                        _ => Err(self.refuse_call(global, "argument is not an allowlisted class")),
                    }
                }
                _ => Err(self.malformed("newObj takes one class argument")),
            },
            Global::CythonUnpickle { module, class_name } => match args {
                [class, _checksum, state] => {
                    if !matches!(self.global_at(*class)?, Global::Class { .. }) {
                        return Err(
                            self.refuse_call(global, "argument is not an allowlisted class")
                        );
                    }
                    let mut obj = Instance {
                        module: module.clone(),
                        name: class_name.clone(),
                        args: Vec::new(),
                        state: None,
                    };
                    if !heap.is_none(*state) {
                        obj.state = Some(*state);
                    }
                    Ok(Obj::Instance(Box::new(obj)))
                }
                _ => Err(self.malformed("Cython unpickle helper takes 3 arguments")),
            },
            Global::Inert { .. } => Err(self.refuse_call(
                global,
                "an unknown (wrapper) class is only rebuilt from NEWOBJ or \
                 copyreg._reconstructor and its state, never called",
            )),
            Global::NumpyNdarray
            | Global::NumpyScalarType(_)
            | Global::BuiltinsObject
            | Global::JoblibArrayWrapper => {
                Err(self.refuse_call(global, "this type is only accepted as data, not called"))
            }
        }
    }

    /// `NEWOBJ` / `NEWOBJ_EX`: `cls.__new__(cls, *args)`.
    fn new_object(&mut self, class: &Global, args: &[Handle]) -> Result<Obj, LoadError> {
        match class {
            Global::Class { module, name } => Ok(self.instance(module, name, args.to_vec())),
            Global::Inert { module, name } if args.is_empty() => {
                Ok(self.instance(module, name, Vec::new()))
            }
            Global::Inert { .. } => Err(self.refuse_call(
                class,
                "an unknown (wrapper) class is only created without arguments",
            )),
            Global::JoblibArrayWrapper if self.joblib_arrays => Ok(Obj::JoblibWrapper),
            Global::OrderedDict if args.is_empty() => Ok(Obj::Dict(Vec::new())),
            _ => Err(self.refuse_call(class, "not a class the reader creates")),
        }
    }

    /// `BUILD`: `target.__setstate__(state)` or `target.__dict__.update(state)`.
    fn build(&mut self, target: Handle, state: Handle) -> Result<(), LoadError> {
        let offset = self.op_offset;
        let rebuilt = match self.heap.get(target) {
            Obj::Instance(_) => {
                if let Some(Obj::Instance(instance)) = self.heap.get_mut(target) {
                    instance.state = Some(state);
                }
                return Ok(());
            }
            Obj::DType(dt) => {
                let mut dt = dt.clone();
                dt.apply_state(&self.heap, state, offset, self.budget)?;
                Obj::DType(dt)
            }
            Obj::EmptyArray => self.build_array(state)?,
            Obj::JoblibWrapper => {
                let array = joblib::read_wrapped_array(self, state)?;
                Obj::Leaf(array)
            }
            other => return Err(self.malformed(format!("BUILD on a {}", other.kind()))),
        };
        if let Some(slot) = self.heap.get_mut(target) {
            *slot = rebuilt;
        }
        Ok(())
    }

    /// `ndarray.__setstate__((version, shape, dtype, is_fortran, data))`.
    fn build_array(&mut self, state: Handle) -> Result<Obj, LoadError> {
        let offset = self.op_offset;
        let heap = &self.heap;
        let items = heap
            .tuple(state)
            .ok_or_else(|| self.malformed("array state is not a tuple"))?;
        let (shape, dtype, fortran, data) = match items {
            [_, shape, dtype, fortran, data] | [shape, dtype, fortran, data] => {
                (*shape, *dtype, *fortran, *data)
            }
            _ => return Err(self.malformed("array state has the wrong length")),
        };
        let shape = numpy::shape_of(heap, shape, offset)?;
        let dt = self.dtype_at(dtype)?;
        let fortran = heap
            .bool(fortran)
            .ok_or_else(|| self.malformed("array is_fortran flag is not a bool"))?;
        if matches!(dt.dtype, DType::Object) {
            // Object arrays pickle their elements as a list, always in C order.
            let count = numpy::element_count(&shape, offset)?;
            let len = match heap.get(data) {
                Obj::List(items) => items.len(),
                _ => {
                    return Err(LoadError::Numpy {
                        offset,
                        message: "object array data is not a list".into(),
                    })
                }
            };
            if len != count {
                return Err(LoadError::Numpy {
                    offset,
                    message: format!(
                        "object array has {len} elements, shape {shape:?} needs {count}"
                    ),
                });
            }
            return Ok(Obj::ObjectArray { shape, items: data });
        }
        let raw =
            bytes_like(heap, data).ok_or_else(|| self.malformed("array data is not bytes"))?;
        let array = numpy::decode_array(&dt, shape, fortran, &raw, self.budget, offset)?;
        Ok(Obj::Leaf(Value::Array(std::sync::Arc::new(array))))
    }
}

/// Bytes, or a str read from a Python 2 pickle (latin-1, one char per byte).
fn bytes_like(heap: &Heap, handle: Handle) -> Option<std::borrow::Cow<'_, [u8]>> {
    match heap.get(handle) {
        Obj::Leaf(Value::Bytes(b)) => Some(std::borrow::Cow::Borrowed(b)),
        Obj::Leaf(Value::Str(s)) => encode_latin1(s).map(std::borrow::Cow::Owned),
        _ => None,
    }
}

fn clone_leaf(heap: &Heap, handle: Handle) -> Option<Obj> {
    match heap.get(handle) {
        Obj::Leaf(value) => Some(Obj::Leaf(value.clone())),
        _ => None,
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn is_latin1_name(heap: &Heap, encoding: Handle) -> bool {
    matches!(
        heap.str(encoding),
        Some("latin1" | "latin-1" | "iso-8859-1")
    )
}

fn encode_latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// Python's own limit on decimal digits in an int (`sys.get_int_max_str_digits()`);
/// it also keeps the quadratic conversion below cheap.
const MAX_DECIMAL_DIGITS: usize = 4300;

/// Protocol 0 `INT` / `LONG` text, of any size, as pickle's binary opcodes would give it.
fn parse_decimal(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return Some(Value::Int(v));
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > MAX_DECIMAL_DIGITS {
        return None;
    }
    // Little-endian magnitude, built by multiply-by-ten-and-add.
    let mut magnitude: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d.checked_sub(b'0').filter(|&d| d < 10)?);
        for byte in magnitude.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // Two's complement with one spare byte for the sign, then trimmed to the shortest
    // form, which is what LONG1 would hold.
    magnitude.push(0);
    if negative {
        let mut carry = 1u16;
        for byte in magnitude.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    let fill = if negative { 0xff } else { 0x00 };
    while magnitude.len() > 1 {
        let len = magnitude.len();
        if magnitude[len - 1] == fill && (magnitude[len - 2] & 0x80 != 0) == negative {
            magnitude.pop();
        } else {
            break;
        }
    }
    Some(decode_long(&magnitude))
}

/// LONG1/LONG4 payload: little-endian two's complement of any width.
fn decode_long(bytes: &[u8]) -> Value {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    let fits = high.iter().all(|&b| b == fill)
        && (high.is_empty() || (low.len() == 8 && (low[7] & 0x80 != 0) == negative));
    if fits {
        let mut buf = [fill; 8];
        buf[..low.len()].copy_from_slice(low);
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

/// Protocol 0 `STRING` argument: a quoted Python 2 `repr` of a byte string.
fn decode_string_literal(line: &[u8]) -> Option<Vec<u8>> {
    let quote = *line.first()?;
    if !(quote == b'\'' || quote == b'"') || line.len() < 2 || *line.last()? != quote {
        return None;
    }
    let body = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'x' => {
                let hex = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v: u32 = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v).ok()?);
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Some(out)
}

/// Protocol 0 `UNICODE` argument: latin-1 text with `\uXXXX` / `\UXXXXXXXX` escapes.
fn decode_raw_unicode_escape(line: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let hex = std::str::from_utf8(line.get(i + 2..i + 2 + width)?).ok()?;
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                i += 2 + width;
                continue;
            }
        }
        out.push(char::from(c));
        i += 1;
    }
    Some(out)
}
