#!/usr/bin/env bash
# A local Slurm cluster on this machine, to try the Slurm profile and to test it: Debian's
# slurm-wlm + munge (+ slurmdbd and MariaDB for accounting), daemons started directly (no
# systemd), fake GPUs declared in gres.conf so GPU rules are really scheduled. Needs root.
#
#   workflow/scripts/local-slurm.sh start [--accounting] [--gpus N] [--nodes N] [--account NAME]
#   workflow/scripts/local-slurm.sh stop | status | install [--accounting]
#
# `start` installs missing packages, writes /etc/slurm/{slurm,gres,slurmdbd}.conf, (re)starts the
# daemons whose configuration changed and waits until every node is idle; run again with the same
# options it does nothing (a few tenths of a second). Partitions `gpu` (default) and `cpu` hold
# every node, as in workflow/profiles/slurm. With --nodes N > 1, N slurmd run on this host
# (node1..nodeN, each with the host's CPUs and GPUs): a multi-node allocation for launch tests.
# Without --accounting sacct has no records: submit with `--slurm-status-command squeue`.
set -euo pipefail

CMD=${1:-start}
[ $# -gt 0 ] && shift
ACCOUNTING=0 GPUS=2 NODES=1 ACCOUNT=flame
while [ $# -gt 0 ]; do
  case $1 in
    --accounting) ACCOUNTING=1 ;;
    --no-accounting) ACCOUNTING=0 ;;
    --gpus) GPUS=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --account) ACCOUNT=$2; shift ;;
    *) echo "local-slurm.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

ETC=/etc/slurm
LOG=/var/log/slurm
FAKE_GPU_FILES=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
log() { echo "local-slurm: $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || { echo "local-slurm.sh must run as root (it installs packages and starts daemons)" >&2; exit 1; }
}

