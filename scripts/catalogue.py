#!/usr/bin/env python3
"""The C catalogue: include/autograd.h is the one table of the C API, and this script holds the
bindings to it.

The header is written by hand and documents every function; this script reads every prototype
in it (name, result, parameters, the section it is declared in) and checks:

  1. Swift shims: every declared function has exactly one `@_cdecl("ag_name")` function in
     Sources/AutogradC, named as the symbol, with as many parameters, each of the Swift type its C
     type imports as (C_SCALARS and swift_type below: pointers are Optional, since C may pass
     NULL; `const T *` is UnsafePointer, `T *` UnsafeMutablePointer; a `bool` argument is UInt8,
     which reads any byte a C or FFI caller passes without undefined behaviour; a callback
     typealias matches the header's function-pointer type parameter by parameter). Every
     `@_cdecl("ag_...")` is declared in the header.
  2. Files mirror the header's sections: a shim lives in the file SECTION_FILES gives for the
     header section that declares it. Files without `ag_` shims (HandleTable.swift, Status.swift,
     Arguments.swift, ForkSafety.swift) are helpers and are not checked.
  3. Python: bindings/python/libautograd/_prototypes.py (the ctypes restype and argtypes of every
     function) is exactly what `--write` generates from the header, and every `lib.ag_*` the
     package calls is declared in the header.

Usage:
  python3 scripts/catalogue.py           check; exit 1 naming each function and what differs
  python3 scripts/catalogue.py --write   regenerate bindings/python/libautograd/_prototypes.py
  python3 scripts/catalogue.py --list    print the catalogue: section, file, C prototype

scripts/check-exports.sh runs the check (CI runs that script).
"""

import argparse
import ctypes
import os
import re
import sys
from dataclasses import dataclass, field
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "include", "autograd.h")
SHIMS = os.path.join(ROOT, "Sources", "AutogradC")
PY_PACKAGE = os.path.join(ROOT, "bindings", "python", "libautograd")
PY_PROTOTYPES = os.path.join(PY_PACKAGE, "_prototypes.py")

# Header section -> the Swift file in Sources/AutogradC holding the shims of its functions.
# A key names the section by the start of its banner's title (case-insensitive), so a title may
# go on ("Training: initialisers and optimizers"). A new section with functions needs a line
# here; a line whose section is not in the header (yet) is fine.
SECTION_FILES = {
    "Versions, status codes, types": "LibraryAPI.swift",
    "Creating, inspecting and freeing tensors": "TensorAPI.swift",
    "Operations": "OperationsAPI.swift",
    "Backward": "BackwardAPI.swift",
    "Grad mode, detach, hooks": "GradModeAPI.swift",
    "Gradient checking and graph pictures": "GraphAPI.swift",
    "Function transforms": "TransformsAPI.swift",
    "Training": "TrainingAPI.swift",
    "Reusable graphs": "ReusableGraphsAPI.swift",
    "User-defined ops": "CustomOpAPI.swift",
    "Integer tensors, masks and random generators": "IntegerAPI.swift",
    "Convolution and pooling": "ConvolutionAPI.swift",
    "Normalisation, attention and training helpers": "NormalizationAPI.swift",
    "Files: safetensors": "SafetensorsAPI.swift",
    "Checkpoints": "CheckpointAPI.swift",
    "Shared memory": "SharedMemoryAPI.swift",
}

# C scalar types: (Swift type, ctypes type). Header typedefs (ag_tensor, ag_status, ...) resolve
# to these through the header's own `typedef` lines.
C_SCALARS = {
    "void": ("Void", "None"),
    "bool": ("Bool", "c_bool"),
    "char": ("CChar", "c_char"),
    "int": ("Int32", "c_int"),
    "float": ("Float", "c_float"),
    "double": ("Double", "c_double"),
    "int32_t": ("Int32", "c_int32"),
    "int64_t": ("Int64", "c_int64"),
    "uint32_t": ("UInt32", "c_uint32"),
    "uint64_t": ("UInt64", "c_uint64"),
    "size_t": ("Int", "c_size_t"),
}
# Structures the header declares (typedef struct) that functions take or give by pointer only,
# and the ctypes type of a pointer to one: struct name -> (Swift type, ctypes type of `T *`). The
# Swift side imports the same declaration (Sources/CKernels/include/dlpack_abi.h, kept
# identical to the header's block by check_dlpack_copy). A structure used by value, or one not
# listed here, is refused.
C_STRUCTS = {
    "DLManagedTensorVersioned": ("DLManagedTensorVersioned", "c_void_p"),
    "DLManagedTensor": ("DLManagedTensor", "c_void_p"),
}
# The header block declared twice (the public header, the Swift side's C header): the lines from
# its first line to its last must be identical in both files.
DLPACK_COPY = os.path.join(ROOT, "Sources", "CKernels", "include", "dlpack_abi.h")
DLPACK_BLOCK = ("#ifndef DLPACK_DLPACK_H_", "#endif /* DLPACK_DLPACK_H_ */")
# Swift spellings that name the same type.
SWIFT_SYNONYMS = {"Int8": "CChar", "()": "Void", "CInt": "Int32", "CDouble": "Double", "CBool": "Bool"}


