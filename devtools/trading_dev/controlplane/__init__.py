"""A real local Kubernetes control plane (kube-apiserver + etcd) built from Go modules."""
