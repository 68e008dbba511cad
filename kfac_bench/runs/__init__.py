"""Training runs, the harness's core: the training loop (:mod:`.train`), what a run folder records and
who may write it (:mod:`.folder`), a sweep's outcomes (:mod:`.sweep_outcomes`) and how many runs share
a machine (:mod:`.concurrency`)."""