class CatalogueError(Exception):
    """A header or source text this script cannot read (not a mismatch: a bug to fix here)."""


# ---------------------------------------------------------------------------------------------
# The header
# ---------------------------------------------------------------------------------------------


@dataclass
class CType:
    """A C type: a scalar or typedef name with `pointers` levels of '*' (const flags of the
    pointees, innermost first), or a function pointer (`function` set)."""
    base: str = ""
    base_const: bool = False
    pointers: List[bool] = field(default_factory=list)  # pointers[i]: is level i's pointee const
    function: Optional["CFunction"] = None

    def text(self, name=""):
        """The C spelling, declaring `name` if given."""
        if self.function:
            return f"{self.function.result.text()} (*{name})({self.function.params_text()})"
        out = ("const " if self.base_const else "") + self.base
        for i, const in enumerate(self.pointers):
            out += (" const" if i and const else "") + (" *" if i == 0 else "*")
        return out + (name if self.pointers else f" {name}" if name else "")


@dataclass
class CParam:
    name: str
    ctype: CType


@dataclass
class CFunction:
    name: str
    result: CType
    params: List[CParam]
    section: str = ""
    subsection: str = ""
    line: int = 0

    def params_text(self):
        return ", ".join(p.ctype.text(p.name) for p in self.params) or "void"


@dataclass
class Header:
    functions: List[CFunction]  # in header order
    scalar_typedefs: dict  # name -> CType (ag_tensor -> uint64_t)
    function_typedefs: dict  # name -> CFunction (ag_grad_hook -> its signature)
    aggregates: dict = field(default_factory=dict)  # typedef struct / enum name -> "struct" or "enum"

    def resolve(self, ctype):
        """ctype with header scalar typedefs replaced by what they name (pointers kept)."""
        seen = 0
        while ctype.function is None and ctype.base in self.scalar_typedefs:
            target = self.scalar_typedefs[ctype.base]
            ctype = CType(target.base, ctype.base_const or target.base_const, target.pointers + ctype.pointers,
                          target.function)
            seen += 1
            if seen > 20:
                raise CatalogueError(f"typedef cycle at {ctype.base}")
        return ctype


def _blank_comments(text):
    """(text with every comment replaced by spaces, newlines kept; [(start, end, body)])."""
    comments, out, i = [], [], 0
    for m in re.finditer(r"/\*.*?\*/|//[^\n]*", text, flags=re.S):
        out.append(text[i:m.start()])
        out.append(re.sub(r"[^\n]", " ", m.group(0)))
        body = m.group(0)[2:-2] if m.group(0).startswith("/*") else m.group(0)[2:]
        comments.append((m.start(), m.end(), body))
        i = m.end()
    out.append(text[i:])
    return "".join(out), comments


def _sections(comments):
    """[(offset, title, is_subsection)]: banners are a comment of dashes, title comments, a comment
    of dashes; subsections are one comment "---- title ----"."""
    marks, i = [], 0
    rule = re.compile(r"^\s*-{10,}\s*$")
    while i < len(comments):
        body = comments[i][2]
        if rule.match(body):
            j = i + 1
            while j < len(comments) and not rule.match(comments[j][2]) and "\n" not in comments[j][2]:
                j += 1
            if j < len(comments) and rule.match(comments[j][2]) and j > i + 1:
                title = " ".join(" ".join(c[2].split()) for c in comments[i + 1:j])
                marks.append((comments[j][1], title, False))
                i = j + 1
                continue
        m = re.match(r"^\s*-{3,}\s*(.*?)\s*-{3,}\s*$", body)
        if m and m.group(1):
            marks.append((comments[i][1], m.group(1), True))
        i += 1
    return marks


