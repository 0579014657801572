"""Wait for a Ray job to end and exit 0 only when it SUCCEEDED.

    python prpo_openrlhf/cli/job_wait.py --address http://HEAD:8265 SUBMISSION_ID

``ray job submit`` (without ``--no-wait``) exits when the job's log stream closes, and that
stream can close while the job still runs (Ray issue #60665): its exit code then reports a
running job as a success. examples/scripts/common.sh therefore submits with ``--no-wait`` and
an id of its own, then runs this: it prints the job's logs, and when the stream ends it goes
on printing what the log gained and polls the job's status until it is SUCCEEDED, FAILED or
STOPPED. SIGINT / SIGTERM stop the job (``stop_job``) before it exits.

Imports only the standard library and Ray, so the launch scripts can run it by path from a
checkout where the package is not installed.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXIT_FAILED, EXIT_UNREACHABLE = 1, 3


def _status(info) -> str:
    status = getattr(info, "status", info)
    return str(getattr(status, "value", status))  # JobStatus is a str enum; fakes may give str


class _LogPrinter:
    """Prints a job's log once: what the stream gave, then only what ``get_job_logs`` adds."""

    def __init__(self, client, job_id: str, out):
        self.client, self.job_id, self.out, self.printed = client, job_id, out, 0

    def follow(self) -> None:
        async def stream():
            async for chunk in self.client.tail_job_logs(self.job_id):
                self._emit(chunk)

        try:
            asyncio.run(stream())
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the stream is a convenience: the status decides, not it
            print(f"[job_wait] the log stream of {self.job_id} ended ({type(exc).__name__}: {exc}); "
                  "polling the job's status", file=sys.stderr)

    def catch_up(self) -> None:
        try:
            text = self.client.get_job_logs(self.job_id)
        except Exception:  # noqa: BLE001  logs are best effort; the status call reports outages
            return
        if len(text) > self.printed:
            self._emit(text[self.printed:])

    def _emit(self, chunk: str) -> None:
        self.out.write(chunk)
        self.out.flush()
        self.printed += len(chunk)


def wait_for_job(client, job_id: str, *, poll_s: float = 5.0, unreachable_s: float = 300.0,
                 follow_logs: bool = True, sleep=time.sleep, clock=time.monotonic, out=sys.stdout) -> int:
    """Block until ``job_id`` ends; returns 0 for SUCCEEDED, EXIT_FAILED for FAILED / STOPPED,
    EXIT_UNREACHABLE if the status could not be read for ``unreachable_s``, 128 + signal number
    after an interrupt (the job is stopped first).

    ``client``: a ``ray.job_submission.JobSubmissionClient`` or an object with its
    ``get_job_info``, ``tail_job_logs``, ``get_job_logs`` and ``stop_job``.
    """
    logs = _LogPrinter(client, job_id, out)
    try:
        if follow_logs:
            logs.follow()
        failing_since = None
        while True:
            try:
                info = client.get_job_info(job_id)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a busy head may miss a call: retry, but not forever
                failing_since = failing_since or clock()
                if clock() - failing_since > unreachable_s:
                    print(f"[job_wait] job {job_id}: status unreadable for {unreachable_s:.0f} s "
                          f"({type(exc).__name__}: {exc}); its outcome is unknown", file=sys.stderr)
                    return EXIT_UNREACHABLE
                sleep(poll_s)
                continue
            failing_since = None
            status = _status(info)
            if follow_logs:
                logs.catch_up()
            if status in TERMINAL:
                message = getattr(info, "message", None) or ""
                print(f"[job_wait] job {job_id}: {status}" + (f" ({message})" if message else ""),
                      file=sys.stderr)
                return 0 if status == "SUCCEEDED" else EXIT_FAILED
            sleep(poll_s)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"[job_wait] {signal.Signals(signum).name}: stopping job {job_id}", file=sys.stderr)
        try:
            client.stop_job(job_id)
        except Exception as err:  # noqa: BLE001  say so: the job may still be running
            print(f"[job_wait] could not stop job {job_id} ({err}); stop it with `ray job stop {job_id}`",
                  file=sys.stderr)
        return 128 + signum


class _Signalled(KeyboardInterrupt):
    """SIGTERM raised as an interrupt: asyncio and the wait loop handle both alike."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupt(signum, frame):
    # Once only: a run_tiny_cpu.sh interrupt sends SIGTERM both to us and to the launch script,
    # which passes it on; a second one must not cut short the stop_job of the first.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise _Signalled(signum)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="job_wait", description=__doc__.splitlines()[0])
    p.add_argument("submission_id")
    p.add_argument("--address", required=True, help="the Ray dashboard, e.g. http://127.0.0.1:8265")
    p.add_argument("--poll-s", type=float, default=5.0, help="seconds between status calls")
    p.add_argument("--unreachable-s", type=float, default=300.0,
                   help="give up (exit 3) when the status cannot be read for this long")
    p.add_argument("--no-logs", action="store_true", help="poll the status only")
    args = p.parse_args(argv)
    from ray.job_submission import JobSubmissionClient

    for sig in (signal.SIGINT, signal.SIGTERM):  # bash starts background jobs with SIGINT ignored
        signal.signal(sig, _raise_interrupt)
    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # noqa: BLE001  Ray raises ConnectionError, RuntimeError ... here
        print(f"[job_wait] cannot reach the Ray head at {args.address} ({exc}); job {args.submission_id} "
              "may be running: see `ray job status`", file=sys.stderr)
        return EXIT_UNREACHABLE
    return wait_for_job(client, args.submission_id, poll_s=args.poll_s, unreachable_s=args.unreachable_s,
                        follow_logs=not args.no_logs)


if __name__ == "__main__":
    sys.exit(main())
