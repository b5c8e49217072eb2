#!/usr/bin/env bash
# Mutation testing of the core's protocol code: cargo-mutants plants small
# bugs in the files `.cargo/mutants.toml` names and reruns the tests; a
# planted bug no test notices is "missed". Too slow for CI in full (a few
# seconds of build and test per mutant, about 700 mutants), so it runs in
# round-robin shards that each fit in a few minutes.
#
#   scripts/mutants.sh                   every mutant, core's and the simulator's tests
#   scripts/mutants.sh --tests sim       the simulator's tests alone
#   scripts/mutants.sh --shard 3/30      one shard
#   scripts/mutants.sh --shards 30       every shard in turn (a finished shard is skipped)
#   scripts/mutants.sh --summary         the per-file table of what --out holds
#   scripts/mutants.sh --missed-from mutants.out/sim
#                                        core+sim, retesting only what the simulator's
#                                        tests missed (what they catch, both catch)
#
# Options:
#   --tests core+sim|sim|core|workspace  whose tests judge each mutant (default core+sim)
#   --out DIR         where results go (default mutants.out/<tests>); one
#                     mutants.out per shard below it, then DIR/missed.txt
#                     (every shard's missed mutants) and DIR/summary.txt
#   --jobs N          mutants built and tested at once (default 1)
#   --timeout S       seconds a mutant's tests may take before it counts as
#                     a hang, which kills it (default 60; the tests take ~4)
#   --missed-from DIR test only the mutants DIR/missed.txt lists (a finished
#                     run's); the table then counts DIR's results too, a
#                     mutant either run caught counting as caught
#   -- ARGS           passed on to cargo mutants (e.g. -- --re 'reliable.rs')
#
# Everything runs under `nice -n 19` (NICE=0 to change that). The table
# counts, per file: mutants found (not excluded), caught, timeouts (a hang
# the timeout killed: caught too), missed, unviable (did not build),
# excluded (`exclude_re` in .cargo/mutants.toml, each with its reason), and
# the kill rate: (caught + timeouts) / (tested - unviable).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=core+sim
out=
shard=
shards=
jobs=1
timeout=60
summary_only=false
missed_from=
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --shard) shard=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --summary) summary_only=true; shift ;;
    --missed-from) missed_from=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "mutants.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
out=${out:-mutants.out/$tests}

case "$tests" in
  core+sim) test_args=(--test-package pslite-core --test-package pslite-sim) ;;
  sim) test_args=(--test-package pslite-sim) ;;
  core) test_args=(--test-package pslite-core) ;;
  workspace) test_args=(--test-workspace true) ;;
  *) echo "mutants.sh: --tests is core+sim, sim, core or workspace" >&2; exit 1 ;;
esac

command -v cargo-mutants >/dev/null || {
  echo "mutants.sh: cargo-mutants is missing: cargo install cargo-mutants --locked" >&2
  exit 1
}
command -v python3 >/dev/null || { echo "mutants.sh: the summary needs python3" >&2; exit 1; }

# The simulator's sweep tests run this many seeds each per mutant (200
# without it): a few seconds more per mutant, and a protocol bug that only
# some interleavings reach gets that many more chances to show.
export PSLITE_SIM_SEEDS=${PSLITE_SIM_SEEDS:-1000}

# One shard (or, without --shard, everything) into $1.
run() {
  local dir=$1; shift
  mkdir -p "$dir"
  local status=0
  # --profile mutants: the test profile without debug info (Cargo.toml),
  # which halves each mutant's build. The baseline (unmutated) run checks
  # the tree passes first, so a broken tree cannot pass for caught mutants.
  nice -n "${NICE:-19}" cargo mutants -p pslite-core "${test_args[@]}" \
    --profile mutants --jobs "$jobs" --timeout "$timeout" --build-timeout 900 \
    --output "$dir" --no-times --colors never "$@" "${extra[@]}" || status=$?
  # 2: some missed, 3: some timed out; both are results, not errors.
  case $status in 0|2|3) ;; *) echo "mutants.sh: cargo mutants exited with $status" >&2; exit "$status" ;; esac
}

finished() {
  [ -f "$1/mutants.out/outcomes.json" ] &&
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("end_time") else 1)' \
      "$1/mutants.out/outcomes.json"
}

# A regex matching exactly the mutant names in file $1, for --re.
names_re() {
  python3 - "$1" <<'EOF'
import sys
meta = set('\\.+*?()|[]{}^$#&-~')
names = [line.strip() for line in open(sys.argv[1]) if line.strip()]
escape = lambda name: ''.join('\\' + c if c in meta else c for c in name)
print('^(' + '|'.join(map(escape, names)) + ')$')
EOF
}