def _split_top(text, sep=","):
    """text split at `sep` outside (), [], {} and <>."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def _c_declarator(text, where):
    """(name, CType) of one C declaration `type name`, `type *name` or `R (*name)(params)`."""
    text = " ".join(text.split())
    m = re.match(r"^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$", text)
    if m:
        result = _c_type(m.group(1), where)
        params = _c_params(m.group(3), where)
        return m.group(2), CType(function=CFunction(m.group(2), result, params))
    m = re.match(r"^(.*?[\s*])(\w+)$", text)
    if not m or m.group(2) == "const" or not re.search(r"\w", m.group(1).replace("const", "")):
        raise CatalogueError(f"{where}: cannot read the declaration '{text}' (is a parameter unnamed?)")
    return m.group(2), _c_type(m.group(1), where)


def _c_type(text, where):
    """The CType of a type written without a name: `const int64_t *`, `ag_status`, `const void **`."""
    tokens = re.findall(r"\*|\w+", text)
    base, base_const, pointers, pending_const = None, False, [], False
    for tok in tokens:
        if tok == "*":
            if base is None:
                raise CatalogueError(f"{where}: '*' before a type in '{text}'")
            # Level i points at the base (i = 0) or at the pointer of level i - 1, which is
            # const when a `const` followed that level's '*'.
            pointers.append(base_const if not pointers else pending_const)
            pending_const = False
        elif tok == "const":
            if pointers:
                pending_const = True  # `T * const`: only a further level can see it
            else:
                base_const = True
        elif base is None:
            base = tok
        else:
            raise CatalogueError(f"{where}: cannot read the type '{text}'")
    if base is None:
        raise CatalogueError(f"{where}: no type in '{text}'")
    return CType(base, base_const, pointers)


def _c_params(text, where):
    text = text.strip()
    if text in ("", "void"):
        return []
    params = []
    for k, part in enumerate(_split_top(text)):
        name, ctype = _c_declarator(part, f"{where}, parameter {k + 1}")
        params.append(CParam(name, ctype))
    return params


def read_header(path=HEADER):
    """Every function prototype and typedef of the header, each function with its section."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    code, comments = _blank_comments(raw)
    marks = _sections(comments)
    # Drop preprocessor lines and the C++ guard (its extern "C" { ... } lines).
    lines, skipping = [], False
    for line in code.split("\n"):
        s = line.strip()
        if s.startswith("#ifdef __cplusplus"):
            skipping = True
        if skipping or s.startswith("#"):
            if s.startswith("#endif"):
                skipping = False
            lines.append(" " * len(line))
        else:
            lines.append(line)
    code = "\n".join(lines)

    header = Header([], {}, {}, {})
    start, depth = 0, 0
    for i, ch in enumerate(code):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch != ";" or depth:
            continue
        stmt, offset = code[start:i], start
        start = i + 1
        lead = len(stmt) - len(stmt.lstrip())
        stmt = " ".join(stmt.split())
        if not stmt or stmt.startswith("enum"):
            continue
        line = raw.count("\n", 0, offset + lead) + 1
        where = f"{os.path.relpath(path, ROOT)}:{line}"
        m = re.match(r"^typedef (struct|enum)\b[^{]*\{.*\}\s*(\w+)$", stmt)
        if m:  # a structure or enumeration: only its name matters here (see C_STRUCTS)
            header.aggregates[m.group(2)] = m.group(1)
            continue
        if stmt.startswith("typedef "):
            name, ctype = _c_declarator(stmt[len("typedef "):], where)
            if ctype.function:
                header.function_typedefs[name] = ctype.function
            else:
                header.scalar_typedefs[name] = ctype
            continue
        m = re.match(r"^(.*?)\b(ag_\w+)\s*\((.*)\)$", stmt)
        if not m:
            raise CatalogueError(f"{where}: cannot read the declaration '{stmt}'")
        fn = CFunction(m.group(2), _c_type(m.group(1), where), _c_params(m.group(3), f"{where} ({m.group(2)})"),
                       line=line)
        for off, title, sub in marks:
            if off > offset + lead:
                break
            if sub:
                fn.subsection = title
            else:
                fn.section, fn.subsection = title, ""
        header.functions.append(fn)
    return header


def short_title(title):
    """A section's title up to its first sentence's end ("Operations", not its whole banner)."""
    return title.split(". ")[0].rstrip(".")


def section_file(title):
    """The SECTION_FILES value whose key starts title (case-insensitive), or None."""
    found = [f for key, f in SECTION_FILES.items()
             if re.match(re.escape(key) + r"(?![A-Za-z0-9])", title, flags=re.I)]
    if len(found) > 1:
        raise CatalogueError(f"section '{title}' matches several SECTION_FILES keys")
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# Swift: what a C type imports as, and what the shims declare
# ---------------------------------------------------------------------------------------------


