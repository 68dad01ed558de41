# Before any job starts: `all` of a paper-scale configuration on a machine with no GPU gets one warning with the
# estimated CPU time and the CPU overlay to use instead (lpbert_core.runtime.cpu_estimate); other targets get none.
# Cluster submissions are left alone: their jobs run on GPU nodes, not on the machine that submits them.
import sys


def warn_if_no_gpu_for_this_protocol():
    from lpbert_core.runtime.cpu_estimate import asks_for_all, no_gpu_message
    from lpbert_core.runtime.gpu_slots import visible_gpu_ids

    argv = " ".join(sys.argv)
    if "slurm" in argv or "--executor" in argv or " -e " in argv or "--lint" in argv or visible_gpu_ids():
        return
    if not asks_for_all(sys.argv):
        return
    message = no_gpu_message(config)
    if message:
        print(f"WARNING: {message}", file=sys.stderr)


warn_if_no_gpu_for_this_protocol()
