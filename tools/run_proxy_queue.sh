#!/usr/bin/env bash
# Driver of the CPU proxy (issue #25, configs/proxy.yaml): the given readings one at a time, in the given order, each
# as dataset/run (run instances too: WN18RR/proxy-plus.s43; a run's n-hop re-ranked test: WN18RR/proxy-plus/rerank),
# then the partial table of what has finished.
#   nohup tools/run_proxy_queue.sh WN18RR/proxy-plus WN18RR/proxy-plus-lr2e4 FB15k-237/proxy-floor \
#       > logs/proxy-queue.nohup.log 2>&1 &
# Run it from a git worktree of its own (`git worktree add ../proxy -B proxy-runs HEAD`), so code edits in main do
# not change a run half-way: a run's checkpoint is resumed only under the settings and code layout that wrote it.
# Resumable: a reading whose metrics.json exists is skipped; a killed one resumes from its checkpoint
# (--rerun-incomplete); `--rerun-triggers mtime`, so an edit of config.yaml that keeps today's behaviour (a new switch
# that defaults off) does not rerun finished readings. After each reading, tools/collect_proxy.py copies the finished
# runs' records into measurements/proxy/ (PROXY_OUT: e.g. the main checkout's) and rebuilds the partial table there.
# PROXY_CORES (default 2): --cores of the Snakemake calls.
set -u -o pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the code of this tree, not the editable install's
[ $# -gt 0 ] || { echo "usage: $0 DATASET/RUN [DATASET/RUN ...]" >&2; exit 2; }
echo "queue: start $(date -u +%FT%TZ) at $(git rev-parse --short HEAD): $*"
for item in "$@"; do
  dataset=${item%%/*} run=${item#*/}  # run: a run instance, or one with a sub-target (proxy-plus/rerank)
  target=results/$dataset/runs/$run/metrics.json
  if [ -e "$target" ]; then
    echo "queue: $item done already"
    continue
  fi
  echo "queue: $item start $(date -u +%FT%TZ)"
  snakemake "$target" --cores "${PROXY_CORES:-2}" --rerun-incomplete --rerun-triggers mtime \
    --configfile configs/proxy.yaml
  rc=$?  # before the echo: its $(date) would reset $?
  echo "queue: $item end $(date -u +%FT%TZ) rc=$rc"
  python tools/collect_proxy.py --root . --out "${PROXY_OUT:-measurements/proxy}" | tail -1
done
echo "queue: end $(date -u +%FT%TZ)"
