#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh machine (venv, the runtime, the test and
# dev tools, every framework, the native build) and runs the whole suite: C++ tests (CTest), then
# pytest.
# System services: Mosquitto is installed here and started by the tests; moto (S3) is a package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev --frameworks
scripts/services.sh
# Cross compilers and qemu-user for tests/test_arm.py (apt; the test says why it skips without them).
scripts/arm_setup.sh tools || echo "test.sh: the ARM cross tools could not be installed" >&2
# Chromium for the console's browser test (Debian's package, driven by playwright; no browser
# download). The test skips, saying so, where it cannot be installed.
scripts/services.sh chromium || echo "test.sh: chromium could not be installed" >&2
# ccache: tests/test_wheels.py builds a wheel per CPython, and with ccache the C++ core compiles
# once for all of them (scripts/build_wheels.sh uses it when it is on PATH).
if ! command -v ccache >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ccache ||
    echo "test.sh: ccache could not be installed (each wheel compiles the whole core)" >&2
fi
export PATH="$PWD/.venv/bin:$PATH"
ctest --test-dir build/dev --output-on-failure
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means it collected no test: a suite that tests nothing has failed.
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
