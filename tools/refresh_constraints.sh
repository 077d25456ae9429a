#!/usr/bin/env bash
# Refresh constraints.txt (`make constraints`): the versions that a fresh, unconstrained install of
# gstutorial[book,dev] resolves today, written only if the test suite passes with them.
#
#   1. a fresh virtual environment in a temporary folder (the project's .venv is not touched);
#   2. `make install` into it with no constraints file (CONSTRAINTS= ): the newest releases that
#      pyproject.toml's bounds allow;
#   3. its `pip freeze --all --exclude-editable`, less pip and gstutorial itself (--all keeps
#      setuptools and wheel, which torch and sphinx-togglebutton require), is the candidate file;
#   4. `make $TEST_TARGET` (default: test, the README's unit tests + strict nbval) in that
#      environment, with GSTUTORIAL_CONSTRAINTS pointing tests/test_packaging.py at the candidate
#      (every pyproject requirement pinned inside its bound, pins consistent, installed = pinned);
#   5. only then the candidate is copied beside constraints.txt and renamed over it (atomic: never
#      a half-written constraints.txt).
#
# When the notebooks' outputs changed with the new releases, step 4 fails: re-execute the chapters
# in that environment (KEEP_VENV=1, then `make execute VENV=<the venv printed>`), review their diffs,
# and run the refresh again.
# Environment: PYTHON (default python3), TEST_TARGET (default test), KEEP_VENV=1 keeps the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TEST_TARGET=${TEST_TARGET:-test}
export PIP_DISABLE_PIP_VERSION_CHECK=1

work=$(mktemp -d "${TMPDIR:-/tmp}/gstutorial-constraints.XXXXXX")
venv=$work/venv
candidate=$work/constraints.txt
staged=
cleanup() {
  [ -z "$staged" ] || rm -f "$staged"
  if [ "${KEEP_VENV:-0}" = 1 ]; then echo "kept the environment: $venv"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== fresh, unconstrained install into $venv"
make --no-print-directory install VENV="$venv" PYTHON="$PYTHON" CONSTRAINTS=

echo "== freeze into $candidate"
{
  sed -n '/^#/p;/^#/!q' constraints.txt   # keep the explanatory header of the current file
  "$venv/bin/python" -m pip freeze --all --exclude-editable | grep -viE '^(pip|gstutorial)([ =@]|$)'
} > "$candidate"
if grep -vE '^(#|$)' "$candidate" | grep -vqE '^[A-Za-z0-9._-]+==[^ ]+$'; then
  echo "error: the freeze has lines that are not plain name==version pins (a local or URL install?):" >&2
  grep -vE '^(#|$)' "$candidate" | grep -vE '^[A-Za-z0-9._-]+==[^ ]+$' >&2
  exit 1
fi

echo "== make $TEST_TARGET with the new versions"
GSTUTORIAL_CONSTRAINTS="$candidate" \
  make --no-print-directory "$TEST_TARGET" VENV="$venv" PYTHON="$PYTHON" CONSTRAINTS=
# the packaging checks always, whatever TEST_TARGET ran
GSTUTORIAL_CONSTRAINTS="$candidate" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_packaging.py

staged=$(mktemp constraints.txt.XXXXXX)   # beside constraints.txt, so the rename is atomic
cp "$candidate" "$staged"
chmod 644 "$staged"
mv -f "$staged" constraints.txt
staged=
echo "constraints.txt refreshed: $(grep -cvE '^(#|$)' constraints.txt) pins; review: git diff constraints.txt"
