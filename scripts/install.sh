#!/usr/bin/env bash
# Installs Autograd for C users (what `make install` runs):
#   PREFIX/lib/libautograd.so.X.Y.Z   the library (soname libautograd.so.X), with the links
#   PREFIX/lib/libautograd.so.X       -> libautograd.so.X.Y.Z   (what programs load)
#   PREFIX/lib/libautograd.so         -> libautograd.so.X       (what -lautograd finds)
#   PREFIX/include/autograd.h
#   PREFIX/include/autograd.hpp       the header-only C++17 wrapper over autograd.h
#   PREFIX/lib/pkgconfig/autograd.pc  so `cc prog.c $(pkg-config --cflags --libs autograd)` works
# Builds the library first (scripts/build.sh; quick when it is up to date).
#
#   bash scripts/install.sh [--uninstall]
# Environment:
#   PREFIX=DIR    where to install (default /usr/local)
#   DESTDIR=DIR   staging root for packagers: files go to DESTDIR/PREFIX, autograd.pc still names PREFIX
#   NO_BUILD=1    install the library already in .build/release without running the build
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/
case "$prefix" in
    /*) ;;
    *) echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 2 ;;
esac
dest=${DESTDIR:-}
libdir=$dest$prefix/lib
incdir=$dest$prefix/include
pcdir=$libdir/pkgconfig

# The one version string, as ag_version() returns it.
version=$(sed -n 's/^private let versionString: StaticString = "\([0-9][0-9.]*\)".*/\1/p' Sources/AutogradC/LibraryAPI.swift)
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "install: cannot read the version from Sources/AutogradC/LibraryAPI.swift" >&2; exit 1; }
major=${version%%.*}
real=libautograd.so.$version

if [ "${1:-}" = "--uninstall" ]; then
    for f in "$libdir/$real" "$libdir/libautograd.so.$major" "$libdir/libautograd.so" \
             "$incdir/autograd.h" "$incdir/autograd.hpp" "$pcdir/autograd.pc"; do
        if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$f" && echo "install: removed $f"; fi
    done
    if [ -z "$dest" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi
    exit 0
fi
[ $# -eq 0 ] || { echo "usage: [PREFIX=DIR] [DESTDIR=DIR] bash scripts/install.sh [--uninstall]" >&2; exit 2; }

if [ "${NO_BUILD:-0}" != 1 ]; then bash scripts/build.sh; fi
so=.build/release/libautograd.so
[ -f "$so" ] || { echo "install: $so not found (run scripts/build.sh)" >&2; exit 1; }
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libautograd.so.$major" ] || {
    echo "install: $so has soname '$soname', expected libautograd.so.$major" >&2; exit 1; }

mkdir -p "$libdir" "$incdir" "$pcdir"
install -m 0755 "$so" "$libdir/$real"
ln -sfn "$real" "$libdir/libautograd.so.$major"
ln -sfn "libautograd.so.$major" "$libdir/libautograd.so"
install -m 0644 include/autograd.h "$incdir/autograd.h"
install -m 0644 include/autograd.hpp "$incdir/autograd.hpp"
# Libs.private: what a static link would also need (the shared library records these itself).
cat >"$pcdir/autograd.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: autograd
Description: Reverse-mode automatic differentiation for N-dimensional tensors, C API
Version: $version
Libs: -L\${libdir} -lautograd
Libs.private: -lopenblas -lstdc++ -lm
Cflags: -I\${includedir}
EOF
chmod 0644 "$pcdir/autograd.pc"

echo "install: $libdir/$real (soname libautograd.so.$major, links libautograd.so.$major and libautograd.so)"
echo "install: $incdir/autograd.h"
echo "install: $incdir/autograd.hpp"
echo "install: $pcdir/autograd.pc (version $version)"
# A system prefix needs the loader cache refreshed; a private one is found through -rpath or
# LD_LIBRARY_PATH instead.
if [ -z "$dest" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null &&
   grep -qsx "$prefix/lib" /etc/ld.so.conf /etc/ld.so.conf.d/*.conf; then
    ldconfig && echo "install: ldconfig refreshed the loader cache"
fi
searched=":${PKG_CONFIG_PATH:-}:$(pkg-config --variable pc_path pkg-config 2>/dev/null || true):"
case "$searched" in
    *":$prefix/lib/pkgconfig:"*) ;;
    *) echo "install: pkg-config does not search $prefix/lib/pkgconfig: add it to PKG_CONFIG_PATH" ;;
esac
