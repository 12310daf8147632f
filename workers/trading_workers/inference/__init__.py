"""The torch model strategy: a tiny MLP that scores the next return of each symbol.

Layers, from pure to impure:

- ``model``     — the network, its artifact format and where artifacts come from (no runtime, no I/O but files);
- ``synthetic`` — the seeded price process the default model is trained on;
- ``predictor`` — batched inference on a device with preallocated buffers, and the guard
  (NaN outputs, slow batches) that asks for Reducing;
- ``train``     — the documented command that produces ``models/default.pt``;
- ``retrain``   — ``trading-platform train``: the training Job's command (a new artifact, offered to the rollout);
- ``worker``    — the inference worker loop, over a minimal runtime interface (``InferenceRuntime``), and its
  half of the staged rollout (``Rollout``: serve what ``status.modelRollout`` says, report quality);
- ``role``      — the role's ``run(runtime)``: that interface over the bus and the session's status.

Only ``role`` knows about the worker runtime; everything else is testable and benchmarkable alone.
"""
