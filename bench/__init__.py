"""pyauthz's benchmark, a package run from the repo root: ``python3 -m bench.run`` (see README.md).

Other entry points: ``bench.inprocess``, ``bench.worst_inputs``, ``bench.capture``,
``bench.workload``, and the processes run.py starts, ``bench.allow_all`` and
``bench.dockerd_standin``.
"""
