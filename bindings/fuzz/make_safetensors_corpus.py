#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors.c into bindings/fuzz/safetensors_corpus/.

Each seed is a small safetensors file (under 1 KiB) built here byte by byte with the standard
library only: valid files (every dtype Autograd holds, 0-d and empty tensors, metadata with
escapes and non-ASCII text, other dtypes of the format, ranks 8, 9 and 64, padding as the
reference writer pads) and near-valid ones (each a single lie or defect: offsets off by one, a
gap, an overlap, a size that does not match, a truncated file, bad JSON, duplicate keys, bad
numbers, lone surrogates, ...), so that fuzzing starts from both sides of every check.

Run it from anywhere: python3 bindings/fuzz/make_safetensors_corpus.py (it replaces the folder's
files with the ones below; the output is deterministic).
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "safetensors_corpus")


def file(header, data=b"", pad=True, length=None):
    """8-byte little-endian length, the header (str or bytes, padded with spaces to a multiple of 8
    when `pad`), the data. `length` overrides the written length (a header that lies)."""
    h = header.encode("utf-8") if isinstance(header, str) else header
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def header(tensors, metadata=None):
    """JSON of (name, dtype, shape, begin, end) tuples, in the order given."""
    d = {}
    if metadata is not None:
        d["__metadata__"] = metadata
    for name, dtype, shape, begin, end in tensors:
        d[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
f64 = lambda *v: struct.pack(f"<{len(v)}d", *v)
i64 = lambda *v: struct.pack(f"<{len(v)}q", *v)

SEEDS = {
    # Valid files.
    "valid-f32": file(header([("w", "F32", [2, 2], 0, 16)]), f32(1, -2, 0.5, 3e38)),
    "valid-all-dtypes": file(header([("a", "F32", [2], 0, 8), ("b", "F64", [], 8, 16), ("c", "I64", [2, 1], 16, 32),
                                     ("d", "BOOL", [3], 32, 35)]), f32(1, 2) + f64(0.25) + i64(-1, 2**62) + b"\x01\x00\x01"),
    "valid-metadata": file(header([("x", "F64", [1], 0, 8)], {"format": "pt", "q\"\\\n\t": "é😀", "": ""}), f64(7)),
    "valid-escaped-names": file('{"\\ud83d\\ude00\\/\\u00e9":{"dtype":"F32","shape":[],"data_offsets":[0,4]},'
                                '"tab\\tname":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}', f32(1)),
    "valid-empty-tensors": file(header([("e0", "F64", [0], 0, 0), ("a", "F32", [1], 0, 4), ("e1", "I64", [3, 0, 2], 4, 4),
                                        ("e2", "BOOL", [0], 4, 4)]), f32(5)),
    "valid-no-tensors": file("{}"),
    "valid-metadata-only": file(header([], {"k": "v"})),
    "valid-other-dtypes": file(header([("h", "F16", [2], 0, 4), ("bf", "BF16", [2], 4, 8), ("u8", "U8", [3], 8, 11),
                                       ("f4", "F4", [2], 11, 12), ("f8", "F8_E4M3", [1], 12, 13), ("c", "C64", [1], 13, 21)]),
                               bytes(range(21))),
    "valid-rank8": file(header([("r", "F32", [1] * 8, 0, 4)]), f32(9)),
    "valid-rank9": file(header([("r", "BOOL", [1] * 9, 0, 1), ("ok", "F32", [1], 1, 5)]), b"\x01" + f32(2)),
    "valid-rank64": file(header([("r", "I64", [1] * 64, 0, 8)]), i64(3)),
    "valid-unpadded-whitespace": file('\t{ "a" : { "dtype" : "F32" , "shape" : [ 1 ] , "data_offsets" : [ 0 , 4 ] } }\r\n '[1:],
                                      f32(1), pad=False),
    "valid-offsets-shuffled": file(header([("b", "F32", [1], 4, 8), ("a", "F32", [1], 0, 4), ("c", "I64", [1], 8, 16)]),
                                   f32(1, 2) + i64(3)),
    # Near-valid: one defect each.
    "bad-truncated-length": b"\x10\x00\x00",
    "bad-length-past-end": file(header([("a", "F32", [1], 0, 4)]), f32(1), length=500),
    "bad-length-huge": struct.pack("<Q", 100_000_001) + b"{}",
    "bad-data-missing-byte": file(header([("a", "F32", [2], 0, 8)]), f32(1)[:4] + b"\x00\x00\x00"),
    "bad-trailing-data": file(header([("a", "F32", [1], 0, 4)]), f32(1) + b"\x00"),
    "bad-gap": file(header([("a", "F32", [1], 0, 4), ("b", "F32", [1], 8, 12)]), f32(1, 2, 3)),
    "bad-overlap": file(header([("a", "F32", [2], 0, 8), ("b", "F32", [2], 4, 12)]), f32(1, 2, 3)),
    "bad-size-mismatch": file(header([("a", "F64", [2], 0, 8)]), f64(1)),
    "bad-end-before-begin": file(header([("a", "F32", [0], 4, 0)]), f32(1)),
    "bad-shape-overflow": file(header([("a", "F32", [4294967296, 4294967296], 0, 4)]), f32(1)),
    "bad-bool-byte": file(header([("m", "BOOL", [2], 0, 2)]), b"\x01\x02"),
    "bad-unknown-dtype": file(header([("a", "F33", [1], 0, 4)]), f32(1)),
    "bad-duplicate-key": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                              '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)),
    "bad-negative-extent": file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', f32(1)),
    "bad-fraction": file('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4e0]}}', f32(1)),
    "bad-int64-overflow": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551620]}}', f32(1)),
    "bad-rank65": file(header([("r", "F32", [1] * 65, 0, 4)]), f32(1)),
    "bad-metadata-number": file('{"__metadata__":{"k":1}}'),
    "bad-lone-surrogate": file('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)),
    "bad-invalid-utf8": file(b'{"\xc3(":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)),
    "bad-trailing-garbage": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}x', f32(1), pad=False),
    "bad-unknown-key": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[]}}', f32(1)),
    "bad-unterminated": file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]', f32(1), pad=False),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        os.remove(os.path.join(OUT, old))
    for name, data in SEEDS.items():
        assert len(data) < 1024, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
