//! src/sys.rs against include/autograd.h.
//!
//! Parses the header at test time (comments, preprocessor lines and the C++ guard dropped;
//! statements split at `;` outside braces: typedefs, the anonymous enums of status codes and
//! dtypes, function prototypes), maps each C type to the Rust type it must be declared as, and
//! compares with the declarations parsed from the text of src/sys.rs: every header function
//! declared with the same name, parameter count, parameter types and result type; every
//! typedef with the same target; every AG_ constant with the same value (and, for enum values,
//! the typedef the enum follows); nothing declared in sys.rs that the header lacks.
//! This parser is independent of bindings/rust/gen_sys.py, which wrote sys.rs.

use std::collections::{BTreeMap, BTreeSet};

const SYS: &str = include_str!("../src/sys.rs");

fn header_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/autograd.h");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The header
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CType {
    base: String,
    base_const: bool,
    /// One entry per '*', innermost first: whether what that level points at is const.
    pointers: Vec<bool>,
    function: Option<Box<CFunction>>,
}

#[derive(Clone, Debug)]
struct CFunction {
    name: String,
    result: CType,
    params: Vec<CType>,
}

#[derive(Default)]
struct Header {
    functions: Vec<CFunction>,
    scalar_typedefs: BTreeMap<String, CType>,
    function_typedefs: BTreeMap<String, CFunction>,
    structs: BTreeSet<String>,
    /// name -> (the Rust type it must have, if the header fixes one; value)
    constants: BTreeMap<String, (Option<String>, i64)>,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                let end = rest[b + 2..].find("*/").expect("an unterminated comment") + b + 4;
                // Keep the newlines, so that preprocessor lines stay on lines of their own.
                out.extend(rest[b..end].chars().filter(|&c| c == '\n'));
                out.push(' ');
                rest = &rest[end..];
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                let end = rest[l..].find('\n').map_or(rest.len(), |e| l + e);
                rest = &rest[end..];
            }
            (None, None) => {
                out.push_str(rest);
                return out;
            }
            (Some(_), None) => unreachable!(),
        }
    }
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits at `sep` outside brackets.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in text.chars() {
        match ch {
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' | '>' => depth -= 1,
            _ => {}
        }
        if ch == sep && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    if !cur.trim().is_empty() {
        parts.push(cur);
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// A C type written without a name: `const int64_t *`, `ag_status`, `const char *const *`.
fn c_type(text: &str) -> CType {
    let spaced = text.replace('*', " * ");
    let mut t = CType { base: String::new(), base_const: false, pointers: Vec::new(), function: None };
    let mut pending_const = false;
    for tok in spaced.split_whitespace() {
        match tok {
            "*" => {
                assert!(!t.base.is_empty(), "'*' before a type in '{text}'");
                let c = if t.pointers.is_empty() { t.base_const } else { pending_const };
                t.pointers.push(c);
                pending_const = false;
            }
            "const" if t.pointers.is_empty() => t.base_const = true,
            "const" => pending_const = true,
            word if t.base.is_empty() => t.base = word.to_string(),
            word => panic!("cannot read the C type '{text}' (at '{word}')"),
        }
    }
    assert!(!t.base.is_empty(), "no type in '{text}'");
    t
}

/// One declaration `type name`, `type *name` or `R (*name)(params)`: (name, type).
fn declarator(text: &str) -> (String, CType) {
    let text = words(text);
    if let Some(star) = text.find("(*") {
        let close = star + text[star..].find(')').expect("')' after '(*'");
        let name = text[star + 2..close].trim().to_string();
        let open = close + text[close..].find('(').expect("a parameter list");
        let params = &text[open + 1..text.rfind(')').unwrap()];
        let f = CFunction { name: name.clone(), result: c_type(&text[..star]), params: c_params(params) };
        let t = CType { base: String::new(), base_const: false, pointers: Vec::new(), function: Some(Box::new(f)) };
        return (name, t);
    }
    let cut = text.rfind([' ', '*']).unwrap_or_else(|| panic!("no name in '{text}'"));
    (text[cut + 1..].to_string(), c_type(&text[..cut + 1]))
}

fn c_params(text: &str) -> Vec<CType> {
    let text = text.trim();
    if text.is_empty() || text == "void" {
        return Vec::new();
    }
    split_top(text, ',').iter().map(|p| declarator(p).1).collect()
}

fn parse_int(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches(['U', 'L', 'u', 'l']);
    t.parse().ok()
}

fn parse_header(raw: &str) -> Header {
    let code = strip_comments(raw);
    let mut h = Header::default();
    // Preprocessor lines: #defines recorded, the C++ guard's lines skipped, the rest dropped.
    let mut kept = String::new();
    let mut in_cplusplus = false;
    for line in code.lines() {
        let s = line.trim();
        if s.starts_with("#ifdef __cplusplus") {
            in_cplusplus = true;
        } else if in_cplusplus {
            if s.starts_with("#endif") {
                in_cplusplus = false;
            }
        } else if let Some(rest) = s.strip_prefix("#define") {
            let rest = rest.trim();
            let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if name.starts_with("AG_") {
                h.constants.insert(name.to_string(), define_value(name, value.trim()));
            }
        } else if !s.starts_with('#') {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    // Statements.
    let mut depth = 0i32;
    let mut start = 0;
    let mut last_typedef: Option<String> = None;
    let bytes: Vec<char> = kept.chars().collect();
    for i in 0..bytes.len() {
        match bytes[i] {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                let stmt = words(&bytes[start..i].iter().collect::<String>());
                start = i + 1;
                statement(&mut h, &stmt, &mut last_typedef);
            }
            _ => {}
        }
    }
    h
}

fn define_value(name: &str, value: &str) -> (Option<String>, i64) {
    // `((ag_tensor)0)`: a cast fixes the type; a plain number does not.
    let mut v = value.trim();
    while v.starts_with('(') && is_wrapped(v) {
        v = v[1..v.len() - 1].trim();
    }
    if let Some(rest) = v.strip_prefix('(') {
        let close = rest.find(')').unwrap();
        let n = parse_int(&rest[close + 1..]).unwrap_or_else(|| panic!("cannot read #define {name} {value}"));
        return (Some(rest[..close].trim().to_string()), n);
    }
    (None, parse_int(v).unwrap_or_else(|| panic!("cannot read #define {name} {value}")))
}

/// Whether the first '(' of v closes at its last character.
fn is_wrapped(v: &str) -> bool {
    let mut depth = 0;
    for (i, c) in v.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i == v.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

fn statement(h: &mut Header, stmt: &str, last_typedef: &mut Option<String>) {
    if stmt.is_empty() {
        return;
    }
    if let Some(body) = stmt.strip_prefix("enum") {
        // `enum { AG_OK = 0, ... }` right after the typedef whose values it lists.
        let inner = &body[body.find('{').unwrap() + 1..body.rfind('}').unwrap()];
        for item in split_top(inner, ',') {
            let (name, value) = item.split_once('=').unwrap_or_else(|| panic!("enum item without a value: {item}"));
            let value = parse_int(value).unwrap_or_else(|| panic!("cannot read the enum value {item}"));
            h.constants.insert(name.trim().to_string(), (last_typedef.clone(), value));
        }
        return;
    }
    if stmt.starts_with("typedef struct") || stmt.starts_with("typedef enum") {
        let name = stmt.rsplit([' ', '}']).next().unwrap().to_string();
        if stmt.starts_with("typedef struct") {
            h.structs.insert(name);
        }
        return;
    }
    if let Some(rest) = stmt.strip_prefix("typedef ") {
        let (name, t) = declarator(rest);
        match t.function {
            Some(f) => {
                h.function_typedefs.insert(name, *f);
            }
            None => {
                *last_typedef = Some(name.clone());
                h.scalar_typedefs.insert(name, t);
            }
        }
        return;
    }
    let open = stmt.find('(').unwrap_or_else(|| panic!("cannot read the declaration '{stmt}'"));
    let (name, result) = declarator(&stmt[..open]);
    let params = c_params(&stmt[open + 1..stmt.rfind(')').unwrap()]);
    assert!(name.starts_with("ag_"), "a function not named ag_*: '{stmt}'");
    h.functions.push(CFunction { name, result, params });
}

// ---------------------------------------------------------------------------------------------
// C types as Rust
// ---------------------------------------------------------------------------------------------

fn rust_type(h: &Header, t: &CType) -> String {
    if let Some(f) = &t.function {
        return fn_pointer(h, f);
    }
    let scalar = match t.base.as_str() {
        "void" => "c_void",
        "bool" => "bool",
        "char" => "c_char",
        "float" => "f32",
        "double" => "f64",
        "int32_t" => "i32",
        "int64_t" => "i64",
        "uint32_t" => "u32",
        "uint64_t" => "u64",
        "size_t" => "usize",
        name if h.scalar_typedefs.contains_key(name) || h.function_typedefs.contains_key(name) => name,
        name if h.structs.contains(name) && !t.pointers.is_empty() => name,
        name => panic!("no Rust type for the C type '{name}' (add one here and in gen_sys.py)"),
    };
    let mut out = scalar.to_string();
    for &c in &t.pointers {
        out = format!("{} {out}", if c { "*const" } else { "*mut" });
    }
    out
}

fn fn_pointer(h: &Header, f: &CFunction) -> String {
    let params: Vec<String> = f.params.iter().map(|p| rust_type(h, p)).collect();
    format!("Option<unsafe extern \"C\" fn({}){}>", params.join(", "), result(h, &f.result))
}

fn result(h: &Header, t: &CType) -> String {
    if t.function.is_none() && t.base == "void" && t.pointers.is_empty() {
        String::new()
    } else {
        format!(" -> {}", rust_type(h, t))
    }
}

/// The form both sides are compared in: no whitespace, "->" as "~" (so that its '>' is no
/// bracket).
fn norm(text: &str) -> String {
    text.split_whitespace().collect::<String>().replace("->", "~")
}

// ---------------------------------------------------------------------------------------------
// sys.rs
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Sys {
    /// name -> (normalised parameter types, normalised result type: "" for none)
    functions: BTreeMap<String, (Vec<String>, String)>,
    types: BTreeMap<String, String>,
    consts: BTreeMap<String, (String, i64)>,
    structs: BTreeSet<String>,
}

fn parse_sys(text: &str) -> Sys {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut s = Sys::default();
    let block = code.find("extern \"C\" {").expect("an extern \"C\" block in sys.rs");
    let (outside, inside) = code.split_at(block);
    for stmt in split_top(&norm(outside), ';') {
        // A statement may begin with an item that has no ';' (a struct): look for the keyword.
        if let Some(i) = stmt.find("pubtype") {
            let (name, t) = stmt[i + 7..].split_once('=').unwrap();
            s.types.insert(name.to_string(), t.to_string());
        } else if let Some(i) = stmt.find("pubconst") {
            let rest = &stmt[i + 8..];
            let (name, rest) = rest.split_once(':').unwrap();
            let (t, v) = rest.split_once('=').unwrap();
            s.consts.insert(name.to_string(), (t.to_string(), v.parse().expect("an integer constant")));
        }
    }
    for line in outside.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub struct ") {
            s.structs.insert(rest.trim_end_matches(['{', ' ', ';']).to_string());
        }
    }
    let body = &inside[inside.find('{').unwrap() + 1..inside.rfind('}').unwrap()];
    for stmt in body.split(';').map(norm).filter(|s| !s.is_empty()) {
        let rest = stmt.strip_prefix("pubfn").unwrap_or_else(|| panic!("not a function in extern \"C\": {stmt}"));
        let open = rest.find('(').unwrap();
        let name = rest[..open].to_string();
        // The parameter list ends at the ')' matching its '('.
        let mut depth = 0;
        let mut close = 0;
        for (i, c) in rest.char_indices().skip(open) {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params = split_top(&rest[open + 1..close], ',')
            .iter()
            .map(|p| p.split_once(':').unwrap_or_else(|| panic!("{name}: unnamed parameter {p}")).1.to_string())
            .collect();
        let result = rest[close + 1..].strip_prefix('~').unwrap_or("").to_string();
        assert!(s.functions.insert(name.clone(), (params, result)).is_none(), "{name} declared twice");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------------

fn differences(h: &Header, s: &Sys) -> Vec<String> {
    let mut problems = Vec::new();
    for f in &h.functions {
        let Some((params, res)) = s.functions.get(&f.name) else {
            problems.push(format!("{}: declared in the header, missing from sys.rs", f.name));
            continue;
        };
        if params.len() != f.params.len() {
            problems.push(format!(
                "{}: {} parameters in sys.rs, {} in the header",
                f.name,
                params.len(),
                f.params.len()
            ));
            continue;
        }
        for (i, (have, want)) in params.iter().zip(&f.params).enumerate() {
            let want = norm(&rust_type(h, want));
            if *have != want {
                problems.push(format!(
                    "{}: parameter {} is `{have}` in sys.rs, the header needs `{want}`",
                    f.name,
                    i + 1
                ));
            }
        }
        let want = norm(&result(h, &f.result)).trim_start_matches('~').to_string();
        if *res != want {
            problems.push(format!("{}: result `{res}` in sys.rs, the header needs `{want}`", f.name));
        }
    }
    let declared: BTreeSet<&str> = h.functions.iter().map(|f| f.name.as_str()).collect();
    for name in s.functions.keys() {
        if !declared.contains(name.as_str()) {
            problems.push(format!("{name}: declared in sys.rs, not in the header"));
        }
    }
    for (name, t) in &h.scalar_typedefs {
        let want = norm(&rust_type(h, t));
        match s.types.get(name) {
            Some(have) if *have == want => {}
            other => problems.push(format!("typedef {name}: sys.rs has {other:?}, the header needs `{want}`")),
        }
    }
    for (name, f) in &h.function_typedefs {
        let want = norm(&fn_pointer(h, f));
        match s.types.get(name) {
            Some(have) if *have == want => {}
            other => problems.push(format!("typedef {name}: sys.rs has {other:?}, the header needs `{want}`")),
        }
    }
    for name in s.types.keys() {
        if !h.scalar_typedefs.contains_key(name) && !h.function_typedefs.contains_key(name) {
            problems.push(format!("type {name}: in sys.rs, not a typedef of the header"));
        }
    }
    for name in &s.structs {
        if !h.structs.contains(name) {
            problems.push(format!("struct {name}: in sys.rs, not a structure of the header"));
        }
    }
    for (name, (typ, value)) in &h.constants {
        match s.consts.get(name) {
            None => problems.push(format!("{name}: a constant of the header ({value}), missing from sys.rs")),
            Some((have_t, have_v)) => {
                if have_v != value {
                    problems.push(format!("{name}: {have_v} in sys.rs, {value} in the header"));
                }
                if let Some(t) = typ {
                    if have_t != t {
                        problems.push(format!("{name}: of type {have_t} in sys.rs, {t} in the header"));
                    }
                }
            }
        }
    }
    for name in s.consts.keys() {
        if !h.constants.contains_key(name) {
            problems.push(format!("{name}: a constant in sys.rs, not in the header"));
        }
    }
    problems
}

#[test]
fn sys_rs_declares_the_header_exactly() {
    let h = parse_header(&header_text());
    let s = parse_sys(SYS);
    // The parsers found what they should (a parser that reads nothing would compare nothing).
    assert!(h.functions.len() >= 180, "only {} functions read from the header", h.functions.len());
    assert_eq!(h.functions.len(), s.functions.len(), "function counts: header vs sys.rs");
    assert!(h.constants.len() >= 25 && h.function_typedefs.len() >= 6);
    let problems = differences(&h, &s);
    assert!(problems.is_empty(), "sys.rs differs from include/autograd.h:\n  {}", problems.join("\n  "));
    println!(
        "header.rs: {} functions, {} typedefs, {} constants of include/autograd.h match sys.rs",
        h.functions.len(),
        h.scalar_typedefs.len() + h.function_typedefs.len(),
        h.constants.len()
    );
}

#[test]
fn the_comparison_sees_a_mismatch() {
    // sys.rs with one parameter's type changed, one result dropped and one constant changed:
    // each must be reported (the check above would otherwise pass vacuously).
    let h = parse_header(&header_text());
    let broken = SYS
        .replace(
            "pub fn ag_tensor_item(out: *mut f64, t: ag_tensor) -> ag_status;",
            "pub fn ag_tensor_item(out: *mut f32, t: ag_tensor) -> ag_status;",
        )
        .replace("pub fn ag_tensor_free(t: ag_tensor) -> ag_status;", "pub fn ag_tensor_free(t: ag_tensor);")
        .replace("pub const AG_ERR_SHAPE: ag_status = 3;", "pub const AG_ERR_SHAPE: ag_status = 4;");
    assert_ne!(broken, SYS);
    let problems = differences(&h, &parse_sys(&broken));
    for needle in ["ag_tensor_item: parameter 1", "ag_tensor_free: result", "AG_ERR_SHAPE: 4 in sys.rs"] {
        assert!(problems.iter().any(|p| p.contains(needle)), "'{needle}' not reported: {problems:?}");
    }
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn tricky_prototypes_are_read_right() {
    let h = parse_header(&header_text());
    let find = |name: &str| h.functions.iter().find(|f| f.name == name).unwrap();
    let save = find("ag_safetensors_save");
    assert_eq!(norm(&rust_type(&h, &save.params[1])), norm("*const *const c_char"));
    let hook = find("ag_tensor_register_hook");
    assert_eq!(norm(&rust_type(&h, &hook.params[4])), norm("Option<unsafe extern \"C\" fn(*mut c_void)>"));
    assert_eq!(norm(&result(&h, &find("ag_version").result)), norm("-> *const c_char"));
    assert_eq!(h.constants["AG_NULL_TENSOR"], (Some("ag_tensor".to_string()), 0));
    assert_eq!(h.constants["AG_ERR_FORMAT"], (Some("ag_status".to_string()), 10));
}
