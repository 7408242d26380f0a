#!/usr/bin/env bash
# Runs the kernel tests (the conv and dense kernels') once with the kernels built under AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tests/run_sanitized.sh [pytest arguments]      (PYTHON: the interpreter, default .venv/bin/python)
#
# The full, manual check (minutes; not in the test suite): the only one that runs the FFI handlers'
# glue (conv_ffi.cc: shape checks, dispatch, XLA's thread pool) under the sanitizers; run it after
# changing conv_ffi.cc. The suite's check is tests/kernels_sanitized.cc (test_kernel_build.py): the
# kernel math and the chunking, without XLA, in seconds.
#
# The kernels are compiled with -fsanitize=address,undefined (VAELAB_KERNELS_SANITIZE=1) into an
# empty cache. Python itself is not instrumented, so the ASan runtime is preloaded, with the C++
# runtime (ASan must see libstdc++ from the start to intercept C++ exceptions, which jaxlib throws);
# leak checking is off (Python and XLA keep memory until exit by design). Any out-of-bounds access
# or undefined behaviour in the kernels aborts the run with a report.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
cxx=${CXX:-c++}
runtime=$($cxx -print-file-name=libasan.so)
if [ ! -f "$runtime" ]; then  # clang names its runtime differently
  runtime=$($cxx -print-file-name="libclang_rt.asan-$(uname -m).so")
fi
if [ ! -f "$runtime" ]; then
  echo "run_sanitized.sh: $cxx has no AddressSanitizer runtime (Debian: apt-get install libasan8 or libgcc-12-dev)" >&2
  exit 2
fi
cxx_runtime=$($cxx -print-file-name=libstdc++.so)
cache=$(mktemp -d)
trap "rm -rf $cache" EXIT
export VAELAB_KERNELS_SANITIZE=1 VAELAB_KERNEL_CACHE="$cache"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
LD_PRELOAD="$runtime $cxx_runtime" "$python" -m pytest tests/test_kernels.py tests/test_dense_kernels.py tests/test_fused_step.py -q -n 0 -p no:cacheprovider "$@"
# The tests above must have run on a sanitized build, not silently on the fallback.
built=$(find "$cache" -name libvaelab_kernels.so)
# (grep -c, not grep -q: -q closes the pipe early, and pipefail would count nm's SIGPIPE as a failure)
if [ -z "$built" ] || [ "$(nm -D "$built" | grep -c __asan)" = 0 ]; then
  echo "run_sanitized.sh: the kernels were not built with the sanitizers" >&2
  exit 1
fi
echo "run_sanitized.sh: kernel tests passed under AddressSanitizer and UndefinedBehaviorSanitizer"
