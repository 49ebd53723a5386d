#!/usr/bin/env bash
# Mount an NFS export (e.g. Amazon EFS) at MOUNTPOINT on this node: the shared filesystem that
# `ito-sweeps sweep --storage` needs on a multi-node cluster (Ray's sweep state and checkpoints), and a
# place for training shards. Run on every node by cluster.yaml's setup_commands; idempotent. Skipped while
# SOURCE is still the FS_ID placeholder. The file system's mount targets must accept NFS (TCP 2049) from
# the cluster's security group.
#   usage: mount_shared.sh NFS_SOURCE MOUNTPOINT   e.g. fs-0123abcd.efs.us-west-2.amazonaws.com:/ /mnt/shared
set -euo pipefail

SOURCE="${1:?usage: mount_shared.sh NFS_SOURCE MOUNTPOINT}"
MOUNTPOINT="${2:?usage: mount_shared.sh NFS_SOURCE MOUNTPOINT}"

case "$SOURCE" in
  FS_ID*) echo "mount_shared: no shared filesystem configured in cluster.yaml (FS_ID placeholder); skipping" >&2
          exit 0 ;;
esac
if mountpoint -q "$MOUNTPOINT"; then
  exit 0
fi
command -v mount.nfs4 >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q nfs-common; }
sudo mkdir -p "$MOUNTPOINT"
sudo mount -t nfs4 -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport \
  "$SOURCE" "$MOUNTPOINT"
sudo chown "$(id -u):$(id -g)" "$MOUNTPOINT"
