#!/usr/bin/env bash
# Usage: slurm-clusters.sh BASE_DIR. Needs root, munge and slurm-wlm (see .ci/slurm.sh).
# Two independent Slurm clusters on this host, three nodes of 8 GPUs each: alpha (slurmctld
# port 6917, slurmd 6918-6920) and beta (6937, 6938-6940).
set -euo pipefail
BASE=${1:-/var/tmp/stratus-slurm}
HOST=$(hostname)
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su munge -s /bin/sh -c "/usr/sbin/munged" || /usr/sbin/munged --force
for i in 0 1 2 3 4 5 6 7; do [ -e /dev/stratus-gpu$i ] || mknod /dev/stratus-gpu$i c 1 3; done
start_cluster() {
  local name=$1 cport=$2 dport=$3
  local d=$BASE/$name
  mkdir -p $d/state $d/spool $d/log
  cat > $d/slurm.conf <<CONF
ClusterName=$name
SlurmctldHost=$HOST
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd-%n.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MinJobAge=600
InactiveLimit=0
KillWait=5
MessageTimeout=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=${name}1 NodeHostname=$HOST Port=$dport CPUs=2 RealMemory=2000 Gres=gpu:8 State=UNKNOWN
NodeName=${name}2 NodeHostname=$HOST Port=$((dport+1)) CPUs=2 RealMemory=2000 Gres=gpu:8 State=UNKNOWN
NodeName=${name}3 NodeHostname=$HOST Port=$((dport+2)) CPUs=2 RealMemory=2000 Gres=gpu:8 State=UNKNOWN
PartitionName=main Nodes=${name}[1-3] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  cat > $d/gres.conf <<CONF
AutoDetect=off
NodeName=${name}[1-3] Name=gpu File=/dev/stratus-gpu[0-7]
CONF
  SLURM_CONF=$d/slurm.conf /usr/sbin/slurmctld -f $d/slurm.conf
  for n in 1 2 3; do
    mkdir -p $d/spool/${name}$n
    SLURM_CONF=$d/slurm.conf /usr/sbin/slurmd -f $d/slurm.conf -N ${name}$n
  done
}
start_cluster alpha 6917 6918
start_cluster beta 6937 6938
# Wait until every node of both clusters is idle.
for c in alpha beta; do
  for _ in $(seq 1 60); do
    if [ "$(SLURM_CONF=$BASE/$c/slurm.conf sinfo -h -o '%t' 2>/dev/null)" = "idle" ]; then break; fi
    sleep 1
  done
  SLURM_CONF=$BASE/$c/slurm.conf sinfo
done
