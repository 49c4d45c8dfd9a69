# Sourced by .ci/run: installs munge and Slurm from Debian's packages if missing, starts two
# independent clusters (alpha and beta, three 8-GPU nodes each, GPUs as GRES on character
# devices) under /var/tmp/stratus-slurm, and exports STRATUS_TEST_SLURM for the test suite.
# `stop_slurm` ends them.
SLURM_BASE=/var/tmp/stratus-slurm
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null
fi
stop_slurm() { pkill -f "$SLURM_BASE/" 2>/dev/null || true; }
stop_slurm
sleep 1
rm -rf "$SLURM_BASE"
bash .ci/slurm-clusters.sh "$SLURM_BASE" >/dev/null
export STRATUS_TEST_SLURM="$SLURM_BASE"