install_packages() {
  local pkgs=(slurm-wlm munge) missing=()
  [ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {  # stop the daemon whose pid file is $1, wait until it has gone
  alive "$1" || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local n=$(( $1 * 10 )) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "local-slurm: timed out waiting for $what" >&2
  tail -n 20 "$LOG"/*.log >&2 2>/dev/null || true
  exit 1
}

MARK="written by workflow/scripts/local-slurm.sh"

ours() {  # a Slurm config this script did not write belongs to a real cluster: leave it alone
  [ ! -e "$1" ] || grep -q "$MARK" "$1" || {
    echo "local-slurm.sh: $1 was not written by this script (a real cluster?); not touching it" >&2
    exit 1
  }
}

write_if_changed() {  # write_if_changed FILE MODE < content; prints "changed" when it changed
  ours "$1"
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return; fi
  install -m "$2" "$tmp" "$1" && rm -f "$tmp"
  echo changed
}

slurm_conf() {
  local host cpus mem gres=""
  host=$(hostname)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100 ))
  [ "$GPUS" -gt 0 ] && gres="Gres=gpu:$GPUS"
  cat <<CONF
# written by workflow/scripts/local-slurm.sh
ClusterName=flame
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# finished jobs stay visible to squeue for 10 minutes (the plugin's squeue status check)
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
JobCompType=jobcomp/none
GresTypes=gpu
CONF
  if [ "$ACCOUNTING" = 1 ]; then
    echo "AccountingStorageType=accounting_storage/slurmdbd"
    echo "AccountingStorageHost=localhost"
    echo "AccountingStorageTRES=gres/gpu"
    echo "JobAcctGatherType=jobacct_gather/linux"
  else
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobAcctGatherType=jobacct_gather/none"
  fi
  local i port
  for i in $(seq "$NODES"); do
    port=""
    [ "$NODES" -gt 1 ] && port="Port=$(( 17000 + i ))"
    echo "NodeName=node$i NodeHostname=$host NodeAddr=127.0.0.1 $port CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN"
  done
  echo "PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  echo "PartitionName=cpu Nodes=ALL MaxTime=INFINITE State=UP"
}

gres_conf() {
  echo "# written by workflow/scripts/local-slurm.sh: fake GPU devices (scheduling only)"
  local i
  [ "$GPUS" -le ${#FAKE_GPU_FILES[@]} ] || { echo "local-slurm.sh: at most ${#FAKE_GPU_FILES[@]} fake GPUs" >&2; exit 2; }
  for (( i = 0; i < GPUS; i++ )); do echo "Name=gpu File=${FAKE_GPU_FILES[$i]}"; done
}

slurmdbd_conf() {
  cat <<CONF
# written by workflow/scripts/local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
}

start_munge() {
  mkdir -p /run/munge && chown munge:munge /run/munge
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_accounting() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mysqladmin ping >/dev/null 2>&1; then
    setsid runuser -u mysql -- /usr/sbin/mariadbd --pid-file=/run/mysqld/mysqld.pid \
      >"$LOG/mariadb.log" 2>&1 < /dev/null &
    wait_for 30 mariadb mysqladmin ping
  fi
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  [ "$1" = changed ] && stop_pid /run/slurmdbd.pid
  alive /run/slurmdbd.pid || /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw flame || sacctmgr -i add cluster flame >/dev/null
  sacctmgr -n list account format=account | grep -qw "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" cluster=flame >/dev/null
  sacctmgr -n list user format=user | grep -qw root \
    || sacctmgr -i add user root account="$ACCOUNT" cluster=flame >/dev/null
  sacctmgr -n list assoc format=account,user | grep -q "$ACCOUNT.*root" \
    || sacctmgr -i add user root account="$ACCOUNT" cluster=flame >/dev/null
}

nodes_idle() {  # every node of the gpu partition is idle
  local states
  states=$(sinfo -h -N -p gpu -o %T 2>/dev/null) || return 1
  [ "$(grep -c '^idle$' <<<"$states")" = "$NODES" ] && [ "$(wc -l <<<"$states")" = "$NODES" ]
}

start() {
  need_root
  install_packages
  mkdir -p "$ETC" "$LOG" /var/spool/slurmctld /var/spool/slurmd
  local conf gres dbd="" restart=0
  conf=$(slurm_conf | write_if_changed "$ETC/slurm.conf" 644)
  gres=$(gres_conf | write_if_changed "$ETC/gres.conf" 644)
  [ -n "$conf$gres" ] && restart=1
  start_munge
  if [ "$ACCOUNTING" = 1 ]; then
    dbd=$(slurmdbd_conf | write_if_changed "$ETC/slurmdbd.conf" 600)
    start_accounting "${dbd:-same}"
  else
    stop_pid /run/slurmdbd.pid
  fi
  local pids=(/run/slurmctld.pid) i
  for i in $(seq "$NODES"); do pids+=("/run/slurmd-node$i.pid"); done
  for p in "${pids[@]}"; do alive "$p" || restart=1; done
  if [ "$restart" = 1 ]; then
    log "starting slurmctld and $NODES slurmd (accounting: $ACCOUNTING, fake GPUs per node: $GPUS)"
    for p in /run/slurmd-*.pid /run/slurmctld.pid; do stop_pid "$p"; done
    /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
    for i in $(seq "$NODES"); do mkdir -p "/var/spool/slurmd/node$i"; /usr/sbin/slurmd -N "node$i"; done
    for i in $(seq "$NODES"); do scontrol update nodename="node$i" state=resume >/dev/null 2>&1 || true; done
  fi
  wait_for 60 "idle nodes" nodes_idle
}

stop() {
  need_root
  ours "$ETC/slurm.conf"
  local p
  for p in /run/slurmd-*.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid \
           /run/munge/munged.pid; do
    stop_pid "$p"
  done
}

case $CMD in
  start) start ;;
  stop) stop ;;
  install) need_root; install_packages ;;
  status) sinfo -N -o "%N %P %T %c %m %G" && { [ "$ACCOUNTING" = 0 ] || sacctmgr -n list assoc format=cluster,account,user; } ;;
  *) echo "usage: local-slurm.sh start|stop|status|install [options]" >&2; exit 2 ;;
esac
