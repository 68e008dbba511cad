"""summary.json's ``cluster`` entry: the SLURM job a run ran in, from its environment (only there).
The cluster itself is tested by `make test-cluster` (tests/cluster)."""
from kfac_bench.utils import cluster_job


def test_no_entry_outside_slurm():
    assert cluster_job({}) is None
    assert cluster_job({"SLURM_JOB_ID": ""}) is None


def test_array_task_ids_node_and_requeues():
    env = {"SLURM_JOB_ID": "18", "SLURM_ARRAY_JOB_ID": "17", "SLURM_ARRAY_TASK_ID": "1", "SLURMD_NODENAME": "n01",
           "SLURM_RESTART_COUNT": "2"}
    assert cluster_job(env) == {"scheduler": "slurm", "job_id": "18", "array_job_id": "17", "array_task_id": "1",
                                "node": "n01", "restart_count": 2}
    assert cluster_job({"SLURM_JOB_ID": "5", "SLURM_NODELIST": "n02"}) == {
        "scheduler": "slurm", "job_id": "5", "node": "n02", "restart_count": 0}
