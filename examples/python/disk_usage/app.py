"""Quarry example task `disk_usage_py`: reports `df -P -k` for some paths on each worker.

Built with componentize-py against wit/quarry.wit (world `task-plugin`); see
scripts/build-examples.sh. The same task exists in JavaScript (examples/js/disk_usage) and C
(examples/c/disk_usage); all three accept the same params, give the same error messages and
produce the same JSON.

Params (a JSON object):
  paths        list of absolute paths whose file systems are reported (default ["/"])
  report_path  optional absolute path on the worker where the JSON summary is written
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.exports import task as wit_task
from wit_world.imports import host

NAME = "disk_usage_py"
VERSION = "0.1.0"
PARAMS_DOC = (
    'paths: list of absolute paths whose file systems are reported (default ["/"]); '
    "report_path: optional absolute path on the worker where the JSON summary is written"
)
# Only ASCII white space separates df's columns (the C and JS versions split the same way).
ASCII_WS = re.compile(r"[ \t\r\n\v\f]+")
# After json.dumps, every surrogate left in a str is a lone one (pairs are single code points).
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
JSON_WS = " \t\r\n"
MAX_U64 = 2**64 - 1
MAX_PATHS = 64
MAX_PATH_BYTES = 4096
DF_TIMEOUT_MS = 30_000


def to_json(value) -> str:
    """Compact JSON, non-ASCII kept as is: byte-identical to JSON.stringify and the C writer.

    json.dumps leaves lone surrogates (from `\\ud800` in the params) unescaped, and a string
    holding one cannot cross the component boundary; escape them as JSON.stringify does.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return LONE_SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), text)


def check_path(label: str, value) -> str:
    """Returns `value` if it is an acceptable absolute path, else raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{label}: must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{label}: is not valid Unicode (lone surrogate)") from None
    if "\0" in value:
        raise ValueError(f"{label} {to_json(value)}: must not contain NUL")
    if size > MAX_PATH_BYTES:
        raise ValueError(f"{label}: longer than {MAX_PATH_BYTES} bytes")
    if not value.startswith("/"):
        raise ValueError(f"{label} {to_json(value)}: must be absolute")
    return value


def parse_params(raw: str):
    """Parses and checks the params. Returns (paths, report_path or None); raises ValueError."""
    if raw.strip(JSON_WS) == "":
        raw = "{}"
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"params: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("params: must be a JSON object")
    paths = ["/"]
    report_path = None
    for key, value in obj.items():  # document order, so the first problem is reported
        if key == "paths":
            if not isinstance(value, list):
                raise ValueError("paths: must be a list of absolute paths")
            if not value:
                raise ValueError("paths: must not be empty")
            if len(value) > MAX_PATHS:
                raise ValueError(f"paths: at most {MAX_PATHS} entries")
            paths = [check_path(f"paths[{i}]", p) for i, p in enumerate(value)]
        elif key == "report_path":
            report_path = None if value is None else check_path("report_path", value)
        else:
            raise ValueError(f"unknown param {to_json(key)}: expected paths or report_path")
    return paths, report_path


def is_digits(s: str) -> bool:
    return s != "" and all("0" <= c <= "9" for c in s)


def parse_df_line(line: str):
    """One line of `df -P -k` output, or None when it does not have the POSIX shape.

    Columns: filesystem, size, used, available, capacity (`N%` or `-`), mount point. The
    file system name and the mount point may contain spaces, so the capacity column is found
    as the first `N%`/`-` token preceded by three numbers. A number above 2^64-1 makes the
    line unparsable (as in the C version).
    """
    tokens = [t for t in ASCII_WS.split(line) if t]
    for i in range(4, len(tokens) - 1):
        cap = tokens[i]
        pct_ok = cap == "-" or (cap.endswith("%") and is_digits(cap[:-1]))
        if pct_ok and all(is_digits(t) for t in tokens[i - 3 : i]):
            numbers = tokens[i - 3 : i] + ([] if cap == "-" else [cap[:-1]])
            # at most 20 digits before int(): int() refuses strings over 4300 digits
            if any(len(n.lstrip("0")) > 20 or int(n) > MAX_U64 for n in numbers):
                return None
            return {
                "mount": " ".join(tokens[i + 1 :]),
                "filesystem": " ".join(tokens[: i - 3]),
                "size_kb": int(tokens[i - 3]),
                "used_kb": int(tokens[i - 2]),
                "avail_kb": int(tokens[i - 1]),
                "use_percent": None if cap == "-" else int(cap[:-1]),
            }
    return None


def describe_error(e: host.Error) -> str:
    kind = {
        host.Error_NotFound: "not-found",
        host.Error_Timeout: "timeout",
        host.Error_Unreachable: "unreachable",
        host.Error_Rejected: "rejected",
        host.Error_Other: "other",
    }.get(type(e), "error")
    return f"{kind}: {e.value}"


def failed(message: str) -> wit_task.Outcome:
    detail = {"status": "failed", "error": message}
    return wit_task.Outcome(status=wit_task.Status.FAILED, pid=None, detail=to_json(detail))


class Task(wit_world.exports.Task):
    def describe(self) -> wit_task.Metadata:
        return wit_task.Metadata(
            name=NAME,
            version=VERSION,
            idempotent=True,
            default_interval_seconds=600,
            params_doc=PARAMS_DOC,
        )

    def validate_config(self, params: str) -> None:
        try:
            parse_params(params)
        except ValueError as e:
            raise Err(str(e)) from None

    def run(self, params: str) -> wit_task.Outcome:
        try:
            paths, report_path = parse_params(params)
        except ValueError as e:
            raise Err(str(e)) from None

        cmd = host.Command(
            program=host.Program_Argv(["df", "-P", "-k", *paths]),
            cwd=None,
            env=[("LC_ALL", "C")],
            timeout_ms=DF_TIMEOUT_MS,
        )
        try:
            out = host.execute(cmd)
        except Err as e:
            raise Err(f"df failed: {describe_error(e.value)}") from None
        if out.exit_code != 0:
            stderr = out.stderr.rstrip(" \t\r\n\v\f")
            return failed(f"df exited with {out.exit_code}: {stderr}")

        filesystems = []
        for line in out.stdout.split("\n")[1:]:  # the first line is the header
            if ASCII_WS.fullmatch(line) or line == "":
                continue
            fs = parse_df_line(line)
            if fs is None:
                host.log(host.LogLevel.WARN, f"skipping unparsable df line: {to_json(line)}")
            else:
                filesystems.append(fs)
        if not filesystems:
            return failed("df printed no file systems")

        parts = []
        for fs in filesystems:
            pct = "-" if fs["use_percent"] is None else str(fs["use_percent"])
            parts.append(f"{fs['mount']} {pct}% used, {fs['avail_kb']} KB free")
        host.log(host.LogLevel.INFO, f"disk_usage: {len(filesystems)} file system(s): " + "; ".join(parts))

        detail = {"status": "success", "worker": host.worker().ip, "filesystems": filesystems}
        text = to_json(detail)
        if report_path is not None:
            try:
                host.write_file(report_path, text + "\n")
            except Err as e:
                raise Err(f"write-file {report_path} failed: {describe_error(e.value)}") from None
        return wit_task.Outcome(status=wit_task.Status.SUCCESS, pid=None, detail=text)
