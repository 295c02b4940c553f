"""The pipeline: typed job specs (:mod:`.spec`) and the one runner of their steps (:mod:`.runner`, :mod:`.steps`),
grids of folds × seeds × methods (:mod:`.grid`) and runs side by side on the cluster (:mod:`.parallel`).

``emonet jobs run``, a job submitted to a Ray cluster and ``emonet demo`` all run specs through
:func:`emonet_dist.pipeline.runner.run_spec`; the demo's spec ships in ``emonet_dist/specs/demo_job.yaml``.
"""
