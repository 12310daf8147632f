"""RBAC checks by impersonation against the real API server.

A SelfSubjectAccessReview sent with Impersonate-User / Impersonate-Group
headers is exactly what `kubectl auth can-i --as=... --as-group=...` does,
without a kubectl process per question. The groups are the ones a real
ServiceAccount token carries, so bindings to e.g. system:serviceaccounts
count too.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import pathlib
import ssl
import tempfile
import urllib.parse

import yaml


@dataclasses.dataclass(frozen=True)
class Check:
    """One API call: ``verb`` on ``group/resource[/subresource]`` (``name``) in ``namespace``."""

    verb: str
    resource: str
    group: str = ""
    namespace: str = ""
    subresource: str = ""
    name: str = ""

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        res = f"{res}.{self.group}" if self.group else res
        where = f" in {self.namespace}" if self.namespace else " (cluster)"
        return f"{self.verb} {res}{'/' + self.name if self.name else ''}{where}"


class Impersonator:
    """Ask the API server what a ServiceAccount may do, as that ServiceAccount."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        with tempfile.TemporaryDirectory() as tmp:  # ssl wants files; they are read at once
            cert, key = pathlib.Path(tmp, "c.pem"), pathlib.Path(tmp, "k.pem")
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            self.context.load_cert_chain(str(cert), str(key))
        self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)

    def allowed(self, namespace: str, service_account: str, check: Check) -> bool:
        attrs = {k: v for k, v in dataclasses.asdict(check).items() if v}
        body = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {"resourceAttributes": attrs}})
        conn = self.conn
        conn.putrequest("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Impersonate-User", f"system:serviceaccount:{namespace}:{service_account}")
        for group in ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"):
            conn.putheader("Impersonate-Group", group)
        conn.endheaders(body.encode())
        resp = conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 201:
            raise AssertionError(f"SelfSubjectAccessReview failed ({resp.status}): {data}")
        return bool(data["status"].get("allowed"))

    def close(self) -> None:
        self.conn.close()
