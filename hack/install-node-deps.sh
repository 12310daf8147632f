#!/usr/bin/env bash
# Install what a real single-node cluster needs from Debian's packages, if missing:
# containerd + runc (the container runtime), the CNI plugins (bridge, host-local, loopback,
# portmap), iptables + conntrack (kube-proxy), iproute2 (the cluster's network namespace),
# debootstrap (the images' root filesystem) and util-linux (unshare, nsenter).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need+=(containernetworking-plugins)
have iptables || need+=(iptables)
have conntrack || need+=(conntrack)
have ip || need+=(iproute2)
have debootstrap || need+=(debootstrap)
have unshare || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages for the real node: ${need[*]}" >&2
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
