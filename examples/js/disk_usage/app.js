// Quarry example task `disk_usage_js`: reports `df -P -k` for some paths on each worker.
//
// Built with componentize-js (not jco) against wit/quarry.wit, world `task-plugin`, with
// `-d http fetch-event` so that the component does not import wasi:http; see
// scripts/build-examples.sh. The same task exists in Python (examples/python/disk_usage) and C
// (examples/c/disk_usage); all three accept the same params, give the same error messages and
// produce the same JSON.
//
// Params (a JSON object):
//   paths        list of absolute paths whose file systems are reported (default ["/"])
//   report_path  optional absolute path on the worker where the JSON summary is written
//
// Binding conventions of componentize-js: the exported interface `task` is the exported object
// `task`; a `result<T, string>` export returns T or throws (the thrown value, a string here,
// becomes the error); an imported function returning `result<T, error>` returns T or throws a
// `ComponentError` whose `payload` is the WIT variant `{ tag, val }`. Variants are
// `{ tag: 'argv', val: [...] }`, enums are their WIT names as strings, options are
// `undefined`/value.

import { execute, log, worker, writeFile } from 'quarry:task/host@0.1.1';

const NAME = 'disk_usage_js';
const VERSION = '0.1.0';
const PARAMS_DOC =
  'paths: list of absolute paths whose file systems are reported (default ["/"]); ' +
  'report_path: optional absolute path on the worker where the JSON summary is written';
const MAX_PATHS = 64;
const MAX_PATH_BYTES = 4096;
const DF_TIMEOUT_MS = 30000;
// Only ASCII white space separates df's columns (the Python and C versions split the same way).
const ASCII_WS = /[ \t\r\n\v\f]+/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A message for the user; anything else thrown is a bug and is reported with its stack. */
class ParamError extends Error {}

const toJson = (value) => JSON.stringify(value);

