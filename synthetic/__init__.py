"""The synthetic world: a hidden ground truth, realistic ad logs drawn from it, and traffic.

Not part of the production platform: it stands in for the bidder's and the click
tracker's logs, and knows the true click probability of every impression it writes.

* :mod:`.config` - :class:`~synthetic.config.GeneratorConfig`, everything that determines the output.
* :mod:`.vocabulary`, :mod:`.world` - the entities (users, sites, placements, advertisers,
  campaigns, creatives) and the draw of impressions from them.
* :mod:`.truth` - the ground-truth click model as pure functions (evaluate, (de)serialize).
* :mod:`.effects` - the truth of a world: :func:`~synthetic.effects.build_truth_model`, and its
  vectorized evaluation.
* :mod:`.hours` - one generated hour's draws, shared by the two writers below.
* :mod:`.logs` - :func:`~synthetic.logs.generate_logs`: impression, click and truth files with
  faults and duplicates.
* :mod:`.frame` - :func:`~synthetic.frame.generate_frame`: the same impressions as one Arrow table.
* :mod:`.sample` - generated traffic and a registered model for tests, benchmarks and the demo.
* :mod:`.loadgen` - the async HTTP load generator for the bidder's endpoint.

Measurement notes: ``docs/synthetic.md``.
"""
