"""A real single-node Kubernetes cluster on this machine (``make cluster``), and its images.

The API-server-only control plane for fast tests stays in ``trading_dev.controlplane``.
"""
