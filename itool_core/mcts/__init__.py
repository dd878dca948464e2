"""Step-level Monte Carlo tree search (§4.3 of the paper) and preference-pair mining.

The search reaches the model only through the :class:`~itool_core.mcts.search.SearchPolicy` callables
(propose candidate steps with log-probs, roll out, self-evaluate), so it is tested on toy environments and
hand-built trees, and runs on any engine.
"""