if [ -n "$missed_from" ]; then
  [ -f "$missed_from/missed.txt" ] || { echo "mutants.sh: no $missed_from/missed.txt (run --summary there first)" >&2; exit 1; }
  [ -s "$missed_from/missed.txt" ] || { echo "mutants.sh: $missed_from missed nothing"; summary_only=true; }
fi

if ! $summary_only; then
  if [ -n "$missed_from" ]; then
    run "$out/missed-from-$(basename "$missed_from")" --re "$(names_re "$missed_from/missed.txt")"
  elif [ -n "$shards" ]; then
    for ((k = 0; k < shards; k++)); do
      dir="$out/shard-$k-of-$shards"
      if finished "$dir"; then
        echo "shard $k/$shards: done before, skipped"
        continue
      fi
      echo "shard $k/$shards"
      run "$dir" --sharding round-robin --shard "$k/$shards"
    done
  elif [ -n "$shard" ]; then
    run "$out/shard-${shard%/*}-of-${shard#*/}" --sharding round-robin --shard "$shard"
  else
    run "$out/all"
  fi
fi

# The excluded mutants: those the examined files yield without the
# config's exclusions, less those they yield with them.
listing=$(mktemp -d)
trap 'rm -rf "$listing"' EXIT
globs=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open(".cargo/mutants.toml","rb"))["examine_globs"]))')
file_args=()
while read -r glob; do file_args+=(-f "$glob"); done <<<"$globs"
cargo mutants -p pslite-core --list --no-config "${file_args[@]}" >"$listing/all.txt"
cargo mutants -p pslite-core --list >"$listing/kept.txt"

python3 - "$out" "$listing/all.txt" "$listing/kept.txt" "$missed_from" <<'EOF'
import collections, json, pathlib, sys

out, all_path, kept_path = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
bases = [pathlib.Path(sys.argv[4])] if sys.argv[4] else []
file_of = lambda name: name.split(":", 1)[0]
all_names = [l.strip() for l in open(all_path) if l.strip()]
kept = set(l.strip() for l in open(kept_path) if l.strip())

# name -> outcome. Runs overlap and tests are only ever added between
# them, so a mutant any run caught (or timed out) counts as caught.
results = {}
runs = [p for d in bases + [out] for p in d.glob("**/mutants.out/outcomes.json")]
for path in sorted(runs, key=lambda p: p.stat().st_mtime):
    for outcome in json.load(open(path))["outcomes"]:
        scenario = outcome["scenario"]
        if isinstance(scenario, dict) and "Mutant" in scenario:
            name = scenario["Mutant"]["name"]
            if results.get(name) not in ("CaughtMutant", "Timeout"):
                results[name] = outcome["summary"]

rows = collections.defaultdict(collections.Counter)
for name in all_names:
    row = rows[file_of(name)]
    if name not in kept:
        row["excluded"] += 1
        continue
    row["found"] += 1
    summary = results.get(name)
    if summary is None:
        continue
    row["tested"] += 1
    row[{"CaughtMutant": "caught", "MissedMutant": "missed", "Timeout": "timeout", "Unviable": "unviable"}[summary]] += 1

def rate(row):
    viable = row["tested"] - row["unviable"]
    return f"{100 * (row['caught'] + row['timeout']) / viable:.1f}%" if viable else "-"

columns = ["found", "tested", "caught", "timeout", "missed", "unviable", "excluded"]
lines = ["| file | " + " | ".join(columns) + " | kill rate |", "|---" * (len(columns) + 2) + "|"]
total = collections.Counter()
for file in sorted(rows):
    row = rows[file]
    total.update(row)
    lines.append(f"| {file} | " + " | ".join(str(row[c]) for c in columns) + f" | {rate(row)} |")
lines.append("| **total** | " + " | ".join(str(total[c]) for c in columns) + f" | **{rate(total)}** |")
missed = sorted((n for n, s in results.items() if s == "MissedMutant" and n in kept),
                key=lambda n: (file_of(n), [int(x) for x in n.split(":")[1:3]]))
text = "\n".join(lines) + "\n"
(out / "summary.txt").write_text(text)
(out / "missed.txt").write_text("".join(n + "\n" for n in missed))
print(text)
print(f"{len(missed)} missed: {out / 'missed.txt'}")
EOF
