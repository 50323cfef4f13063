#!/bin/sh
# Installs the pagesnap C library, header and pkg-config file under PREFIX.
#
#   cargo build --release -p pagesnap-ffi
#   sudo crates/pagesnap-ffi/install.sh /usr/local          # then: sudo ldconfig
#
# Usage: install.sh PREFIX [BUILD_DIR]   (BUILD_DIR defaults to <workspace>/target/release)
# Installs PREFIX/include/pagesnap.h, PREFIX/lib/libpagesnap.{so,a} and
# PREFIX/lib/pkgconfig/pagesnap.pc. The libraries are installed without debug
# info (the release build keeps it for profiling: 7 MB .so, 29 MB .a); the .so's
# debug info goes to PREFIX/lib/debug/libpagesnap.so.debug, which gdb and perf
# find through the library's debuglink. Symbols stay, so profiles name functions.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:?usage: install.sh PREFIX [BUILD_DIR]}
build=${2:-$here/../../target/release}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/../../Cargo.toml" | head -n 1)
for f in libpagesnap.so libpagesnap.a; do
    [ -f "$build/$f" ] || { echo "install.sh: $build/$f missing: run cargo build --release -p pagesnap-ffi" >&2; exit 1; }
done
mkdir -p "$prefix/include" "$prefix/lib/pkgconfig"
cp "$here/include/pagesnap.h" "$prefix/include/pagesnap.h"
cp "$build/libpagesnap.so" "$build/libpagesnap.a" "$prefix/lib/"
if command -v strip >/dev/null && command -v objcopy >/dev/null; then
    mkdir -p "$prefix/lib/debug"
    objcopy --only-keep-debug "$prefix/lib/libpagesnap.so" "$prefix/lib/debug/libpagesnap.so.debug"
    strip --strip-debug "$prefix/lib/libpagesnap.so" "$prefix/lib/libpagesnap.a"
    (cd "$prefix/lib" && objcopy --add-gnu-debuglink=debug/libpagesnap.so.debug libpagesnap.so)
else
    echo "install.sh: strip/objcopy not found (binutils): libraries installed with their debug info" >&2
fi
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$here/pagesnap.pc.in" >"$prefix/lib/pkgconfig/pagesnap.pc"
echo "installed pagesnap $version under $prefix"
