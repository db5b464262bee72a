"""Benchmarks of the course's code on this machine, each against the baseline a learner would write.

- ``train``: bench-train, the seed article's training pipeline against the course's
  (``pipelines`` trains each one, ``flops`` measures the peaks that MFU is computed from);
- ``generate``: bench-generate, the evaluation generator against plain ``model.generate``;
- ``server``: bench-server, the local server's chat throughput, idle and while a job trains;
- ``codeexec``: bench-codeexec, what one sandboxed test run costs.
"""
