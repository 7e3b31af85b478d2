#!/usr/bin/env bash
# Checks that libautograd.so exports exactly the C interface declared in include/autograd.h:
#   - every ag_ function declared in the header is exported (nm -D --defined-only),
#   - every exported ag_ symbol is declared in the header,
#   - the library does not depend on a shared Swift runtime (no libswift* in ldd),
#   - its SONAME is libautograd.so.0,
#   - the C catalogue (scripts/catalogue.py, first, needs no build): every header function has one
#     @_cdecl shim of matching types in the Sources/AutogradC file of its header section, and the
#     Python package's generated prototypes (bindings/python/libautograd/_prototypes.py) are current.
# Assumes the library is built (scripts/build.sh). Exits 1 on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."

catalogue_failed=0
python3 scripts/catalogue.py || { catalogue_failed=1; echo "check-exports: the C catalogue check failed (above)"; }

header=include/autograd.h
lib=.build/release/libautograd.so

if [[ ! -f "$lib" ]]; then
    echo "check-exports: $lib not found; build it first (scripts/build.sh)" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Declared: preprocess the header (drops comments and #defines), then take every `ag_name(`.
# In declarations the function name is the only ag_ identifier directly followed by '('.
cc -E -P -x c "$header" | grep -oE '\bag_[A-Za-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' |
    sort -u >"$tmp/declared"

# Exported: defined dynamic symbols whose name starts with ag_ (any symbol kind).
nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | grep -E '^ag_' | sort -u \
    >"$tmp/exported" || true

fail=$catalogue_failed
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
if [[ -n "$missing" ]]; then
    echo "check-exports: declared in $header but not exported by $lib:"
    sed 's/^/    /' <<<"$missing"
    fail=1
fi
if [[ -n "$extra" ]]; then
    echo "check-exports: exported by $lib but not declared in $header:"
    sed 's/^/    /' <<<"$extra"
    fail=1
fi

# The Swift runtime must be linked in statically: no libswift*.so dependency.
if ldd "$lib" | grep -i 'libswift'; then
    echo "check-exports: $lib depends on a shared Swift runtime (see the ldd lines above)"
    fail=1
fi
if ldd "$lib" | grep -q 'not found'; then
    echo "check-exports: $lib has unresolved dependencies:"
    ldd "$lib" | grep 'not found'
    fail=1
fi

soname=$(readelf -d "$lib" | sed -nE 's/.*\(SONAME\).*\[(.*)\].*/\1/p')
if [[ "$soname" != "libautograd.so.0" ]]; then
    echo "check-exports: SONAME is '${soname:-<none>}', expected 'libautograd.so.0'"
    fail=1
fi

if [[ $fail -ne 0 ]]; then
    exit 1
fi
echo "check-exports: OK: $(wc -l <"$tmp/declared") ag_ functions declared and exported, no libswift dependency, SONAME $soname"