def swift_type(header, ctype, position):
    """The Swift spelling a shim must use for ctype. position: "param" (an argument of an
    exported function or a callback), "result", or "pointee" (inside a pointer)."""
    if ctype.function is None and ctype.base in header.function_typedefs and not ctype.pointers:
        ctype = CType(function=header.function_typedefs[ctype.base])
    if ctype.function:
        fn = ctype.function
        params = ",".join(swift_type(header, p.ctype, "param") for p in fn.params)
        inner = f"@convention(c)({params})->{swift_type(header, fn.result, 'result')}"
        return inner + ("?" if position != "result" else "")
    ctype = header.resolve(ctype)
    if ctype.base in header.aggregates or ctype.base in C_STRUCTS:
        if ctype.base not in C_STRUCTS or header.aggregates.get(ctype.base) != "struct":
            raise CatalogueError(f"the C type '{ctype.base}' is not a structure listed in C_STRUCTS "
                                 f"(scripts/catalogue.py)")
        if not ctype.pointers:
            if position != "pointee":
                raise CatalogueError(f"the structure '{ctype.base}' is passed by value; only pointers to it are "
                                     f"supported")
            return C_STRUCTS[ctype.base][0]
    elif ctype.base not in C_SCALARS:
        raise CatalogueError(f"unknown C type '{ctype.base}': add it to C_SCALARS in scripts/catalogue.py")
    if not ctype.pointers:
        if ctype.base == "bool" and position == "param":
            return "UInt8"
        return C_SCALARS[ctype.base][0]
    # Innermost level first: void * is raw; each further level points at an Optional pointer.
    if ctype.base == "void":
        out = "UnsafeRawPointer" if ctype.pointers[0] else "UnsafeMutableRawPointer"
    else:
        pointee = swift_type(header, CType(ctype.base), "pointee")
        out = f"{'UnsafePointer' if ctype.pointers[0] else 'UnsafeMutablePointer'}<{pointee}>"
    for const in ctype.pointers[1:]:
        out = f"{'UnsafePointer' if const else 'UnsafeMutablePointer'}<{out}?>"
    return out + ("" if position == "result" else "?")  # a result may promise non-NULL


@dataclass
class Shim:
    name: str  # the @_cdecl symbol
    func: str  # the Swift function's name
    params: List[str]  # Swift types as written
    result: str
    path: str
    line: int


def _swift_strip_comments(text):
    """Swift text with comments blanked (string literals kept; good enough for declarations)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_swift(directory=SHIMS):
    """([Shim], {typealias: Swift type}) from every .swift file of directory."""
    shims, aliases = [], {}
    for fname in sorted(os.listdir(directory)):
        if not fname.endswith(".swift"):
            continue
        path = os.path.join(directory, fname)
        with open(path, encoding="utf-8") as f:
            text = _swift_strip_comments(f.read())
        for m in re.finditer(r"\btypealias\s+(\w+)\s*=\s*([^\n]+)", text):
            aliases[m.group(1)] = m.group(2).strip()
        for m in re.finditer(r'@_cdecl\(\s*"([^"]+)"\s*\)', text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{os.path.relpath(path, ROOT)}:{line}"
            f = re.compile(r"\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|internal|private|fileprivate|@inline\(\w+\))\s+)*"
                           r"func\s+(\w+)\s*\(").match(text, m.end())
            if not f:
                raise CatalogueError(f"{where}: @_cdecl(\"{m.group(1)}\") is not followed by a func")
            i, depth = f.end(), 1
            while depth:
                if i >= len(text):
                    raise CatalogueError(f"{where}: unbalanced parentheses in {m.group(1)}")
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            params = []
            for part in _split_top(text[f.end():i - 1]):
                _, colon, typ = part.partition(":")
                if not colon:
                    raise CatalogueError(f"{where}: cannot read the parameter '{part}' of {m.group(1)}")
                params.append(_split_top(typ, "=")[0].strip())
            r = re.compile(r"\s*(?:throws\s*)?(?:->\s*([^{]+?))?\s*\{").match(text, i)
            if not r:
                raise CatalogueError(f"{where}: cannot read the result type of {m.group(1)}")
            shims.append(Shim(m.group(1), f.group(1), params, (r.group(1) or "Void").strip(), path, line))
    return shims, aliases


def canonical_swift(text, aliases, depth=0):
    """A Swift type as one spacing-free string with typealiases and synonyms replaced."""
    if depth > 20:
        raise CatalogueError(f"typealias cycle at {text}")
    t = "".join(text.split())
    if t.endswith("?") or t.endswith("!"):
        return canonical_swift(t[:-1], aliases, depth + 1) + "?"
    if t.startswith("(") and t.endswith(")") and _split_top(t[1:-1]) == [t[1:-1]] and "->" not in t:
        inner = t[1:-1]
        return canonical_swift(inner, aliases, depth + 1) if inner else "Void"
    m = re.match(r"^(@convention\(c\))?\((.*)\)->(.+)$", t)
    if m and _balanced(m.group(2)):
        params = ",".join(canonical_swift(p, aliases, depth + 1) for p in _split_top(m.group(2)))
        return f"{m.group(1) or ''}({params})->{canonical_swift(m.group(3), aliases, depth + 1)}"
    m = re.match(r"^([\w.]+)<(.*)>$", t)
    if m:
        args = ",".join(canonical_swift(a, aliases, depth + 1) for a in _split_top(m.group(2)))
        return f"{m.group(1).removeprefix('Swift.')}<{args}>"
    t = t.removeprefix("Swift.")
    if t in aliases:
        return canonical_swift(aliases[t], aliases, depth + 1)
    return SWIFT_SYNONYMS.get(t, t)


def _balanced(text):
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def check_swift(header, shims, aliases):
    """Problems between the header's functions and the @_cdecl shims (types, count, file)."""
    problems = []
    declared = {fn.name: fn for fn in header.functions}
    by_name = {}
    for shim in shims:
        if shim.name.startswith("ag_"):
            by_name.setdefault(shim.name, []).append(shim)
    for shim in shims:
        rel = os.path.relpath(shim.path, ROOT)
        if shim.name.startswith("ag_") and shim.name not in declared:
            problems.append(f"{shim.name}: @_cdecl shim at {rel}:{shim.line} is not declared in include/autograd.h")
    for fn in header.functions:
        found = by_name.get(fn.name, [])
        if not found:
            problems.append(f"{fn.name}: declared at include/autograd.h:{fn.line} but no @_cdecl(\"{fn.name}\") "
                            f"shim in Sources/AutogradC")
            continue
        if len(found) > 1:
            places = ", ".join(f"{os.path.relpath(s.path, ROOT)}:{s.line}" for s in found)
            problems.append(f"{fn.name}: {len(found)} @_cdecl shims ({places}); there must be one")
            continue
        shim = found[0]
        rel = f"{os.path.relpath(shim.path, ROOT)}:{shim.line}"
        if shim.func != fn.name:
            problems.append(f"{fn.name}: the shim at {rel} is a Swift func named '{shim.func}'; name it as its symbol")
        if len(shim.params) != len(fn.params):
            problems.append(f"{fn.name}: the shim at {rel} has {len(shim.params)} parameters, the header "
                            f"{len(fn.params)} ({fn.params_text()})")
        else:
            for k, (p, written) in enumerate(zip(fn.params, shim.params)):
                want = swift_type(header, p.ctype, "param")
                got = canonical_swift(written, aliases)
                if got != want:
                    why = ""
                    if want.endswith("?") and not got.endswith("?"):
                        why = "; a pointer or callback parameter is Optional, since C may pass NULL"
                    elif want == "UInt8" and got == "Bool":
                        why = "; a C bool argument is taken as UInt8, so any byte a caller passes is read safely"
                    problems.append(f"{fn.name}: parameter {k + 1} '{p.name}' is {p.ctype.text()} in the header, "
                                    f"so the shim at {rel} must take {want}, not {written}"
                                    + (f" (= {got})" if got != "".join(written.split()) else "") + why)
        want = swift_type(header, fn.result, "result")
        got = canonical_swift(shim.result, aliases)
        if got != want and got != want + "?":
            problems.append(f"{fn.name}: the result is {fn.result.text()} in the header, so the shim at {rel} "
                            f"must return {want}, not {shim.result}")
        # 2. the file of its section
        expected = section_file(fn.section)
        if expected is None:
            problems.append(f"{fn.name}: its header section '{short_title(fn.section)}' has no file in SECTION_FILES "
                            f"(scripts/catalogue.py); add the section there")
        elif os.path.basename(shim.path) != expected:
            problems.append(f"{fn.name}: the shim is in {os.path.basename(shim.path)}, but the header declares it "
                            f"under '{short_title(fn.section)}', whose shims live in Sources/AutogradC/{expected} "
                            f"(SECTION_FILES in scripts/catalogue.py)")
    return problems


