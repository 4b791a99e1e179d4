from shared.planning.automatic import does_automatic_work, may_run


def test_a_paused_mapping_runs_only_work_of_a_job() -> None:
    assert does_automatic_work("running") and not does_automatic_work("paused")
    assert may_run("running", None) and may_run("running", "")
    assert may_run("paused", "job-1")
    assert not may_run("paused", None) and not may_run("paused", "")
