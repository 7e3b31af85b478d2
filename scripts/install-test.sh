#!/usr/bin/env bash
# Tests `make install` as a C user meets it: installs into a temporary prefix, checks the files,
# the soname links and autograd.pc, then builds bindings/c/example.c with nothing but
# `cc example.c $(pkg-config --cflags --libs autograd)` in a bare environment
# (env -i PATH=/usr/bin:/bin: no Swift toolchain, no LD_LIBRARY_PATH) and runs it. Also checks a
# DESTDIR staged install and `make uninstall`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
checks=0
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); echo "install-test: ok: $*"; }
bare() { env -i PATH=/usr/bin:/bin PKG_CONFIG_PATH="$prefix/lib/pkgconfig" "$@"; }

command -v pkg-config >/dev/null || fail "pkg-config is not installed (scripts/setup.sh installs it)"
make --no-print-directory install PREFIX="$prefix"

# 1. The files and links.
# The version as autograd.pc states it; step 3 checks it against ag_version() of the library.
version=$(bare pkg-config --modversion autograd) || fail "pkg-config --modversion autograd"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "autograd.pc has version '$version'"
major=${version%%.*}
lib=$prefix/lib
[ -f "$lib/libautograd.so.$version" ] && [ ! -L "$lib/libautograd.so.$version" ] ||
    fail "$lib/libautograd.so.$version is not a file"
[ "$(readlink "$lib/libautograd.so.$major")" = "libautograd.so.$version" ] || fail "libautograd.so.$major link"
[ "$(readlink "$lib/libautograd.so")" = "libautograd.so.$major" ] || fail "libautograd.so link"
soname=$(readelf -d "$lib/libautograd.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libautograd.so.$major" ] || fail "soname is '$soname'"
cmp -s include/autograd.h "$prefix/include/autograd.h" || fail "the installed header differs from include/autograd.h"
cmp -s include/autograd.hpp "$prefix/include/autograd.hpp" || fail "the installed header differs from include/autograd.hpp"
ok "libautograd.so.$version (soname $soname), its two links, include/autograd.h and include/autograd.hpp"

# 2. pkg-config, asked in the bare environment.
cflags=$(bare pkg-config --cflags autograd | sed "s/ *$//")
libs=$(bare pkg-config --libs autograd | sed "s/ *$//")
[ "$cflags" = "-I$prefix/include" ] || fail "pkg-config --cflags autograd gave '$cflags'"
[ "$libs" = "-L$lib -lautograd" ] || fail "pkg-config --libs autograd gave '$libs'"
ok "pkg-config: version $version, cflags '$cflags', libs '$libs'"

# 3. The C example, built and run the way the README tells C users, away from the repository.
mkdir -p "$tmp/user"
cp bindings/c/example.c "$tmp/user/example.c"
cat >"$tmp/user/version.c" <<'EOF'
#include <autograd.h>
#include <stdio.h>
int main(void) { printf("%s\n", ag_version()); return 0; }
EOF
(cd "$tmp/user" && bare sh -c 'cc -std=c11 -O2 -Wall -Wextra -Werror example.c -o example \
    $(pkg-config --cflags --libs autograd) -lm -Wl,-rpath,"$1"' sh "$lib") || fail "building example.c with pkg-config"
(cd "$tmp/user" && bare sh -c 'cc -std=c11 version.c -o version $(pkg-config --cflags --libs autograd)') ||
    fail "building version.c with pkg-config"
ldd "$tmp/user/example" | grep -q "$lib/libautograd.so.$major" || fail "example does not load the installed library"
if ldd "$tmp/user/example" | grep -Eiq 'swift|not found'; then
    ldd "$tmp/user/example"; fail "the installed library needs the Swift toolchain's libraries or misses one"
fi
ok "example.c and version.c built with pkg-config; ldd: no Swift toolchain library, nothing missing"
out=$(cd "$tmp/user" && bare ./example) || { echo "$out"; fail "the example exited non-zero"; }
echo "$out" | sed 's/^/  | /' | tail -n 4
echo "$out" | grep -q "example: all checks passed" || fail "the example did not pass its checks"
got=$(cd "$tmp/user" && bare LD_LIBRARY_PATH="$lib" ./version) || fail "version (via LD_LIBRARY_PATH) did not run"
[ "$got" = "$version" ] || fail "ag_version() is '$got', autograd.pc says $version"
ok "the example ran in env -i PATH=/usr/bin:/bin (rpath); ag_version() = $got (LD_LIBRARY_PATH)"

# 4. A staged install names the final prefix, not the staging folder; uninstall removes it all.
make --no-print-directory install PREFIX=/usr DESTDIR="$tmp/stage" NO_BUILD=1 >/dev/null
grep -qx "prefix=/usr" "$tmp/stage/usr/lib/pkgconfig/autograd.pc" || fail "DESTDIR install: autograd.pc prefix"
[ -f "$tmp/stage/usr/lib/libautograd.so.$version" ] || fail "DESTDIR install: library"
ok "DESTDIR=$tmp/stage PREFIX=/usr: files under the stage, autograd.pc says prefix=/usr"
make --no-print-directory uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" \( -type f -o -type l \) | wc -l)
[ "$left" -eq 0 ] || { find "$prefix"; fail "make uninstall left $left files"; }
ok "make uninstall removed every installed file"
echo "install-test: all $checks checks passed"