# ---------------------------------------------------------------------------------------------
# Python: the generated ctypes prototypes
# ---------------------------------------------------------------------------------------------


def _py_type(header, ctype, names, context):
    """The ctypes expression for ctype (header typedef names kept, as the generated module
    defines them). names: {function-type text: generated name} for inline function pointers."""
    if ctype.function:
        text = ctype.text()
        if text not in names:
            raise CatalogueError(f"{context}: an inline function-pointer type was not named")
        return names[text]
    if ctype.function is None and not ctype.pointers and (ctype.base in header.scalar_typedefs
                                                          or ctype.base in header.function_typedefs):
        return ctype.base
    if not ctype.pointers:
        if ctype.base not in C_SCALARS:
            raise CatalogueError(f"{context}: unknown C type '{ctype.base}': add it to C_SCALARS")
        return C_SCALARS[ctype.base][1]
    resolved = header.resolve(CType(ctype.base))
    if resolved.base in C_STRUCTS and not resolved.pointers and header.aggregates.get(resolved.base) == "struct":
        out = C_STRUCTS[resolved.base][1]
        for _ in ctype.pointers[1:]:
            out = f"POINTER({out})"
        return out
    if resolved.base in ("void", "char") and not resolved.pointers and len(ctype.pointers) >= 1:
        if resolved.base == "void":
            out, rest = "c_void_p", ctype.pointers[1:]
        elif ctype.pointers[0]:  # const char *: a string the library gives or reads
            out, rest = "c_char_p", ctype.pointers[1:]
        else:  # char *: a buffer the library writes
            out, rest = "POINTER(c_char)", ctype.pointers[1:]
    else:
        out, rest = f"POINTER({_py_type(header, CType(ctype.base), names, context)})", ctype.pointers[1:]
    for _ in rest:
        out = f"POINTER({out})"
    return out


