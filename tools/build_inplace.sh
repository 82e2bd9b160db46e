#!/usr/bin/env bash
# Development build: compiles appealnet._C and swaps it into appealnet/
# atomically (a rename), under a lock, so that several shells (or agents)
# can rebuild while others run tests against the previous module.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/appealnet_build.lock
flock 9
python setup.py build_ext --force -j 2 -b build/lib_dev -t build/temp_dev -q >/tmp/appealnet_build.log 2>&1 || {
    grep -E "error|Error" /tmp/appealnet_build.log | head -40; exit 1; }
grep -E "warning" /tmp/appealnet_build.log | head -20 || true
so=$(ls build/lib_dev/appealnet/_C*.so)
cp "$so" "appealnet/.$(basename "$so").tmp"
mv "appealnet/.$(basename "$so").tmp" "appealnet/$(basename "$so")"
echo "built $(basename "$so")"
