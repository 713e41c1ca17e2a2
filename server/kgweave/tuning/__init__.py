"""Hyperparameter search (``kgweave tune``, Optuna) and recipes that adapt to the graph.

- :mod:`~kgweave.tuning.space`: the searched settings, one table;
- :mod:`~kgweave.tuning.objective`: one trial (train, report validation MRR, keep the best);
- :mod:`~kgweave.tuning.study`: the stored, budgeted study;
- :mod:`~kgweave.tuning.report`: trials table, plots, recipe file;
- :mod:`~kgweave.tuning.recipes`: graph statistics and the recipe ``kgweave train`` picks.

Optuna is imported on first use only.
"""