def _wrap(prefix, items, suffix, indent, width=100):
    """`prefix item, item, ...suffix` on lines of at most width characters."""
    line, lines = prefix, []
    for k, item in enumerate(items):
        piece = item + (", " if k + 1 < len(items) else "")
        if len(line) + len(piece.rstrip()) + (len(suffix) if k + 1 == len(items) else 0) > width and \
                line.strip() != prefix.strip():
            lines.append(line.rstrip())
            line = " " * indent
        line += piece
    lines.append(line + suffix)
    return "\n".join(lines)


def generate_python(header):
    """The text of bindings/python/libautograd/_prototypes.py."""
    # Inline function-pointer parameters (`void (*destroy)(void *user_data)`) get a type named
    # after the parameter: destroy_fn.
    inline, inline_fns = {}, {}  # C text of the type -> name; name -> (CFunction, parameter name)
    for fn in header.functions:
        for p in fn.params:
            if not p.ctype.function:
                continue
            text, name = p.ctype.text(), f"{p.name}_fn"
            if text in inline:
                continue
            if name in inline_fns:
                raise CatalogueError(f"{fn.name}: parameter '{p.name}' is a function-pointer type other than another "
                                     f"parameter '{p.name}'; give them typedefs in the header")
            inline[text], inline_fns[name] = name, (p.ctype.function, p.name)
    out = [
        '"""The ctypes prototype (restype, argtypes) of every function of include/autograd.h.',
        "",
        "Generated by scripts/catalogue.py from the header: do not edit. After changing the header,",
        "run `python3 scripts/catalogue.py --write`; scripts/check-exports.sh fails while this file is",
        'stale. Names are the header\'s: its typedefs are defined here as the ctypes types they name."""',
        "",
        "IMPORTS",
        "",
        "# Header typedefs",
    ]
    for name, ctype in header.scalar_typedefs.items():
        out.append(f"{name} = {_py_type(header, ctype, inline, name)}")
    for name, fn in header.function_typedefs.items():
        args = [_py_type(header, p.ctype, inline, name) for p in fn.params]
        out.append(f"# typedef {CType(function=fn).text(name)};")
        out.append(_wrap(f"{name} = CFUNCTYPE(", [_py_type(header, fn.result, inline, name)] + args, ")",
                         len(name) + 13))
    for name, (fn, param) in inline_fns.items():
        users = ", ".join(f.name for f in header.functions
                          if any(p.name == param and p.ctype.function for p in f.params))
        out.append(f"# {CType(function=fn).text(param)}, the type of parameter '{param}' of {users}")
        args = [_py_type(header, p.ctype, inline, name) for p in fn.params]
        out.append(_wrap(f"{name} = CFUNCTYPE(", [_py_type(header, fn.result, inline, name)] + args, ")",
                         len(name) + 13))
    out += ["", "# name: (restype, argtypes), in the header's order", "PROTOTYPES = {"]
    section = subsection = None
    for fn in header.functions:
        if fn.section != section:
            section, subsection = fn.section, None
            out.append(f"    # {short_title(fn.section)}")
        if fn.subsection and fn.subsection != subsection:
            subsection = fn.subsection
            out.append(f"    # ---- {short_title(fn.subsection)}")
        args = [_py_type(header, p.ctype, inline, fn.name) for p in fn.params]
        prefix = f'    "{fn.name}": ({_py_type(header, fn.result, inline, fn.name)}, ['
        out.append(_wrap(prefix, args, "]),", len(prefix)))
    out.append("}")
    text = "\n".join(out) + "\n"
    used = sorted(set(re.findall(r"\b(CFUNCTYPE|POINTER|c_\w+)\b", text)), key=lambda n: (n[0] != "C", n[0] != "P", n))
    return text.replace("IMPORTS", _wrap("from ctypes import ", used, "", 4, width=100).replace(",\n", ", \\\n"), 1)


def _render(t):
    """A ctypes type as text, for messages (c_uint64 rather than its alias c_ulong)."""
    names = {ctypes.c_uint64: "c_uint64", ctypes.c_int64: "c_int64", ctypes.c_int32: "c_int32",
             ctypes.c_uint32: "c_uint32", ctypes.c_double: "c_double", ctypes.c_float: "c_float",
             ctypes.c_bool: "c_bool", ctypes.c_char: "c_char", ctypes.c_char_p: "c_char_p",
             ctypes.c_void_p: "c_void_p"}
    if t is None:
        return "None"
    if t in names:
        return names[t]
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):
        return f"POINTER({_render(t._type_)})"
    if isinstance(t, type) and issubclass(t, ctypes._CFuncPtr):
        return f"CFUNCTYPE({', '.join(_render(a) for a in (t._restype_,) + tuple(t._argtypes_))})"
    return getattr(t, "__name__", repr(t))


