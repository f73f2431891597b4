#!/bin/sh
# debian/libsockmsg0.symbols lists exactly what the built shared library
# exports, so an API change (a function added, removed or renamed) fails
# here first, with the command that regenerates the file; the Debian
# package build (tests/packages/debs.sh) fails on the same difference.
#
#   sh tests/symbols.sh BUILD_DIR      (make check passes it; needs
#                                       BUILD_DIR/libsockmsg.so)
set -eu
build=${1:?usage: sh tests/symbols.sh BUILD_DIR}
cd "$(dirname "$0")/.."
sh debian/gen-symbols.sh --check "$build/libsockmsg.so"
