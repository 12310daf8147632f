"""Developer tooling: the local control plane, the local process runtime and the demo.

Nothing here ships in the operator or worker images; it exists so that the
whole platform can run, and be tested against real parts, on a machine with
no cluster and no container engine.
"""
