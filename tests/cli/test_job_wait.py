"""job_wait: a Ray job counts as a success only when its status says SUCCEEDED (#24 item 2).

``FakeJobs`` stands in for ``ray.job_submission.JobSubmissionClient`` (the four methods
job_wait calls), with a scripted sequence of statuses, and the sleep and clock are fake:
a deterministic stand-in for the head and for time, so no Ray head starts and no test waits.
"""
import io
import signal
from types import SimpleNamespace

import pytest

from prpo_openrlhf.cli.job_wait import EXIT_FAILED, EXIT_UNREACHABLE, wait_for_job


class FakeJobs:
    """Each ``get_job_info`` call takes the next scripted status (the last one repeats); the log
    stream yields ``streamed`` and ends, as Ray's did while the job ran (Ray issue #60665)."""

    def __init__(self, statuses, streamed="step 1\n", full_log="step 1\nstep 2\ndone\n", message=""):
        self.statuses, self.streamed, self.full_log, self.message = list(statuses), streamed, full_log, message
        self.info_calls, self.stopped = 0, []

    def get_job_info(self, job_id):
        status = self.statuses[min(self.info_calls, len(self.statuses) - 1)]
        self.info_calls += 1
        if isinstance(status, BaseException):
            raise status
        return SimpleNamespace(status=status, message=self.message if status != "RUNNING" else "")

    async def tail_job_logs(self, job_id):
        yield self.streamed

    def get_job_logs(self, job_id):
        return self.full_log

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        return True


class FakeTime:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def clock(self):
        return self.now


def _wait(jobs, **kw):
    t, out = FakeTime(), io.StringIO()
    code = wait_for_job(jobs, "job-1", poll_s=5, sleep=t.sleep, clock=t.clock, out=out, **kw)
    return code, out.getvalue(), t


def test_a_stream_that_ends_while_running_is_not_the_end(capsys):
    """The stream closes with the job RUNNING; the job succeeds three polls later: exit 0 only then."""
    jobs = FakeJobs(["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"])
    code, out, t = _wait(jobs)
    assert code == 0 and jobs.info_calls == 4 and t.sleeps == [5, 5, 5]
    assert out == "step 1\nstep 2\ndone\n"  # the lines after the stream closed, each printed once
    assert "job job-1: SUCCEEDED" in capsys.readouterr().err


@pytest.mark.parametrize("final", ["FAILED", "STOPPED"])
def test_a_job_that_failed_or_was_stopped_is_a_non_zero_exit_with_its_status(capsys, final):
    jobs = FakeJobs(["PENDING", "RUNNING", final], message="Job entrypoint command failed with exit code 1")
    code, _, _ = _wait(jobs)
    assert code == EXIT_FAILED
    assert f"job job-1: {final} (Job entrypoint command failed with exit code 1)" in capsys.readouterr().err


def test_a_head_that_misses_calls_is_retried_then_named_when_it_stays_away(capsys):
    jobs = FakeJobs(["RUNNING", ConnectionError("refused"), ConnectionError("refused"), "SUCCEEDED"])
    assert _wait(jobs)[0] == 0  # two missed calls: retried
    jobs = FakeJobs(["RUNNING", ConnectionError("refused")])
    code, _, t = _wait(jobs, unreachable_s=60)
    assert code == EXIT_UNREACHABLE and t.now <= 70
    assert "status unreadable for 60 s" in capsys.readouterr().err


def test_an_interrupt_stops_the_job(capsys):
    jobs = FakeJobs(["RUNNING", KeyboardInterrupt()])
    code, _, _ = _wait(jobs)
    assert code == 128 + signal.SIGINT and jobs.stopped == ["job-1"]
    assert "stopping job job-1" in capsys.readouterr().err
