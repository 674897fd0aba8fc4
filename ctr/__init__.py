"""The application root: the ``ctr`` command and the demo, above every stage.

It wires the stages together with ordinary imports; no stage imports it.
"""
