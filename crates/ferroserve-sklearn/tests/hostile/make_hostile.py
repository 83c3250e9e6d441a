"""Generates the hostile corpus for ferroserve-sklearn's reader
(`tests/hostile_corpus.rs` loads every file here and expects an error).

    /tmp/venv-pickle/bin/python make_hostile.py [--verify]

Two kinds of file:
* code-execution payloads (`payload_*`): pickles whose `__reduce__` would run a command
  that creates /tmp/ferroserve-canary-<name> if a real unpickler loaded them; alone,
  nested inside a fitted LogisticRegression's `__dict__`, and inside joblib files.
  `--verify` proves each payload is live by loading it with Python's pickle in a child
  process and checking that its canary appears (then removes the canary).
* crafted byte streams (`crafted_*`) for resource bounds: length bombs, nesting bombs,
  memo abuse, numpy shape bombs, decompression bombs.

expected_errors.json maps each file to a substring its error message must contain.
Big crafted streams are stored zlib/xz-compressed (the reader decompresses them first)
so that the committed corpus stays small.
"""

import builtins
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
import zlib

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "files")
CANARY = "/tmp/ferroserve-canary-%s"


class Reduce:
    """An object that pickles as `func(*args)`; callable so that it may itself be the
    `func` of another Reduce (pickle insists the callable be callable)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):
        raise RuntimeError("never called while pickling")


def touch(name):
    return "touch " + CANARY % name


def payloads():
    """name -> (object to pickle, class the reader must name in its refusal)."""
    return {
        "posix_system": (Reduce(os.system, (touch("posix_system"),)), "posix.system"),
        "subprocess_popen": (Reduce(subprocess.Popen, (["touch", CANARY % "subprocess_popen"],)), "subprocess.Popen"),
        "subprocess_check_output": (
            Reduce(subprocess.check_output, (["touch", CANARY % "subprocess_check_output"],)),
            "subprocess.check_output",
        ),
        "builtins_eval": (
            Reduce(builtins.eval, ("__import__('os').system(%r)" % touch("builtins_eval"),)),
            "builtins.eval",
        ),
        "builtins_exec": (
            Reduce(builtins.exec, ("import os; os.system(%r)" % touch("builtins_exec"),)),
            "builtins.exec",
        ),
        "getattr_import": (
            Reduce(
                Reduce(builtins.getattr, (Reduce(builtins.__import__, ("os",)), "system")),
                (touch("getattr_import"),),
            ),
            "builtins.getattr",
        ),
    }


def raw_global_payload(module, name, canary):
    """Protocol 0 `module.name('touch canary')`, for names pickle would spell otherwise
    (os.system pickles as posix.system on Linux; nt.system only exists on Windows)."""
    return b"c%s\n%s\n(V%s\ntR." % (module.encode(), name.encode(), touch(canary).encode())


def spelled(dotted, proto):
    """How `module.name` appears in a pickle of this protocol (pickle's fix_imports maps
    Python 3 names to Python 2 ones below protocol 3), after the reader maps
    __builtin__/copy_reg back."""
    module, name = dotted.rsplit(".", 1)
    if proto < 3:
        from _compat_pickle import REVERSE_IMPORT_MAPPING, REVERSE_NAME_MAPPING
        if (module, name) in REVERSE_NAME_MAPPING:
            module, name = REVERSE_NAME_MAPPING[(module, name)]
        elif module in REVERSE_IMPORT_MAPPING:
            module = REVERSE_IMPORT_MAPPING[module]
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    return 'refused to load "%s.%s"' % (module, name)


def fitted_model():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    return LogisticRegression().fit(X, [0, 1, 1, 0])


def write(files, name, data, expect):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    files[name] = expect


def op_long_len(op, n):
    return op + struct.pack("<Q", n)


def crafted(files):
    # Length prefixes far beyond the input.
    for name, data in {
        "binunicode8_2p60": b"\x80\x04" + op_long_len(b"\x8d", 2**60) + b"abc.",
        "binbytes8_2p60": b"\x80\x04" + op_long_len(b"\x8e", 2**60) + b"abc.",
        "bytearray8_2p64m1": b"\x80\x05" + op_long_len(b"\x96", 2**64 - 1) + b"abc.",
        "binunicode_4g": b"\x80\x02X\xff\xff\xff\xffabc.",
        "binbytes_4g": b"\x80\x03B\xff\xff\xff\xffabc.",
        "long4_2g": b"\x80\x02\x8b\xff\xff\xff\x7f\x00.",
        "frame_2p60": b"\x80\x04" + op_long_len(b"\x95", 2**60) + b"N.",
    }.items():
        write(files, "crafted_len_%s.pkl" % name, data, "truncated input")
    write(files, "crafted_long4_negative.pkl", b"\x80\x02\x8b\xff\xff\xff\xff.", "negative LONG4")

    # Nesting bombs (a million levels), stored compressed.
    n = 10**6
    bombs = {
        "lists": b"\x80\x02]" + b"(]" * n + b"e" * n + b".",
        "tuples": b"\x80\x02" + b"(" * n + b"t" * n + b".",
        "dicts": b"\x80\x02}" + b"K\x00}" * n + b"s" * n + b".",
        "marks_only": b"\x80\x02" + b"(" * n + b"N.",
    }
    for name, data in bombs.items():
        write(files, "crafted_nesting_%s_1e6.pkl.z" % name, zlib.compress(data, 9),
              "nested deeper" if name != "marks_only" else "unclosed MARKs")
    write(files, "crafted_nesting_lists_1000.pkl", b"\x80\x02]" + b"(]" * 1000 + b"e" * 1000 + b".", "nested deeper")
    write(files, "crafted_self_reference.pkl", b"\x80\x02]q\x00h\x00a.", "recursive")

    # Memo abuse.
    write(files, "crafted_memo_huge_put.pkl", b"\x80\x02Nr\xff\xff\xff\xff.", "memo index")
    write(files, "crafted_memo_put_text_huge.pkl", b"Np99999999999999999999\n.", "memo")
    write(files, "crafted_memo_missing_get.pkl", b"\x80\x02h\x05.", "memo key 5 not found")
    big_str = b"\x80\x04\x8d" + struct.pack("<Q", 10**6) + b"a" * 10**6 + b"\x94"
    gets = b"(" + b"h\x00" * 10**5 + b"l."
    write(files, "crafted_memo_repeated_get_big_str.pkl.z", zlib.compress(big_str + gets, 9), "budget")

    # numpy shape bombs.
    rec = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
    def dtype(code):
        return b"cnumpy\ndtype\nX" + struct.pack("<I", len(code)) + code + b"\x89\x88\x87R"
    def state(shape_ops, dtype_ops, data_ops):
        return b"(K\x01" + shape_ops + dtype_ops + b"\x89" + data_ops + b"tb."
    big = b"\x8a\x06" + (2**40).to_bytes(6, "little")
    write(files, "crafted_numpy_shape_2p40.pkl", rec + state(b"(" + big + b"t", dtype(b"f8"), b"C\x08" + b"\x00" * 8),
          "needs")
    write(files, "crafted_numpy_shape_overflow.pkl",
          rec + state(b"(" + big + big + big + b"t", dtype(b"f8"), b"C\x00"), "overflows")
    write(files, "crafted_numpy_zero_itemsize_2p40.pkl",
          rec + state(b"(" + big + b"t", dtype(b"U0"), b"C\x00"), "budget")
    write(files, "crafted_numpy_negative_dim.pkl",
          rec + state(b"(J\xff\xff\xff\xfft", dtype(b"f8"), b"C\x00"), "non-negative")
    write(files, "crafted_numpy_object_count.pkl",
          rec + state(b"(" + big + b"t", dtype(b"O8"), b"]"), "object array has 0 elements")
    write(files, "crafted_numpy_matrix_subtype.pkl",
          b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy.matrixlib.defmatrix\nmatrix\nK\x00\x85C\x01b\x87R.",
          'refused to load "numpy.matrixlib.defmatrix.matrix"')
    write(files, "crafted_numpy_ndarray_called.pkl", b"\x80\x02cnumpy\nndarray\n)R.", 'refused to call "numpy.ndarray"')
    write(files, "crafted_numpy_dtype_size_2p64m1.pkl",
          rec + state(b"(K\x00t", dtype(b"S18446744073709551615"), b"C\x00"), "too large")
    write(files, "crafted_numpy_100_dims.pkl",
          rec + state(b"(" + b"K\x01" * 100 + b"t", dtype(b"f8"), b"C\x08" + b"\x00" * 8), "more than 64 dimensions")
    # One memoized 100 000-item list passed to set() 100 000 times: 80 GB of copies
    # for 600 KB of input unless copies are charged.
    many = b"\x80\x02cbuiltins\nset\nq\x00](" + b"K\x01" * 10**5 + b"eq\x01" + b"h\x00h\x01\x85R0" * 10**5 + b"N."
    write(files, "crafted_memo_repeated_set_reduce.pkl.z", zlib.compress(many, 9), "budget")
    fb = b"\x80\x02cnumpy._core.numeric\n_frombuffer\n"
    write(files, "crafted_numpy_frombuffer_2p40.pkl",
          fb + b"(C\x08" + b"\x00" * 8 + dtype(b"f8") + b"(" + big + b"tX\x01\x00\x00\x00CtR.", "needs")
    joblib_wrapper = (b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(X\x08\x00\x00\x00subclasscnumpy\nndarray\n"
                      b"X\x05\x00\x00\x00shape(" + big + b"tX\x05\x00\x00\x00orderX\x01\x00\x00\x00C"
                      b"X\x05\x00\x00\x00dtype" + dtype(b"f8") + b"ub" + b"\x00" * 16 + b".")
    write(files, "crafted_joblib_shape_2p40.joblib", joblib_wrapper, "truncated input")

    # Refused pickle features.
    write(files, "crafted_persid.pkl", b"\x80\x02X\x01\x00\x00\x00xQ.", "persistent id")
    write(files, "crafted_persid_text.pkl", b"Pfoo\n.", "persistent id")
    write(files, "crafted_ext1.pkl", b"\x80\x02\x82\x01.", "extension registry")
    write(files, "crafted_next_buffer.pkl", b"\x80\x05\x97.", "out-of-band")
    write(files, "crafted_proto_6.pkl", b"\x80\x06N.", "protocol 6")
    write(files, "crafted_unknown_opcode.pkl", b"\x80\x02\xff.", "unknown opcode")
    write(files, "crafted_empty.pkl", b"", "truncated input")
    write(files, "crafted_stop_on_empty_stack.pkl", b"\x80\x02.", "stack underflow")
    write(files, "crafted_copyreg_object.pkl",
          b"\x80\x02ccopyreg\n_reconstructor\ncbuiltins\nobject\ncbuiltins\nobject\nN\x87R.", 'refused to call "builtins.object"')

    # Decompression bombs: each would expand past the cap (64 x input + 64 MiB).
    # (A zlib bomb must itself be ~70 KB to beat the default cap; hostile_corpus.rs builds
    # zlib and gzip bombs at test time instead of committing them.)
    write(files, "crafted_bomb_200mb.joblib.xz", lzma.compress(b"\x00" * (200 << 20), preset=9), "exceeds the limit")
    write(files, "crafted_truncated_stream.joblib.z", zlib.compress(pickle.dumps(list(range(5000)), 2))[:-10],
          "truncated file")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    files = {}
    model = fitted_model()
    for name, (obj, refused) in payloads().items():
        expect = spelled(refused, 5)
        for proto in (0, 2, 4, 5):
            write(files, "payload_%s.p%d.pkl" % (name, proto), pickle.dumps(obj, protocol=proto),
                  spelled(refused, proto))
        model.evil = obj
        write(files, "payload_%s_in_logreg.p4.pkl" % name, pickle.dumps(model, protocol=4), expect)
        write(files, "payload_%s_in_logreg.p2.pkl" % name, pickle.dumps(model, protocol=2), spelled(refused, 2))
        path = os.path.join(OUT, "payload_%s_in_logreg.joblib" % name)
        joblib.dump({"model": model, "coef": np.arange(4.0)}, path)
        files[os.path.basename(path)] = expect
        path = os.path.join(OUT, "payload_%s.joblib.z" % name)
        joblib.dump([np.arange(3.0), obj], path, compress=("zlib", 3))
        files[os.path.basename(path)] = expect
        del model.evil
    for module, name in [("os", "system"), ("nt", "system"), ("posix", "system")]:
        canary = "raw_%s_%s" % (module, name)
        write(files, "payload_raw_%s_%s.p0.pkl" % (module, name), raw_global_payload(module, name, canary),
              'refused to load "%s.%s"' % (module, name))
    crafted(files)
    with open(os.path.join(HERE, "expected_errors.json"), "w") as f:
        json.dump(files, f, indent=1, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes" % (len(files), total), file=sys.stderr)
    if "--verify" in sys.argv:
        verify(files)


def verify(files):
    """Loads every payload with Python's own pickle in a child process to prove it is live."""
    live = 0
    for name in sorted(files):
        if not name.startswith("payload_") or "nt_system" in name:
            continue
        for f in os.listdir("/tmp"):
            if f.startswith("ferroserve-canary-"):
                os.remove(os.path.join("/tmp", f))
        path = os.path.join(OUT, name)
        loader = "import joblib; joblib.load(%r)" if ".joblib" in name else "import pickle; pickle.load(open(%r, 'rb'))"
        subprocess.run([sys.executable, "-c", loader % path], capture_output=True, timeout=60)
        fired = [f for f in os.listdir("/tmp") if f.startswith("ferroserve-canary-")]
        for f in fired:
            os.remove(os.path.join("/tmp", f))
        if fired:
            live += 1
        else:
            print("payload did not fire: %s" % name, file=sys.stderr)
    print("%d payload files verified live" % live, file=sys.stderr)


if __name__ == "__main__":
    main()
