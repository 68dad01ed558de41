# Before any job starts: `all` of a paper-scale configuration on a machine with no GPU gets one warning with the
# estimated CPU time and the CPU overlay to use instead (lpbert_core.runtime.cpu_estimate); other targets get none.
# Cluster submissions are left alone: their jobs run on GPU nodes, not on the machine that submits them; the command
# line is read by Snakemake's own parser, so a profile that sets the executor counts as one.
import sys


def warn_if_no_gpu_for_this_protocol():
    from lpbert_core.runtime.cpu_estimate import builds_all_locally, no_gpu_message
    from lpbert_core.runtime.gpu_slots import visible_gpu_ids

    if visible_gpu_ids() or not builds_all_locally(sys.argv):
        return
    message = no_gpu_message(config)
    if message:
        print(f"WARNING: {message}", file=sys.stderr)


warn_if_no_gpu_for_this_protocol()
