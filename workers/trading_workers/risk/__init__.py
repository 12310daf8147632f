"""Portfolio risk: pure figures (``metrics``), limits and actions (``engine``), status writes (``status``),
and the risk worker role (``worker``)."""