function utf8Length(s) {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

function checkPath(label, value) {
  if (typeof value !== 'string') throw new ParamError(`${label}: must be a string`);
  if (LONE_SURROGATE.test(value)) throw new ParamError(`${label}: is not valid Unicode (lone surrogate)`);
  if (value.includes('\0')) throw new ParamError(`${label} ${toJson(value)}: must not contain NUL`);
  if (utf8Length(value) > MAX_PATH_BYTES) throw new ParamError(`${label}: longer than ${MAX_PATH_BYTES} bytes`);
  if (!value.startsWith('/')) throw new ParamError(`${label} ${toJson(value)}: must be absolute`);
  return value;
}

/** Parses and checks the params; returns { paths, reportPath } or throws ParamError. */
function parseParams(raw) {
  if (/^[ \t\r\n]*$/.test(raw)) raw = '{}';
  let obj;
  try {
    obj = JSON.parse(raw);
  } catch (e) {
    throw new ParamError(`params: invalid JSON: ${e.message}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ParamError('params: must be a JSON object');
  }
  let paths = ['/'];
  let reportPath = null;
  // Object.keys keeps document order (except integer-like keys, which are unknown anyway).
  for (const key of Object.keys(obj)) {
    const value = obj[key];
    if (key === 'paths') {
      if (!Array.isArray(value)) throw new ParamError('paths: must be a list of absolute paths');
      if (value.length === 0) throw new ParamError('paths: must not be empty');
      if (value.length > MAX_PATHS) throw new ParamError(`paths: at most ${MAX_PATHS} entries`);
      paths = value.map((p, i) => checkPath(`paths[${i}]`, p));
    } else if (key === 'report_path') {
      reportPath = value === null ? null : checkPath('report_path', value);
    } else {
      throw new ParamError(`unknown param ${toJson(key)}: expected paths or report_path`);
    }
  }
  return { paths, reportPath };
}

const isDigits = (s) => /^[0-9]+$/.test(s);
const MAX_U64 = 2n ** 64n - 1n;
const fitsU64 = (s) => s.replace(/^0+/, '').length <= 20 && BigInt(s) <= MAX_U64;

/**
 * One line of `df -P -k` output, or null when it does not have the POSIX shape. Columns:
 * filesystem, size, used, available, capacity (`N%` or `-`), mount point. The file system
 * name and the mount point may contain spaces, so the capacity column is found as the first
 * `N%`/`-` token preceded by three numbers. A number above 2^64-1 makes the line unparsable
 * (as in the C version); numbers above 2^53 lose precision (JS numbers are doubles).
 */
function parseDfLine(line) {
  const tokens = line.split(ASCII_WS).filter((t) => t !== '');
  for (let i = 4; i < tokens.length - 1; i++) {
    const cap = tokens[i];
    const pctOk = cap === '-' || (cap.endsWith('%') && isDigits(cap.slice(0, -1)));
    if (pctOk && isDigits(tokens[i - 3]) && isDigits(tokens[i - 2]) && isDigits(tokens[i - 1])) {
      const numbers = tokens.slice(i - 3, i).concat(cap === '-' ? [] : [cap.slice(0, -1)]);
      if (!numbers.every(fitsU64)) return null;
      return {
        mount: tokens.slice(i + 1).join(' '),
        filesystem: tokens.slice(0, i - 3).join(' '),
        size_kb: Number(tokens[i - 3]),
        used_kb: Number(tokens[i - 2]),
        avail_kb: Number(tokens[i - 1]),
        use_percent: cap === '-' ? null : Number(cap.slice(0, -1)),
      };
    }
  }
  return null;
}

/** `kind: message` for a host error thrown by an import (a ComponentError with a payload). */
function describeError(e) {
  const p = e && e.payload;
  if (p && typeof p.tag === 'string') return `${p.tag}: ${p.val}`;
  return `unknown: ${String(e)}`;
}

function failed(message) {
  return { status: 'failed', pid: undefined, detail: toJson({ status: 'failed', error: message }) };
}

/** Turns a ParamError into its message (the WIT error string); rethrows anything else. */
function userError(e) {
  if (e instanceof ParamError) return e.message;
  return `internal error: ${e && e.stack ? e.stack : e}`;
}

export const task = {
  describe() {
    return {
      name: NAME,
      version: VERSION,
      idempotent: true,
      defaultIntervalSeconds: 600,
      paramsDoc: PARAMS_DOC,
    };
  },

  validateConfig(params) {
    try {
      parseParams(params);
    } catch (e) {
      throw userError(e);
    }
  },

  run(params) {
    let parsed;
    try {
      parsed = parseParams(params);
    } catch (e) {
      throw userError(e);
    }
    const { paths, reportPath } = parsed;

    let out;
    try {
      out = execute({
        program: { tag: 'argv', val: ['df', '-P', '-k', ...paths] },
        cwd: undefined,
        env: [['LC_ALL', 'C']],
        timeoutMs: DF_TIMEOUT_MS,
      });
    } catch (e) {
      throw `df failed: ${describeError(e)}`;
    }
    if (out.exitCode !== 0) {
      const stderr = out.stderr.replace(/[ \t\r\n\v\f]+$/, '');
      return failed(`df exited with ${out.exitCode}: ${stderr}`);
    }

    const filesystems = [];
    for (const line of out.stdout.split('\n').slice(1)) {
      // the first line is the header
      if (line === '' || /^[ \t\r\n\v\f]+$/.test(line)) continue;
      const fs = parseDfLine(line);
      if (fs === null) log('warn', `skipping unparsable df line: ${toJson(line)}`);
      else filesystems.push(fs);
    }
    if (filesystems.length === 0) return failed('df printed no file systems');

    const parts = filesystems.map((fs) => {
      const pct = fs.use_percent === null ? '-' : String(fs.use_percent);
      return `${fs.mount} ${pct}% used, ${fs.avail_kb} KB free`;
    });
    log('info', `disk_usage: ${filesystems.length} file system(s): ${parts.join('; ')}`);

    const text = toJson({ status: 'success', worker: worker().ip, filesystems });
    if (reportPath !== null) {
      try {
        writeFile(reportPath, text + '\n');
      } catch (e) {
        throw `write-file ${reportPath} failed: ${describeError(e)}`;
      }
    }
    return { status: 'success', pid: undefined, detail: text };
  },
};
