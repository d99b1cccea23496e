"""The engines pruning passes share (no pass is registered here).

* ``unstructured``: masks, global ranking, one-shot and gradual schedules around ``Scorer``s;
* ``fisher``: oBERT's masked-gradient Fisher inverses and its ``OBSScorer``;
* ``speedup``: the measured-speedup lab of the structured passes (latency table, check, family);
* ``masks``: ``MaskKeeper``, the training callback that keeps pruned weights at zero.
"""
