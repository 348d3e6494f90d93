"""The sweep service: the contract every stage shares (``contract``), the command line (``run``), the plan of
cells (``plan``), the stages before the trials (``stages``), the searcher and per-cell scheduler
(``searcher``), the trial (``trial``), the results table (``results``), Optuna storages
(``optuna_storage``) and the one module that calls Ray (``ray_adapter``)."""
