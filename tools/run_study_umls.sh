#!/usr/bin/env bash
# Driver of the UMLS reading study (configs/study-umls.yaml): the pre-training, then every study run one at a time in
# the overlay's order (seed 42 of every reading, then seed 43, then the study30 runs), then the summary.
# Resumable: a run whose metrics.json exists is skipped without asking Snakemake, and Snakemake runs with
# `--rerun-triggers mtime`, so a later edit of config.yaml's finetune section (new switches that default to today's
# behaviour) does not rerun finished runs. A killed run resumes from its checkpoint (--rerun-incomplete).
# After each run: metrics.json, train_log.csv, the Snakemake benchmark and provenance.json (git commit at the run's
# start, uncommitted code files, times) are copied to measurements/study_umls/<run>/ and committed, with the
# interim summary of the finished runs (measurements/study_umls/summary.*).
#   nohup tools/run_study_umls.sh > logs/study-umls.nohup.log 2>&1 &
set -u -o pipefail
# STUDY_CORES / BEYOND_CORES (default 2): --cores of the Snakemake calls. Two PyTorch jobs with 2 threads each on 2
# cores ran 14x slower per step than one alone (oversubscription); run two drivers side by side with 1 core each.
cd "$(dirname "$0")/.."
. .venv/bin/activate
# the code of this tree, not the editable install's (the study may run from its own git worktree while main changes)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the target goes first: --configfile (like --resources) takes several values and would swallow it
sm() { snakemake "$1" --cores "${STUDY_CORES:-2}" --rerun-incomplete --rerun-triggers mtime --configfile configs/cpu.yaml configs/study-umls.yaml; }
OUT=measurements/study_umls
DATASET=umls

commit_paths() {  # commit only the given paths (others' staged work stays staged); retry on a busy index
  local msg=$1; shift
  for attempt in 1 2 3 4 5; do
    git add -- "$@" && git commit -q -m "$msg" -- "$@" && return 0
    sleep 7
  done
  echo "driver: commit failed: $msg" >&2
  return 1
}

echo "driver: start $(date -u +%FT%TZ) at $(git rev-parse HEAD)"
sm results/$DATASET/pretrain/mem-mrm-mlm/model || { echo "driver: pre-training failed"; exit 1; }

# the run list is read again before every run, so runs appended to the overlay while the driver works are picked up
runs_list() { python -c "import yaml; print(' '.join(r for r in yaml.safe_load(open('configs/study-umls.yaml'))['runs'] if r.startswith(('study-', 'study30-'))))"; }
FAILED=" "
next_run() {
  for r in $(runs_list); do
    case "$FAILED" in *" $r "*) continue ;; esac
    if [ -f "results/$DATASET/runs/$r/metrics.json" ] && [ -f "$OUT/$r/metrics.json" ]; then continue; fi
    echo "$r"; return 0
  done
  return 1
}
while run=$(next_run); do
  metrics=results/$DATASET/runs/$run/metrics.json
  if [ ! -f "$metrics" ]; then
    start=$(date -u +%FT%TZ); t0=$(date +%s)
    head=$(git rev-parse HEAD)
    dirty=$(git status --porcelain -- lpbert_core workflow_scripts rules config.yaml schemas | tr '\n' ';')
    diffsha=$(git diff HEAD -- lpbert_core workflow_scripts rules config.yaml schemas | sha256sum | cut -c1-16)
    echo "driver: $run start $start at $head (uncommitted: ${dirty:-none})"
    ok=0
    for attempt in 1 2 3; do  # another Snakemake instance holding a lock on a shared file: wait and retry
      if sm "$metrics" 2>&1 | tee /tmp/study-umls-last.log; then ok=1; break; fi
      grep -q "cannot be locked" /tmp/study-umls-last.log || break
      echo "driver: $run locked by another Snakemake instance; retry in 120 s"; sleep 120
    done
    if [ "$ok" != 1 ] || [ ! -f "$metrics" ]; then
      echo "driver: $run FAILED $(date -u +%FT%TZ)"; FAILED="$FAILED$run "; continue
    fi
    mkdir -p "$OUT/$run"
    python - "$OUT/$run/provenance.json" "$run" "$start" "$(date -u +%FT%TZ)" "$(( $(date +%s) - t0 ))" \
      "$head" "$dirty" "$diffsha" <<'PY'
import json, sys
path, run, start, end, wall, head, dirty, diffsha = sys.argv[1:]
json.dump({"run": run, "started": start, "finished": end, "driver_wall_s": int(wall), "git_commit": head,
           "uncommitted_code_files": [d for d in dirty.split(";") if d.strip()],
           "uncommitted_diff_sha256_16": diffsha,
           "command": f"snakemake results/umls/runs/{run}/metrics.json --cores 2 --rerun-incomplete --rerun-triggers mtime "
                      "--configfile configs/cpu.yaml configs/study-umls.yaml"},
          open(path, "w"), indent=2)
PY
  fi
  mkdir -p "$OUT/$run"
  cp "$metrics" "results/$DATASET/runs/$run/train_log.csv" "$OUT/$run/"
  cp "benchmarks/$DATASET/finetune/$run.tsv" "$OUT/$run/finetune_benchmark.tsv" 2>/dev/null || true
  [ -f "$OUT/$run/provenance.json" ] || echo '{"git_commit": null, "note": "run finished before the driver saw it"}' > "$OUT/$run/provenance.json"
  python -m lpbert_core.report.study "$OUT" --out "$OUT/summary" || echo "driver: interim summary failed"
  commit_paths "UMLS study: $run finished (metrics, train log, provenance, interim summary)" "$OUT/$run" "$OUT/summary.md" "$OUT/summary.csv" "$OUT/summary.json" \
    && echo "driver: $run committed $(date -u +%FT%TZ)"
done

echo "driver: runs done $(date -u +%FT%TZ); summary"
# The study target only when it needs nothing but its summary job: runs finished before a later rebuild of their
# inputs (tokens, pre-training) are older than those inputs, and even mtime triggers would retrain them (2026-11-26:
# it began retraining study-raw-s42). The committed summary of the finished runs is the study's result either way.
retrain=$(snakemake results/study/$DATASET/summary.md -n --cores 1 --rerun-incomplete --rerun-triggers mtime \
  --configfile configs/cpu.yaml configs/study-umls.yaml 2>&1 | awk '/^Job stats/,/^total/' \
  | grep -E '^(download|join_text|tokenize|pretrain|finetune|score) ' | sort -u | tr -s ' ' | tr '\n' ';')
if [ -n "$retrain" ]; then
  echo "driver: the study target would rerun jobs ($retrain) whose inputs are newer than the finished runs;" \
       "not built. The summary of the finished runs: $OUT/summary.md"
else
  sm results/study/$DATASET/summary.md && echo "driver: summary written"
fi
