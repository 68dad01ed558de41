#!/usr/bin/env bash
# The beyond-the-paper runs of issue #13 at CPU scale (configs/cpu.yaml), one group after another, each timed:
# measurements/beyond_cpu/<group>.json (targets, wall seconds, load average before/after, git commit) and the
# metrics of every run copied beside it. Resumable: a group whose JSON exists is skipped; a group killed midway resumes
# from its finished jobs and training checkpoints (--rerun-incomplete), and its JSON then says so (`resumed`, the first
# start): its wall_s counts the last attempt only. `--rerun-triggers mtime`, as the study driver: a run finished in
# an earlier group (umls lpbert-plus before the plus group) is kept across later code edits; the commit each run
# was made at is in the JSON of the group that made it (`git_commit`).
#   nohup tools/run_beyond_cpu.sh [group ...] > logs/beyond-cpu.nohup.log 2>&1 &
# Groups: umls-plus (UMLS lpbert-plus), wn18rr-v1 / fb237-v1 (an inductive pair: its pre-training and the three runs of
# tables.inductive.rows, both protocols), plus (the plus table: paper reading and lpbert-plus on the three datasets),
# plus-<change> (one UMLS tuning run of configs/plus-umls.yaml: results/umls/runs/plus-<change>, its own timing).
set -u -o pipefail
# STUDY_CORES / BEYOND_CORES (default 2): --cores of the Snakemake calls. Two PyTorch jobs with 2 threads each on 2
# cores ran 14x slower per step than one alone (oversubscription); run two drivers side by side with 1 core each.
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=measurements/beyond_cpu
mkdir -p "$OUT"

targets() {
  case "$1" in
    umls-plus) echo results/umls/runs/lpbert-plus/metrics.json ;;
    wn18rr-v1|fb237-v1)
      local ind; ind=$( [ "$1" = wn18rr-v1 ] && echo WN18RR_v1_ind || echo fb237_v1_ind )
      for run in lpbert t4-none lpbert-plus; do
        echo "results/$ind/runs/$run/metrics.json results/$ind/runs/$run/candidates/metrics.json"
      done ;;
    plus)  # the table and, named too so that their metrics land in the group's JSON, the runs it reads
      echo results/tables/plus.md
      for ds in umls WN18RR FB15k-237; do echo "results/$ds/runs/lpbert/metrics.json results/$ds/runs/lpbert-plus/metrics.json"; done ;;
    inductive) echo results/tables/inductive.md ;;
    plus-*) echo "results/umls/runs/$1/metrics.json" ;;
    *) echo "unknown group $1" >&2; return 1 ;;
  esac
}

for group in "${@:-umls-plus wn18rr-v1 fb237-v1 plus inductive}"; do
  for g in $group; do
    [ -f "$OUT/$g.json" ] && { echo "beyond: $g done already"; continue; }
    t=$(targets "$g") || exit 1
    load0=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date +%s); start=$(date -u +%FT%TZ)
    marker="$OUT/.$g.started"
    if [ -f "$marker" ]; then first=$(cat "$marker"); resumed=true; else first=$start; resumed=false; echo "$start" > "$marker"; fi
    echo "beyond: $g start $start (resumed: $resumed): $t"
    # shellcheck disable=SC2086
    overlays="configs/cpu.yaml"
    case "$g" in plus-*) overlays="configs/cpu.yaml configs/plus-umls.yaml" ;; esac
    # shellcheck disable=SC2086
    if snakemake $t --cores "${BEYOND_CORES:-2}" --rerun-incomplete --rerun-triggers mtime --configfile $overlays; then
      wall=$(( $(date +%s) - t0 ))
      OVERLAYS="$overlays" FIRST_START="$first" RESUMED="$resumed" python - "$OUT/$g.json" "$g" "$start" "$wall" "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git rev-parse HEAD)" $t <<'PY'
import json, os, sys
from pathlib import Path
path, group, start, wall, load0, load1, commit, *targets = sys.argv[1:]
metrics = {}
for t in targets:
    p = Path(t)
    if p.name == "metrics.json" and p.exists():
        m = json.loads(p.read_text())
        metrics[t] = {"both": m["metrics"]["both"], "leaky": m.get("leaky", False)}
json.dump({"group": group, "targets": targets, "started": start, "wall_s": int(wall),
           "loadavg_before": load0, "loadavg_after": load1, "git_commit": commit, "cores": int(os.environ.get("BEYOND_CORES", "2")),
           "config": os.environ.get("OVERLAYS", "configs/cpu.yaml"), "metrics": metrics,
           "resumed": os.environ.get("RESUMED") == "true", "first_started": os.environ.get("FIRST_START", start),
           "note": "2 CPU cores shared with the UMLS reading study running in the background unless the load "
                   "average before says otherwise: wall times are upper bounds"},
          open(path, "w"), indent=2)
PY
      case "$g" in plus-*)  # a tuning run: its train log (dev metrics by epoch: the selection) beside the timing
        mkdir -p "$OUT/$g" && cp "results/umls/runs/$g/metrics.json" "results/umls/runs/$g/train_log.csv" "$OUT/$g/" ;;
      esac
      rm -f "$marker"
      echo "beyond: $g done in ${wall}s"
    else
      echo "beyond: $g FAILED"
    fi
  done
done
