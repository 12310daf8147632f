"""The cluster's network namespace: everything of the cluster's network lives in it.

The bridge, the pod and Service addresses, kube-proxy's iptables rules and
``ip_forward`` are all inside one network namespace that this module creates
and deletes. The machine's own namespace gets only the host end of one veth
pair (deleted with the namespace), through which the host reaches the API
server at ``NODE_IP``. There is no default route out of the namespace: pods
reach each other, Services and the API server, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess

NETNS = "trading-cluster"
HOST_LINK = "tpc0"
NODE_LINK = "eth0"
HOST_IP = "10.250.0.1"
NODE_IP = "10.250.0.2"
LINK_PREFIX = 30
POD_CIDR = "10.251.0.0/24"
POD_GATEWAY = "10.251.0.1"
SERVICE_CIDR = "10.252.0.0/24"
KUBERNETES_SERVICE_IP = "10.252.0.1"
CNI_BRIDGE = "tpc-br0"
NETNS_PATH = pathlib.Path("/run/netns") / NETNS


class NetworkError(RuntimeError):
    """A network set-up step failed; the message has the command and its output."""


def _run(*cmd: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetworkError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def in_netns(argv: list[str]) -> list[str]:
    """``argv`` run in the cluster's network namespace (the machine's mount namespace is kept)."""
    return ["nsenter", f"--net={NETNS_PATH}", "--", *argv]


def exists() -> bool:
    return NETNS_PATH.exists()


def create() -> None:
    """The namespace, its veth link to the host, loopback, forwarding and bridge netfilter."""
    _run("ip", "netns", "add", NETNS)
    try:
        _run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_IP}/{LINK_PREFIX}", "dev", HOST_LINK)
        _run("ip", "link", "set", HOST_LINK, "up")
        ns = ("ip", "netns", "exec", NETNS)
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "addr", "add", f"{NODE_IP}/{LINK_PREFIX}", "dev", NODE_LINK)
        _run(*ns, "ip", "link", "set", NODE_LINK, "up")
        # Per-namespace settings: forwarding for pod traffic, and bridged traffic through iptables
        # so a Service's reply on the same bridge is translated back.
        # The pods' bridge, made here rather than by the CNI plugin so the namespace itself has a route
        # to Service addresses (kube-proxy rewrites them in OUTPUT, after the routing decision). With
        # no default route, nothing else leaves the namespace.
        _run(*ns, "ip", "link", "add", CNI_BRIDGE, "type", "bridge")
        _run(*ns, "ip", "addr", "add", f"{POD_GATEWAY}/{POD_CIDR.split('/')[1]}", "dev", CNI_BRIDGE)
        _run(*ns, "ip", "link", "set", CNI_BRIDGE, "up")
        _run(*ns, "ip", "route", "add", SERVICE_CIDR, "dev", CNI_BRIDGE, "src", POD_GATEWAY)
        _run(*ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        with contextlib.suppress(NetworkError):
            _run(*ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")
    except Exception:
        delete()
        raise


def delete() -> None:
    """Delete the namespace (its veth pair, bridge, addresses and iptables rules go with it)."""
    subprocess.run(["ip", "link", "del", HOST_LINK], capture_output=True)
    if exists():
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    # `ip netns del` leaves the mount point if something still holds it; remove what is left.
    if NETNS_PATH.exists():
        subprocess.run(["umount", "-l", str(NETNS_PATH)], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(NETNS_PATH)


def cni_config(ipam_dir: pathlib.Path) -> dict[str, object]:
    """The pod network: one bridge inside the namespace, addresses from ``POD_CIDR``."""
    return {
        "cniVersion": "0.4.0",
        "name": NETNS,
        "plugins": [
            {
                "type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
