#!/usr/bin/env bash
# Times `snakemake all --cores 2 --configfile configs/cpu.yaml` from an empty results tree (issue #9's 90-minute bar)
# and writes measurements/cpu_all_timing.json: wall seconds, peak memory, the job count, load averages before and
# after, the commit, and each job's own `benchmark:` seconds (the rules' benchmarks/ TSVs).
#   tools/time_cpu_all.sh CHECKOUT [PYTHON_ENV]
# Another target or overlay (e.g. the authors'-code reproduction table, which does not fit into the CPU `all`):
#   TARGET=results/tables/reproduction.md OVERLAYS="configs/cpu.yaml configs/authors-code.yaml" \
#   OUT=measurements/cpu_authors_code_timing.json tools/time_cpu_all.sh CHECKOUT [PYTHON_ENV]
# CHECKOUT: a clean checkout of the commit to time (a `git worktree add` or a clone) with no results/ yet; nothing else
# should run on the cores meanwhile. PYTHON_ENV (default CHECKOUT/.venv): the environment whose snakemake runs it; the
# checkout's own lpbert_core comes first on PYTHONPATH, so a shared editable environment times this commit's code.
set -eu -o pipefail
CHECKOUT=$(cd "$1" && pwd)
ENV=${2:-$CHECKOUT/.venv}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$HERE/measurements/cpu_all_timing.json}
case "$OUT" in /*) ;; *) OUT=$HERE/$OUT ;; esac
TARGET=${TARGET:-all}
OVERLAYS=${OVERLAYS:-configs/cpu.yaml}
cd "$CHECKOUT"
[ -e results ] && { echo "time_cpu_all: $CHECKOUT/results exists; time from an empty tree" >&2; exit 1; }
mkdir -p logs
commit=$(git rev-parse HEAD)
# shellcheck disable=SC2086  # OVERLAYS: several files
jobs=$(PYTHONPATH=$CHECKOUT "$ENV/bin/snakemake" "$TARGET" -n --cores 2 --configfile $OVERLAYS 2>/dev/null \
       | awk '$1 == "total" && !n {print $2; n = 1}')
load0=$(cut -d' ' -f1-3 /proc/loadavg); start=$(date -u +%FT%TZ); t0=$(date +%s.%N)
echo "time_cpu_all: $jobs jobs at $commit, start $start, load $load0"
rc=0
# shellcheck disable=SC2086
PYTHONPATH=$CHECKOUT /usr/bin/time -v -o logs/cpu_all.time "$ENV/bin/snakemake" "$TARGET" --cores 2 \
    --configfile $OVERLAYS > logs/cpu_all.snakemake.log 2>&1 || rc=$?
t1=$(date +%s.%N); load1=$(cut -d' ' -f1-3 /proc/loadavg)
"$ENV/bin/python" - "$OUT" <<EOF
import json, sys
from pathlib import Path

import pandas as pd

time_v = dict(line.strip().split(": ", 1) for line in Path("logs/cpu_all.time").read_text().splitlines()
              if ": " in line)
per_job = {}
for tsv in sorted(Path("benchmarks").rglob("*.tsv")) if Path("benchmarks").is_dir() else []:
    if "results" in tsv.parts:
        continue
    frame = pd.read_csv(tsv, sep="\t")
    per_job[str(tsv)] = round(float(frame["s"].iloc[-1]), 1)
record = {
    "what": "snakemake $TARGET --cores 2 --configfile $OVERLAYS, from an empty results tree",
    "commit": "$commit", "start": "$start", "returncode": $rc, "jobs": int("${jobs:-0}" or 0),
    "wall_s": round($t1 - $t0, 1), "wall_min": round(($t1 - $t0) / 60, 1),
    "peak_rss_gb": round(int(time_v.get("Maximum resident set size (kbytes)", 0)) / 2**20, 2),
    "load_before": "$load0", "load_after": "$load1", "cores": 2,
    "per_job_s": dict(sorted(per_job.items(), key=lambda kv: -kv[1])),
}
Path(sys.argv[1]).write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps({k: v for k, v in record.items() if k != "per_job_s"}, indent=1))
EOF
exit $rc
