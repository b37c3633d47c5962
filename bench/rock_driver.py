"""The ROCK side of the benchmark: ROCK's own scheduler tasks (PyPI rl-rock 1.11.0), unmodified,
driven through their own ``BaseTask.run`` against a list of worker IPs, as ROCK's
``TaskScheduler._run_task`` does every tick.

Run by the rl-rock venv's python (target/bench-venv, see scripts/bench.sh), one process per
scenario, started by ``quarry-bench suite``. It reports like the Quarry side
(bench/src/quarry_side.rs): one JSON object per line on stdout; CPU time from
``getrusage(RUSAGE_SELF)`` around each tick, peak RSS from ``VmHWM`` at the end.

- The task object is built by ROCK's ``TaskFactory.create_task`` from a ``TaskConfig``, like a
  scheduler config entry; ``file_cleanup`` is ``rock.admin.scheduler.tasks.file_cleanup_task
  .FileCleanupTask``.
- ``noop`` is the smallest task the ROCK model allows: a ``BaseTask`` subclass defined here
  whose ``run_action`` returns success (optionally after ``exec`` ``true`` commands), so a tick
  costs exactly ROCK's machinery: the pending and final status writes, the semaphore, the
  thread pool, the report.
- ROCK's scheduler module is imported too (so the process holds what the scheduler thread
  holds); it imports ``ray`` only for worker discovery, which the benchmark replaces by the
  given list, so ``ray`` is stubbed when it is not installed.
- The rocklet port is ROCK's hard-coded 22555: each worker IP is a loopback address with its
  own rocklet (or the simulator) on 22555.
- Environment: ``ROCK_SCHEDULER_STATUS_DIR`` (status files on the workers, report here) and
  ``ROCK_LOGGING_PATH`` (ROCK's logs go to files there, at ROCK's default level INFO) are set by
  the caller before this starts, because ROCK reads them at import.
"""

import argparse
import asyncio
import json
import resource
import sys
import time
import types


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sys_seconds():
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def proc_status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def peak_rss_kib():
    return proc_status_kib("VmHWM:")


def stub_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        ray = types.ModuleType("ray")
        ray.nodes = lambda: []
        ray.is_initialized = lambda: False
        ray.init = lambda *a, **k: None
        sys.modules["ray"] = ray


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True, choices=["file_cleanup", "noop"])
    ap.add_argument("--params", default="{}")
    ap.add_argument("--workers", required=True, help="comma-separated IPs")
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()

    t0 = time.perf_counter()
    stub_ray()
    import rock.admin.scheduler.scheduler  # noqa: F401  (what the scheduler thread holds)
    from rock.admin.proto.request import SandboxCommand as Command
    from rock.admin.scheduler.task_base import BaseTask, IdempotencyType, TaskStatusEnum
    from rock.admin.scheduler.task_factory import TaskFactory
    from rock.config import TaskConfig

    params = json.loads(args.params)

    class NoopTask(BaseTask):
        """The benchmark's no-op: ROCK's machinery around an action that does nothing."""

        def __init__(self, interval_seconds=60, exec_count=0):
            super().__init__(
                type="bench_noop",
                interval_seconds=interval_seconds,
                idempotency=IdempotencyType.IDEMPOTENT,
            )
            self.exec_count = exec_count

        @classmethod
        def from_config(cls, task_config):
            return cls(task_config.interval_seconds, int(task_config.params.get("exec", 0)))

        async def run_action(self, runtime):
            for _ in range(self.exec_count):
                r = await runtime.execute(Command(command="true", shell=True, sandbox_id="scheduler-task"))
                if r.exit_code != 0:
                    return {"status": TaskStatusEnum.FAILED, "error": f"true exited with {r.exit_code}"}
            return {"status": TaskStatusEnum.SUCCESS}

    if args.task == "file_cleanup":
        cfg = TaskConfig(
            task_class="rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask",
            interval_seconds=360,
            params=params,
        )
        task = TaskFactory.create_task(cfg)
    else:
        task = NoopTask.from_config(TaskConfig(task_class="bench.NoopTask", interval_seconds=60, params=params))

    workers = {w for w in args.workers.split(",") if w}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    emit({"event": "setup", "ms": (time.perf_counter() - t0) * 1000, "cpu_ms": cpu_seconds() * 1000,
          "peak_rss_kib": peak_rss_kib()})
    for i in range(args.ticks):
        c0 = cpu_seconds()
        s0 = sys_seconds()
        w0 = time.perf_counter()
        report = loop.run_until_complete(task.run(workers, max_concurrency=args.concurrency))
        wall = time.perf_counter() - w0
        cpu = cpu_seconds() - c0
        sys_cpu = sys_seconds() - s0
        failed = [r for r in report.worker_results if not r.succeeded]
        emit({
            "event": "tick",
            "tick": i,
            "wall_ms": wall * 1000,
            "cpu_ms": cpu * 1000,
            "sys_ms": sys_cpu * 1000,
            "outcome": report.outcome.value,
            "ok": report.success_count,
            "failed": report.failed_count,
            "first_error": (failed[0].error or "")[-300:] if failed else None,
        })
    emit({"event": "done", "peak_rss_kib": peak_rss_kib(), "rss_kib": proc_status_kib("VmRSS:"),
          "cpu_ms": cpu_seconds() * 1000})
    # ROCK's executor threads are not daemon threads: leave without waiting for them.
    sys.stdout.flush()
    import os
    os._exit(0)


if __name__ == "__main__":
    main()