def _load_prototypes(text, path):
    scope = {}
    exec(compile(text, path, "exec"), scope)  # our own generated file: ctypes only
    return scope.get("PROTOTYPES")


def check_python(header, have_text=None):
    """Problems of the generated prototypes (have_text: the file's text, read if None) and of
    the package's calls."""
    problems = []
    want_text = generate_python(header)
    rel = os.path.relpath(PY_PROTOTYPES, ROOT)
    if have_text is None:
        if not os.path.isfile(PY_PROTOTYPES):
            return [f"{rel} is missing: run python3 scripts/catalogue.py --write"]
        with open(PY_PROTOTYPES, encoding="utf-8") as f:
            have_text = f.read()
    if have_text != want_text:
        want = _load_prototypes(want_text, "<generated>")
        try:
            have = _load_prototypes(have_text, PY_PROTOTYPES)
        except Exception as exc:  # a hand edit that broke the module
            have, problems = None, [f"{rel} does not load: {exc}"]
        if isinstance(have, dict):
            for name, (restype, argtypes) in want.items():
                if name not in have:
                    problems.append(f"{name}: declared in the header but has no prototype in {rel}")
                    continue
                h_res, h_args = have[name]
                if len(h_args) != len(argtypes):
                    problems.append(f"{name}: {rel} gives {len(h_args)} argtypes, the header has {len(argtypes)} "
                                    f"parameters")
                for k, (a, b) in enumerate(zip(h_args, argtypes)):
                    if _render(a) != _render(b):
                        problems.append(f"{name}: argtype {k + 1} is {_render(a)} in {rel}, the header needs "
                                        f"{_render(b)}")
                if _render(h_res) != _render(restype):
                    problems.append(f"{name}: restype is {_render(h_res)} in {rel}, the header needs {_render(restype)}")
            for name in have:
                if name not in want:
                    problems.append(f"{name}: has a prototype in {rel} but is not declared in the header")
        elif have is not None:
            problems.append(f"{rel} defines no PROTOTYPES dict")
        problems.append(f"{rel} is not what the header generates (stale or edited by hand): "
                        f"run python3 scripts/catalogue.py --write")
    # Every C function the package calls is declared (the compiled extension, _native.c, names
    # the functions it is given as string literals: "ag_add").
    declared = {fn.name for fn in header.functions}
    for fname in sorted(os.listdir(PY_PACKAGE)):
        if not fname.endswith((".py", ".c")) or fname == "_prototypes.py":
            continue
        pattern = (r"\"(ag_\w+)\"()" if fname.endswith(".c") else
                   r"\blib\.(ag_\w+)|getattr\(\s*lib\s*,\s*[\"'](ag_\w+)")
        with open(os.path.join(PY_PACKAGE, fname), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                for name in re.findall(pattern, line):
                    name = name[0] or name[1]
                    if name not in declared:
                        problems.append(f"{name}: called at bindings/python/libautograd/{fname}:{n} but not "
                                        f"declared in include/autograd.h")
    return problems


# ---------------------------------------------------------------------------------------------


def dlpack_block(text, where):
    """The lines of DLPACK_BLOCK in text (first to last line, inclusive)."""
    lines = text.split("\n")
    try:
        a = next(i for i, l in enumerate(lines) if l.strip() == DLPACK_BLOCK[0])
        b = next(i for i, l in enumerate(lines) if i > a and l.strip() == DLPACK_BLOCK[1])
    except StopIteration:
        raise CatalogueError(f"{where}: no '{DLPACK_BLOCK[0]}' ... '{DLPACK_BLOCK[1]}' block")
    return lines[a:b + 1]


def check_dlpack_copy(public_text=None, copy_text=None):
    """Problems between the DLPack block of include/autograd.h and its copy for Swift."""
    if public_text is None:
        with open(HEADER, encoding="utf-8") as f:
            public_text = f.read()
    if copy_text is None:
        with open(DLPACK_COPY, encoding="utf-8") as f:
            copy_text = f.read()
    rel_h, rel_c = os.path.relpath(HEADER, ROOT), os.path.relpath(DLPACK_COPY, ROOT)
    a, b = dlpack_block(public_text, rel_h), dlpack_block(copy_text, rel_c)
    if a == b:
        return []
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return [f"the DLPack declarations differ between {rel_h} and {rel_c} at line {k + 1} of the block "
            f"({(a[k] if k < len(a) else '<end>')!r} vs {(b[k] if k < len(b) else '<end>')!r}): "
            f"keep them identical (the Swift shims read the copy)"]


def self_test(header, shims, aliases):
    """Breaks a copy of the (passing) catalogue in each way the check is there to catch and
    returns the ways it failed to notice ([] when it caught them all)."""
    import copy
    missed = []

    def expect(what, problems, needle):
        if not any(needle in p for p in problems):
            missed.append(f"{what}: no problem mentioning '{needle}' among {problems[:3]}")

    ops = [s for s in shims if s.name.startswith("ag_") and any(canonical_swift(p, aliases) == "Int64" for p in s.params)]
    victim = ops[0]
    k = next(i for i, p in enumerate(victim.params) if canonical_swift(p, aliases) == "Int64")
    broken = copy.deepcopy(shims)
    next(s for s in broken if s.name == victim.name).params[k] = "Int32"
    expect(f"{victim.name} parameter {k + 1} as Int32", check_swift(header, broken, aliases),
           f"{victim.name}: parameter {k + 1}")

    pointer = next(s for s in shims if s.name.startswith("ag_") and any(p.endswith(">?") for p in s.params))
    k = next(i for i, p in enumerate(pointer.params) if p.endswith(">?"))
    broken = copy.deepcopy(shims)
    next(s for s in broken if s.name == pointer.name).params[k] = pointer.params[k][:-1]
    expect(f"{pointer.name} parameter {k + 1} not Optional", check_swift(header, broken, aliases),
           f"{pointer.name}: parameter {k + 1}")

    broken = copy.deepcopy(shims)
    moved = next(s for s in broken if s.name.startswith("ag_"))
    other = next(f for f in sorted(set(SECTION_FILES.values())) if f != os.path.basename(moved.path))
    moved.path = os.path.join(SHIMS, other)
    expect(f"{moved.name} moved to {other}", check_swift(header, broken, aliases), f"{moved.name}: the shim is in {other}")

    broken = copy.deepcopy(shims)
    broken.append(Shim("ag_not_in_the_header", "ag_not_in_the_header", [], "Int32", moved.path, 1))
    broken.append(copy.deepcopy(shims[-1]))
    problems = check_swift(header, broken, aliases)
    expect("an undeclared shim", problems, "ag_not_in_the_header: @_cdecl shim")
    expect("a second shim", problems, "@_cdecl shims (")

    text = generate_python(header)
    # A function whose prototype is one line, so deleting that line leaves valid Python.
    one_line = [f.name for f in header.functions
                if any(f'"{f.name}":' in l and l.rstrip().endswith("]),") for l in text.splitlines())]
    name = one_line[len(one_line) // 2]
    expect(f"the Python prototype of {name} deleted",
           check_python(header, "".join(l for l in text.splitlines(True) if f'"{name}":' not in l)),
           f"{name}: declared in the header but has no prototype")
    changed = copy.deepcopy(header)
    fn = next(f for f in changed.functions if any(p.ctype.base == "int64_t" and not p.ctype.pointers for p in f.params))
    p = next(p for p in fn.params if p.ctype.base == "int64_t" and not p.ctype.pointers)
    p.ctype.base = "int32_t"
    expect(f"the header's {fn.name} taking int32_t", check_swift(changed, shims, aliases), f"{fn.name}: parameter")
    expect(f"the header's {fn.name} taking int32_t (Python)", check_python(changed, text), f"{fn.name}: argtype")

    with open(HEADER, encoding="utf-8") as f:
        public_text = f.read()
    expect("a DLPack field changed in one copy",
           check_dlpack_copy(public_text, public_text.replace("    uint64_t byte_offset;", "    int64_t byte_offset;", 1)),
           "the DLPack declarations differ")
    return missed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="regenerate " + os.path.relpath(PY_PROTOTYPES, ROOT))
    parser.add_argument("--list", action="store_true", help="print the catalogue")
    args = parser.parse_args(argv)
    try:
        header = read_header()
        if args.write:
            text = generate_python(header)
            with open(PY_PROTOTYPES, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"catalogue: wrote {os.path.relpath(PY_PROTOTYPES, ROOT)} "
                  f"({len(header.functions)} prototypes)")
            return 0
        if args.list:
            for fn in header.functions:
                print(f"{short_title(fn.section):42} {section_file(fn.section) or '?':20} "
                      f"{fn.result.text(fn.name)}({fn.params_text()})")
            return 0
        shims, aliases = read_swift()
        problems = check_swift(header, shims, aliases) + check_python(header) + check_dlpack_copy()
        if not problems:  # a check that cannot fail proves nothing: break copies, expect failures
            problems = [f"self-test: the check missed {m}" for m in self_test(header, shims, aliases)]
    except CatalogueError as exc:
        print(f"catalogue: {exc}", file=sys.stderr)
        return 2
    if problems:
        for p in problems:
            print(f"catalogue: {p}")
        print(f"catalogue: FAILED: {len(problems)} problem(s) between include/autograd.h and its bindings")
        return 1
    sections = sorted({fn.section for fn in header.functions})
    print(f"catalogue: OK: {len(header.functions)} functions in {len(sections)} header sections, each with one "
          f"@_cdecl shim of matching types in its section's file; "
          f"{os.path.relpath(PY_PROTOTYPES, ROOT)} up to date (and broken copies of them are refused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
