#!/usr/bin/env bash
# `npm test`: the whole suite on SQLite (the embedded default); then, when ENCLAVE_TEST_DATABASE_URL names a
# PostgreSQL server whose role may create databases, every test file that runs the server's store again with
# ENCLAVE_TEST_STORE=postgres: the store matrix (issue 12). `.ci/run` starts a throw-away cluster for it.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s typecheck
node --import tsx --test --test-concurrency=2 test/*.test.ts
if [ -n "${ENCLAVE_TEST_DATABASE_URL:-}" ]; then
  mapfile -t files < <(grep -l -E "helpers/(app|agent-server)\.js" test/*.test.ts)
  echo "store matrix: ${#files[@]} test files again on PostgreSQL"
  ENCLAVE_TEST_STORE=postgres node --import tsx --test --test-concurrency=2 "${files[@]}"
else
  echo "store matrix: ENCLAVE_TEST_DATABASE_URL is not set, so the PostgreSQL half did not run (README, Tests)"
fi
