#!/usr/bin/env bash
# Prepares the Python virtual environment for the tests that drive rgitaly with gRPC C-core (grpcio is
# the same core as Ruby's grpc gem, which GitLab Rails uses) and prints its interpreter's path.
# Idempotent: an environment that already has the pinned packages is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${RGITALY_TEST_VENV:-$here/../../target/test-venv}"
req="$here/requirements.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$(cd "$venv" && pwd)/bin/python"
