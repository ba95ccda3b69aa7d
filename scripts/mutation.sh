#!/usr/bin/env bash
# Mutation testing of the code that makes a published number: the metrics (FID and the Inception-style score,
# the likelihood bounds, BLEU), the statistics (benchmarks/core/stats.py, benchmarks/claim/stats.py), the merge
# of seeds into metrics.json with its staleness rule (benchmarks/run/results.py) and the ledger's publish.
# mutmut (pinned in the `mutation` extra) changes one thing at a time (an operator, a constant, an argument)
# in a copy of this tree and runs the tests of [tool.mutmut] in pyproject.toml that call the changed function;
# a mutant no test notices is a survivor. Prints the kill rate over SCOPE and each survivor's diff.
#
# Usage: bash scripts/mutation.sh          (about 15 minutes on 2 busy cores; outside CI's time)
#        MUTATION_DIR=/tmp/m bash scripts/mutation.sh   (keep the copy, e.g. for `mutmut show NAME` there)
# Runs under nice -n 10 with one worker and one thread. Exit 1 only when the tool itself could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The mutated functions: whole files, except decoding.py (only its BLEU) and ledger.py (only publish's path).
SCOPE=(
  "lightning_modules.metrics.fid.*"
  "lightning_modules.likelihood.bounds.*"
  "lightning_modules.recurrent.decoding.x__bleu__*"
  "lightning_modules.recurrent.decoding.x_corpus_bleu__*"
  "lightning_modules.recurrent.decoding.x_bleu_signature__*"
  "benchmarks.core.stats.*"
  "benchmarks.claim.stats.*"
  "benchmarks.run.results.*"
  "benchmarks.report.ledger.x_publish__*"
  "benchmarks.report.ledger.x_build_record__*"
  "benchmarks.report.ledger.x_numbers__*"
  "benchmarks.report.ledger.x_record_values__*"
  "benchmarks.report.ledger.x_thin__*"
  "benchmarks.report.ledger.x_sample_index__*"
  "benchmarks.report.ledger.x_copy_sample_files__*"
  "benchmarks.report.ledger.x_ledger_dir_for__*"
)

if [ -n "${VIRTUAL_ENV:-}" ]; then  # an active environment with the project: add the tool only
  py="$VIRTUAL_ENV/bin/python"
  mapfile -t tool < <("$py" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mutation"], sep="\n")')
  "$py" -m pip install -q "${tool[@]}"
else
  bash scripts/setup.sh "test,mutation"
  py="$root/.venv/bin/python"
fi

work="${MUTATION_DIR:-$(mktemp -d)}"
[ -n "${MUTATION_DIR:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
# The working tree as it is (tracked and new files, no ignored build outputs): mutmut writes mutants/ there.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$work"
cd "$work"
rm -rf mutants
unset PYTHONPATH  # the tests must import the mutated copy, never this tree
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
started=$(date +%s)
nice -n 10 "$py" -m mutmut run --max-children 1 "${SCOPE[@]}" > mutmut.log 2>&1 || {
  tail -c 4000 mutmut.log | tr '\r' '\n' | tail -40; echo "mutmut failed (log: $work/mutmut.log)"; exit 1; }
"$py" "$root/scripts/mutation_report.py" "${SCOPE[@]}"
echo "mutation run: $(( $(date +%s) - started )) s"
