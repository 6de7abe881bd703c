"""The composition root: the one place that builds a running pinlife from
its settings (or from a test's own parts), and the only package that
imports every layer.

- instance.py  the parts of one instance: store, runner (writer thread or
               process), app, audit, maintenance, metrics; the policy from
               the offices file and access rules; the checks a start makes
               (schema, key check values, file modes);
- serving.py   an instance behind its gRPC endpoint (service/api/server.py):
               start, health, stop in order, and `serve` for `pinlife serve`.
"""
