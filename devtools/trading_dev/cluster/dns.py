"""The node's DNS add-on: CoreDNS, built from its Go module, run as a Deployment like kube-dns.

The chart and its ``helm test`` name Services (``trading-redis``,
``kubernetes.default.svc``, the operator's metrics Service), so pods need
cluster DNS. CoreDNS is a static binary; its image is that binary alone (packed
by ``oci``, as the pause image). It listens on an unprivileged port (1053) so it
runs under the restricted Pod Security profile, and the ``kube-dns`` Service
maps port 53 to it at ``DNS_IP``, which the kubelet hands to every pod. There
is no upstream: names outside the cluster do not resolve (nothing outside the
cluster's network namespace is reachable anyway).
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile
from typing import Any

from trading_dev.cluster import images, network, oci
from trading_dev.controlplane import build

DNS_IP = network.SERVICE_CIDR.rsplit(".", 1)[0] + ".10"
IMAGE = f"trading.dev/coredns:{build.COREDNS_VERSION.lstrip('v')}"
NAMESPACE = "kube-system"
COREFILE = """.:1053 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
"""


def archive() -> pathlib.Path:
    binary = build.build_coredns()
    content = binary.read_bytes()
    key = hashlib.sha256(content + IMAGE.encode()).hexdigest()[:16]
    out = images.images_dir() / f"coredns-{key}.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="image-coredns-") as tmp:
        layer = pathlib.Path(tmp) / "layer.tar"
        oci.layer_from_files({"coredns": (content, 0o755)}, layer, dirs=["tmp", "etc/coredns"])
        oci.write_archive(layer, oci.ImageConfig(entrypoint=["/coredns"], user="65532:65532"), IMAGE, out)
    return out


def manifests() -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": NAMESPACE, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "coredns", "priorityClassName": "system-cluster-critical",
                "dnsPolicy": "Default",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "coredns", "image": IMAGE, "imagePullPolicy": "Never",
                    "args": ["-conf", "/etc/coredns/Corefile"],
                    "ports": [{"name": "dns", "containerPort": 1053, "protocol": "UDP"},
                              {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                    "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                }],
                "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
            }},
        }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": labels},
         "spec": {"selector": labels, "clusterIP": DNS_IP, "ports": [
             {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"}]}},
    ]
