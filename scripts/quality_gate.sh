#!/usr/bin/env bash
# Issue #23's quality gate: ruff (lint and format check) on the whole code base and mypy (strict) on the files listed in
# pyproject.toml ([tool.mypy] files: classifier, layers, errors, validation, detectors, attacks, the experiments'
# framework). Exits non-zero on any finding. Run from anywhere: bash scripts/quality_gate.sh
set -u
cd "$(dirname "$0")/.."
status=0
echo "== ruff check advguard tests benchmarks scripts"
ruff check advguard tests benchmarks scripts || status=1
echo "== ruff format --check advguard tests benchmarks scripts"
ruff format --check advguard tests benchmarks scripts || status=1
echo "== mypy (configuration: pyproject.toml [tool.mypy])"
mypy || status=1
if [ "$status" -ne 0 ]; then
    echo "quality gate: FAILED" >&2
else
    echo "quality gate: passed"
fi
exit "$status"
