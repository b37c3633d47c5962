/*
 * Quarry example task `disk_usage_c`: reports `df -P -k` for some paths on each worker.
 *
 * Built with wit-bindgen c (bindings generated into a build directory, never committed),
 * Debian clang + wasi-libc for wasm32-wasi as a reactor, and `wasm-tools component new` with
 * the wasi_snapshot_preview1 reactor adapter; see scripts/build-examples.sh. The same task
 * exists in Python (examples/python/disk_usage) and JavaScript (examples/js/disk_usage); all
 * three accept the same params, give the same error messages and produce the same JSON.
 *
 * Params (a JSON object):
 *   paths        list of absolute paths whose file systems are reported (default ["/"])
 *   report_path  optional absolute path on the worker where the JSON summary is written
 *
 * Memory: every string handed back to the host (metadata, outcome detail, error messages) is
 * malloc'ed, because the generated post-return functions free() them. Strings the host hands
 * to us (params, host call results) are ours to free. Running out of memory or a size
 * overflow calls abort(), which traps: the host then fails this run on this worker only
 * (cabi_realloc does the same).
 *
 * JSON: params are read in two passes over the bytes. Pass 1 (`jv_value`) checks the whole
 * text against the JSON grammar with a nesting limit, so pass 2 (`parse_params`) walks a text
 * known to be well formed and only checks the shape: an object whose keys are `paths` (a list
 * of strings) and `report_path` (a string or null). Every read is bounds-checked against the
 * length; nothing relies on NUL termination. Output JSON is written by `buf_json_string`.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_plugin.h"

#define NAME "disk_usage_c"
#define VERSION "0.1.0"
#define PARAMS_DOC                                                                              \
    "paths: list of absolute paths whose file systems are reported (default [\"/\"]); "          \
    "report_path: optional absolute path on the worker where the JSON summary is written"
#define MAX_PATHS 64
#define MAX_PATH_BYTES 4096
#define MAX_JSON_DEPTH 128 /* serde_json's limit: the host never sends deeper params */
#define DF_TIMEOUT_MS 30000

/* ------------------------------------------------------------------------------------------ */
/* Growable byte buffer. Always NUL-terminated after the first write (for snprintf's sake),   */
/* but lengths are what count: content may contain any byte.                                   */

typedef struct {
    char *ptr;
    size_t len;
    size_t cap; /* allocated bytes, including room for the trailing NUL */
} buf_t;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

static void buf_reserve(buf_t *b, size_t extra) {
    if (extra > SIZE_MAX - b->len - 1) abort(); /* len + extra + 1 would overflow */
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = (cap > SIZE_MAX / 2) ? need : cap * 2;
    b->ptr = xrealloc(b->ptr, cap);
    b->cap = cap;
}

static void buf_add(buf_t *b, const void *p, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->ptr + b->len, p, n);
    b->len += n;
    b->ptr[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void buf_printf(buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    int m = vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (m != n) abort();
    b->len += (size_t)n;
}

static void buf_free(buf_t *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* Moves the buffer into a WIT string (the generated post-return code frees it). */
static task_plugin_string_t buf_take(buf_t *b) {
    if (b->len == 0) buf_add(b, "", 0); /* make sure ptr is allocated */
    task_plugin_string_t s = {(uint8_t *)b->ptr, b->len};
    b->ptr = NULL;
    b->len = b->cap = 0;
    return s;
}

/*
 * Appends the bytes as the inside of a JSON string, escaped like Python's
 * json.dumps(ensure_ascii=False) and JavaScript's JSON.stringify: `"` `\` and control
 * characters are escaped, everything else is copied. A lone surrogate, which the params
 * decoder stores as its 3-byte WTF-8 form (ED A0..BF xx), is written as \udxxx.
 */
static void buf_json_chars(buf_t *b, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        switch (c) {
        case '"': buf_str(b, "\\\""); continue;
        case '\\': buf_str(b, "\\\\"); continue;
        case '\b': buf_str(b, "\\b"); continue;
        case '\f': buf_str(b, "\\f"); continue;
        case '\n': buf_str(b, "\\n"); continue;
        case '\r': buf_str(b, "\\r"); continue;
        case '\t': buf_str(b, "\\t"); continue;
        default: break;
        }
        if (c < 0x20) {
            buf_printf(b, "\\u%04x", (unsigned)c);
        } else if (c == 0xED && n - i >= 3 && s[i + 1] >= 0xA0 && s[i + 1] <= 0xBF) {
            unsigned cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            buf_printf(b, "\\u%04x", cp);
            i += 2;
        } else {
            buf_add(b, &s[i], 1);
        }
    }
}

static void buf_json_string(buf_t *b, const uint8_t *s, size_t n) {
    buf_str(b, "\"");
    buf_json_chars(b, s, n);
    buf_str(b, "\"");
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 1: JSON grammar check (RFC 8259) with a nesting limit.                                */

typedef struct {
    const uint8_t *s;
    size_t n;
    size_t i;
} cur_t;

static bool at_end(const cur_t *c) { return c->i >= c->n; }
static uint8_t peek(const cur_t *c) { return at_end(c) ? 0 : c->s[c->i]; }

static void skip_ws(cur_t *c) {
    while (!at_end(c) && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                          c->s[c->i] == '\r'))
        c->i++;
}

static bool is_hex(uint8_t ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool is_digit(uint8_t ch) { return ch >= '0' && ch <= '9'; }

/* Each jv_* function returns NULL when the value at the cursor is well formed (and moves past
 * it), or a description of the first problem (the cursor then points at it). */
static const char *jv_value(cur_t *c, int depth);

static const char *jv_string(cur_t *c) {
    c->i++; /* opening quote, checked by the caller */
    for (;;) {
        if (at_end(c)) return "unterminated string";
        uint8_t ch = c->s[c->i];
        if (ch == '"') {
            c->i++;
            return NULL;
        }
        if (ch < 0x20) return "control character in string";
        if (ch != '\\') {
            c->i++;
            continue;
        }
        if (c->n - c->i < 2) return "unterminated string";
        uint8_t e = c->s[c->i + 1];
        if (e == 'u') {
            if (c->n - c->i < 6) return "invalid \\u escape";
            for (size_t k = 2; k < 6; k++)
                if (!is_hex(c->s[c->i + k])) return "invalid \\u escape";
            c->i += 6;
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                   e == 'r' || e == 't') {
            c->i += 2;
        } else {
            return "invalid escape";
        }
    }
}

static const char *jv_number(cur_t *c) {
    if (peek(c) == '-') c->i++;
    if (peek(c) == '0') {
        c->i++;
    } else if (is_digit(peek(c))) {
        while (is_digit(peek(c))) c->i++;
    } else {
        return "invalid number";
    }
    if (peek(c) == '.') {
        c->i++;
        if (!is_digit(peek(c))) return "invalid number";
        while (is_digit(peek(c))) c->i++;
    }
    if (peek(c) == 'e' || peek(c) == 'E') {
        c->i++;
        if (peek(c) == '+' || peek(c) == '-') c->i++;
        if (!is_digit(peek(c))) return "invalid number";
        while (is_digit(peek(c))) c->i++;
    }
    return NULL;
}

static const char *jv_literal(cur_t *c, const char *word) {
    size_t len = strlen(word);
    if (c->n - c->i < len || memcmp(c->s + c->i, word, len) != 0) return "invalid literal";
    c->i += len;
    return NULL;
}

static const char *jv_array(cur_t *c, int depth) {
    c->i++; /* '[' */
    skip_ws(c);
    if (peek(c) == ']') {
        c->i++;
        return NULL;
    }
    for (;;) {
        const char *e = jv_value(c, depth + 1);
        if (e) return e;
        skip_ws(c);
        if (peek(c) == ',') {
            c->i++;
        } else if (peek(c) == ']') {
            c->i++;
            return NULL;
        } else {
            return at_end(c) ? "unexpected end of input" : "expected ',' or ']'";
        }
    }
}

static const char *jv_object(cur_t *c, int depth) {
    c->i++; /* '{' */
    skip_ws(c);
    if (peek(c) == '}') {
        c->i++;
        return NULL;
    }
    for (;;) {
        skip_ws(c);
        if (peek(c) != '"') return at_end(c) ? "unexpected end of input" : "expected a string key";
        const char *e = jv_string(c);
        if (e) return e;
        skip_ws(c);
        if (peek(c) != ':') return at_end(c) ? "unexpected end of input" : "expected ':'";
        c->i++;
        e = jv_value(c, depth + 1);
        if (e) return e;
        skip_ws(c);
        if (peek(c) == ',') {
            c->i++;
        } else if (peek(c) == '}') {
            c->i++;
            return NULL;
        } else {
            return at_end(c) ? "unexpected end of input" : "expected ',' or '}'";
        }
    }
}

static const char *jv_value(cur_t *c, int depth) {
    if (depth > MAX_JSON_DEPTH) return "nested too deeply";
    skip_ws(c);
    if (at_end(c)) return "unexpected end of input";
    switch (c->s[c->i]) {
    case '{': return jv_object(c, depth);
    case '[': return jv_array(c, depth);
    case '"': return jv_string(c);
    case 't': return jv_literal(c, "true");
    case 'f': return jv_literal(c, "false");
    case 'n': return jv_literal(c, "null");
    default:
        if (c->s[c->i] == '-' || is_digit(c->s[c->i])) return jv_number(c);
        return "unexpected character";
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 2: params shape, on text that passed pass 1.                                          */

/* A decoded JSON string: WTF-8 bytes (UTF-8, except that a lone surrogate escape becomes its
 * 3-byte form), NUL-terminated for convenience, plus what the checks need to know. */
typedef struct {
    char *ptr;
    size_t len;
    bool has_nul;
    bool has_lone_surrogate;
} jstr_t;

static unsigned hex4(const uint8_t *p) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t ch = p[k];
        unsigned d = (ch >= '0' && ch <= '9')   ? (unsigned)(ch - '0')
                     : (ch >= 'a' && ch <= 'f') ? (unsigned)(ch - 'a' + 10)
                                                : (unsigned)(ch - 'A' + 10);
        v = v * 16 + d;
    }
    return v;
}

/* Writes code point `cp` (<= 0x10FFFF) as UTF-8 into `o` (4 bytes); returns the length. */
static size_t put_utf8(char o[4], unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the (well-formed) JSON string at the cursor and moves past it. The decoded form is
 * never longer than the escaped one (\uXXXX: 6 bytes -> at most 3, a pair: 12 -> 4, \n: 2 -> 1),
 * so a buffer of the raw length + 1 suffices; every write is still checked against it. */
static void jstr_put(jstr_t *s, size_t cap, const char *p, size_t k) {
    if (k >= cap - s->len) abort(); /* no room for k bytes + NUL: cannot happen, see above */
    memcpy(s->ptr + s->len, p, k);
    s->len += k;
}

static jstr_t decode_string(cur_t *c) {
    size_t start = c->i;
    cur_t probe = *c;
    if (jv_string(&probe)) abort(); /* pass 1 accepted it: cannot happen */
    size_t raw_len = probe.i - start;    /* includes both quotes */
    size_t cap = raw_len + 1;            /* raw_len >= 2, no overflow: it fits in memory */
    jstr_t out = {xrealloc(NULL, cap), 0, false, false};
    size_t i = start + 1, end = probe.i - 1; /* inside the quotes */
    while (i < end) {
        char ch = (char)c->s[i];
        if (ch != '\\') {
            jstr_put(&out, cap, &ch, 1);
            i++;
            continue;
        }
        char e = (char)c->s[i + 1]; /* pass 1: an escape is complete before `end` */
        i += 2;
        switch (e) {
        case 'b': jstr_put(&out, cap, "\b", 1); continue;
        case 'f': jstr_put(&out, cap, "\f", 1); continue;
        case 'n': jstr_put(&out, cap, "\n", 1); continue;
        case 'r': jstr_put(&out, cap, "\r", 1); continue;
        case 't': jstr_put(&out, cap, "\t", 1); continue;
        case 'u': break;
        default: jstr_put(&out, cap, &e, 1); continue; /* " \ / */
        }
        unsigned cp = hex4(c->s + i);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - i >= 6 && c->s[i] == '\\' &&
            c->s[i + 1] == 'u') {
            unsigned lo = hex4(c->s + i + 2);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) out.has_lone_surrogate = true;
        char u[4];
        jstr_put(&out, cap, u, put_utf8(u, cp));
    }
    for (size_t k = 0; k < out.len; k++)
        if (out.ptr[k] == '\0') out.has_nul = true;
    out.ptr[out.len] = '\0';
    c->i = probe.i;
    return out;
}

static void jstr_free(jstr_t *s) {
    free(s->ptr);
    s->ptr = NULL;
    s->len = 0;
}

static bool jstr_is(const jstr_t *s, const char *word) {
    return s->len == strlen(word) && memcmp(s->ptr, word, s->len) == 0;
}

typedef struct {
    jstr_t paths[MAX_PATHS];
    size_t npaths;
    jstr_t report_path; /* ptr NULL when not given (absent or null) */
} params_t;

static void params_free(params_t *p) {
    for (size_t k = 0; k < p->npaths; k++) jstr_free(&p->paths[k]);
    p->npaths = 0;
    jstr_free(&p->report_path);
}

/* The checks of an acceptable path, in the order the Python and JS versions apply them. */
static bool check_path(const char *label, const jstr_t *v, buf_t *err) {
    if (v->has_lone_surrogate) {
        buf_printf(err, "%s: is not valid Unicode (lone surrogate)", label);
    } else if (v->has_nul) {
        buf_printf(err, "%s ", label);
        buf_json_string(err, (const uint8_t *)v->ptr, v->len);
        buf_str(err, ": must not contain NUL");
    } else if (v->len > MAX_PATH_BYTES) {
        buf_printf(err, "%s: longer than %d bytes", label, MAX_PATH_BYTES);
    } else if (v->len == 0 || v->ptr[0] != '/') {
        buf_printf(err, "%s ", label);
        buf_json_string(err, (const uint8_t *)v->ptr, v->len);
        buf_str(err, ": must be absolute");
    } else {
        return true;
    }
    return false;
}

/* Counts the elements of the (well-formed) array at the cursor without moving it. */
static size_t count_elements(const cur_t *c) {
    cur_t k = *c;
    k.i++; /* '[' */
    skip_ws(&k);
    if (peek(&k) == ']') return 0;
    size_t count = 0;
    for (;;) {
        if (jv_value(&k, 0)) abort(); /* pass 1 accepted it */
        count++;
        skip_ws(&k);
        if (peek(&k) != ',') return count;
        k.i++;
    }
}

static bool parse_paths(cur_t *c, params_t *p, buf_t *err) {
    if (peek(c) != '[') {
        buf_str(err, "paths: must be a list of absolute paths");
        return false;
    }
    size_t count = count_elements(c);
    if (count == 0) {
        buf_str(err, "paths: must not be empty");
        return false;
    }
    if (count > MAX_PATHS) {
        buf_printf(err, "paths: at most %d entries", MAX_PATHS);
        return false;
    }
    c->i++; /* '[' */
    for (size_t k = 0; k < count; k++) {
        skip_ws(c);
        char label[32];
        snprintf(label, sizeof label, "paths[%zu]", k);
        if (peek(c) != '"') {
            buf_printf(err, "%s: must be a string", label);
            return false;
        }
        p->paths[p->npaths] = decode_string(c); /* npaths < count <= MAX_PATHS */
        p->npaths++;
        if (!check_path(label, &p->paths[p->npaths - 1], err)) return false;
        skip_ws(c);
        c->i++; /* ',' or ']' (pass 1) */
    }
    return true;
}

/* Parses and checks the params. On failure, `err` holds the message and `p` is emptied. */
static bool parse_params(const uint8_t *s, size_t n, params_t *p, buf_t *err) {
    memset(p, 0, sizeof *p);
    cur_t c = {s, n, 0};
    skip_ws(&c);
    bool ok = false;
    if (at_end(&c)) { /* empty params mean {} */
        ok = true;
        goto done;
    }
    {
        cur_t v = c;
        const char *e = jv_value(&v, 0);
        if (!e) {
            skip_ws(&v);
            if (!at_end(&v)) e = "trailing characters";
        }
        if (e) {
            buf_printf(err, "params: invalid JSON: %s at byte %zu", e, v.i);
            goto done;
        }
    }
    if (peek(&c) != '{') {
        buf_str(err, "params: must be a JSON object");
        goto done;
    }
    c.i++;
    bool seen_paths = false, seen_report = false;
    for (;;) {
        skip_ws(&c);
        if (peek(&c) == '}') break;
        if (peek(&c) == ',') {
            c.i++;
            continue;
        }
        jstr_t key = decode_string(&c); /* pass 1: a key is here */
        skip_ws(&c);
        c.i++; /* ':' */
        skip_ws(&c);
        bool is_paths = jstr_is(&key, "paths"), is_report = jstr_is(&key, "report_path");
        if ((is_paths && seen_paths) || (is_report && seen_report)) {
            /* Python and JS keep the last value; the host sends serde_json-normalised params,
             * so duplicates never reach a task from it. Refuse them rather than guess. */
            buf_str(err, "params: duplicate param ");
            buf_json_string(err, (const uint8_t *)key.ptr, key.len);
            jstr_free(&key);
            goto done;
        }
        if (!is_paths && !is_report) {
            buf_str(err, "unknown param ");
            buf_json_string(err, (const uint8_t *)key.ptr, key.len);
            buf_str(err, ": expected paths or report_path");
            jstr_free(&key);
            goto done;
        }
        jstr_free(&key);
        if (is_paths) {
            seen_paths = true;
            if (!parse_paths(&c, p, err)) goto done;
        } else {
            seen_report = true;
            if (peek(&c) == 'n') {
                c.i += 4; /* null (pass 1) */
            } else if (peek(&c) == '"') {
                p->report_path = decode_string(&c);
                if (!check_path("report_path", &p->report_path, err)) goto done;
            } else {
                buf_str(err, "report_path: must be a string");
                goto done;
            }
        }
    }
    ok = true;
done:
    if (!ok) {
        params_free(p);
        return false;
    }
    if (p->npaths == 0) {
        p->paths[0] = (jstr_t){xrealloc(NULL, 2), 1, false, false};
        memcpy(p->paths[0].ptr, "/", 2);
        p->npaths = 1;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* df output.                                                                                 */

typedef struct {
    const uint8_t *p;
    size_t n;
} tok_t;

static bool is_ascii_ws(uint8_t ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

static bool tok_digits(tok_t t) {
    if (t.n == 0) return false;
    for (size_t k = 0; k < t.n; k++)
        if (!is_digit(t.p[k])) return false;
    return true;
}

/* Digits to an integer; false on overflow (more than 2^64-1 KB: treated as unparsable). */
static bool tok_u64(const uint8_t *p, size_t n, unsigned long long *out) {
    unsigned long long v = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned d = (unsigned)(p[k] - '0');
        if (v > (ULLONG_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Appends tokens [from, to) joined by single spaces, JSON-escaped (or raw when !json). */
static void put_joined(buf_t *b, const tok_t *t, size_t from, size_t to, bool json) {
    for (size_t k = from; k < to; k++) {
        if (k > from) buf_str(b, " ");
        if (json)
            buf_json_chars(b, t[k].p, t[k].n);
        else
            buf_add(b, t[k].p, t[k].n);
    }
}

/*
 * One line of `df -P -k` output. Columns: filesystem, size, used, available, capacity (`N%`
 * or `-`), mount point. The file system name and the mount point may contain spaces, so the
 * capacity column is the first `N%`/`-` token preceded by three numbers. On success appends
 * the JSON object to `fs_json` and "mount N% used, A KB free" to `summary`.
 */
static bool parse_df_line(const tok_t *t, size_t nt, buf_t *fs_json, buf_t *summary) {
    for (size_t i = 4; i + 1 < nt; i++) {
        tok_t cap = t[i];
        bool dash = cap.n == 1 && cap.p[0] == '-';
        bool pct = cap.n >= 2 && cap.p[cap.n - 1] == '%' && tok_digits((tok_t){cap.p, cap.n - 1});
        if (!(dash || pct) || !tok_digits(t[i - 3]) || !tok_digits(t[i - 2]) ||
            !tok_digits(t[i - 1]))
            continue;
        unsigned long long size, used, avail, percent = 0;
        if (!tok_u64(t[i - 3].p, t[i - 3].n, &size) || !tok_u64(t[i - 2].p, t[i - 2].n, &used) ||
            !tok_u64(t[i - 1].p, t[i - 1].n, &avail) ||
            (pct && !tok_u64(cap.p, cap.n - 1, &percent)))
            return false;
        buf_str(fs_json, "{\"mount\":\"");
        put_joined(fs_json, t, i + 1, nt, true);
        buf_str(fs_json, "\",\"filesystem\":\"");
        put_joined(fs_json, t, 0, i - 3, true);
        buf_printf(fs_json, "\",\"size_kb\":%llu,\"used_kb\":%llu,\"avail_kb\":%llu,\"use_percent\":",
                   size, used, avail);
        if (pct)
            buf_printf(fs_json, "%llu}", percent);
        else
            buf_str(fs_json, "null}");

        put_joined(summary, t, i + 1, nt, false);
        if (pct)
            buf_printf(summary, " %llu%% used, %llu KB free", percent, avail);
        else
            buf_printf(summary, " -%% used, %llu KB free", avail);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Host helpers.                                                                              */

static const char *error_kind(uint8_t tag) {
    switch (tag) {
    case QUARRY_TASK_HOST_ERROR_NOT_FOUND: return "not-found";
    case QUARRY_TASK_HOST_ERROR_TIMEOUT: return "timeout";
    case QUARRY_TASK_HOST_ERROR_UNREACHABLE: return "unreachable";
    case QUARRY_TASK_HOST_ERROR_REJECTED: return "rejected";
    default: return "other";
    }
}

/* "kind: message"; every case of the variant carries a string in the same place. */
static void put_host_error(buf_t *b, const quarry_task_host_error_t *e) {
    buf_printf(b, "%s: ", error_kind(e->tag));
    buf_add(b, e->val.other.ptr, e->val.other.len);
}

static void host_log(quarry_task_host_log_level_t level, const buf_t *msg) {
    task_plugin_string_t s = {(uint8_t *)msg->ptr, msg->len};
    quarry_task_host_log(level, &s);
}

static void set_failed(exports_quarry_task_task_outcome_t *ret, const buf_t *message) {
    buf_t d = {0};
    buf_str(&d, "{\"status\":\"failed\",\"error\":");
    buf_json_string(&d, (const uint8_t *)message->ptr, message->len);
    buf_str(&d, "}");
    ret->status = EXPORTS_QUARRY_TASK_TASK_STATUS_FAILED;
    ret->pid.is_some = false;
    ret->detail = buf_take(&d);
}

/* ------------------------------------------------------------------------------------------ */
/* Exports.                                                                                   */

void exports_quarry_task_task_describe(exports_quarry_task_task_metadata_t *ret) {
    task_plugin_string_dup(&ret->name, NAME);
    task_plugin_string_dup(&ret->version, VERSION);
    ret->idempotent = true;
    ret->default_interval_seconds = 600;
    task_plugin_string_dup(&ret->params_doc, PARAMS_DOC);
}

bool exports_quarry_task_task_validate_config(task_plugin_string_t *params,
                                              task_plugin_string_t *err) {
    params_t p;
    buf_t msg = {0};
    bool ok = parse_params(params->ptr, params->len, &p, &msg);
    task_plugin_string_free(params);
    if (ok) {
        params_free(&p);
        buf_free(&msg);
        return true;
    }
    *err = buf_take(&msg);
    return false;
}

bool exports_quarry_task_task_run(task_plugin_string_t *params,
                                  exports_quarry_task_task_outcome_t *ret,
                                  task_plugin_string_t *err) {
    params_t p;
    buf_t msg = {0};
    bool ok = parse_params(params->ptr, params->len, &p, &msg);
    task_plugin_string_free(params);
    if (!ok) {
        *err = buf_take(&msg);
        return false;
    }

    /* argv: df -P -k paths... (no shell); the strings are borrowed for the call. */
    task_plugin_string_t argv[3 + MAX_PATHS];
    size_t argc = 0;
    task_plugin_string_set(&argv[argc++], "df");
    task_plugin_string_set(&argv[argc++], "-P");
    task_plugin_string_set(&argv[argc++], "-k");
    for (size_t k = 0; k < p.npaths; k++)
        argv[argc++] = (task_plugin_string_t){(uint8_t *)p.paths[k].ptr, p.paths[k].len};
    task_plugin_tuple2_string_string_t env[1];
    task_plugin_string_set(&env[0].f0, "LC_ALL");
    task_plugin_string_set(&env[0].f1, "C");
    quarry_task_host_command_t cmd = {
        .program = {.tag = QUARRY_TASK_HOST_PROGRAM_ARGV, .val.argv = {argv, argc}},
        .cwd = {.is_some = false},
        .env = {env, 1},
        .timeout_ms = {.is_some = true, .val = DF_TIMEOUT_MS},
    };
    quarry_task_host_output_t out;
    quarry_task_host_error_t herr;
    if (!quarry_task_host_execute(&cmd, &out, &herr)) {
        buf_str(&msg, "df failed: ");
        put_host_error(&msg, &herr);
        quarry_task_host_error_free(&herr);
        params_free(&p);
        *err = buf_take(&msg);
        return false;
    }
    if (out.exit_code != 0) {
        size_t n = out.stderr_.len;
        while (n > 0 && is_ascii_ws(out.stderr_.ptr[n - 1])) n--;
        buf_printf(&msg, "df exited with %d: ", (int)out.exit_code);
        buf_add(&msg, out.stderr_.ptr, n);
        set_failed(ret, &msg);
        buf_free(&msg);
        quarry_task_host_output_free(&out);
        params_free(&p);
        return true;
    }

    /* Lines after the header; tokens point into out.stdout_. */
    buf_t fs_json = {0}, summary = {0};
    size_t count = 0;
    tok_t *toks = NULL;
    size_t tok_cap = 0;
    const uint8_t *s = out.stdout_.ptr;
    size_t n = out.stdout_.len;
    /* Lines are the pieces between '\n's (as Python's split("\n")); the first is the header. */
    for (size_t line_start = 0, line_end; line_start <= n; line_start = line_end + 1) {
        line_end = line_start;
        while (line_end < n && s[line_end] != '\n') line_end++;
        if (line_start == 0) continue; /* header */
        size_t nt = 0;
        for (size_t k = line_start; k < line_end;) {
            while (k < line_end && is_ascii_ws(s[k])) k++;
            if (k == line_end) break;
            size_t b = k;
            while (k < line_end && !is_ascii_ws(s[k])) k++;
            if (nt == tok_cap) {
                if (tok_cap > SIZE_MAX / 2 / sizeof *toks) abort();
                tok_cap = tok_cap ? tok_cap * 2 : 16;
                toks = xrealloc(toks, tok_cap * sizeof *toks);
            }
            toks[nt++] = (tok_t){s + b, k - b};
        }
        if (nt == 0) continue; /* blank line */
        size_t fs_mark = fs_json.len, sum_mark = summary.len;
        if (count > 0) {
            buf_str(&fs_json, ",");
            buf_str(&summary, "; ");
        }
        if (parse_df_line(toks, nt, &fs_json, &summary)) {
            count++;
        } else {
            fs_json.len = fs_mark; /* drop a partial entry */
            summary.len = sum_mark;
            if (fs_json.ptr) fs_json.ptr[fs_json.len] = '\0';
            if (summary.ptr) summary.ptr[summary.len] = '\0';
            buf_t w = {0};
            buf_str(&w, "skipping unparsable df line: ");
            buf_json_string(&w, s + line_start, line_end - line_start);
            host_log(QUARRY_TASK_HOST_LOG_LEVEL_WARN, &w);
            buf_free(&w);
        }
    }
    free(toks);
    quarry_task_host_output_free(&out);

    if (count == 0) {
        buf_str(&msg, "df printed no file systems");
        set_failed(ret, &msg);
        buf_free(&msg);
        buf_free(&fs_json);
        buf_free(&summary);
        params_free(&p);
        return true;
    }

    buf_printf(&msg, "disk_usage: %zu file system(s): ", count);
    buf_add(&msg, summary.ptr, summary.len);
    host_log(QUARRY_TASK_HOST_LOG_LEVEL_INFO, &msg);
    buf_free(&msg);
    buf_free(&summary);

    quarry_task_host_worker_info_t w;
    quarry_task_host_worker(&w);
    buf_t detail = {0};
    buf_str(&detail, "{\"status\":\"success\",\"worker\":");
    buf_json_string(&detail, w.ip.ptr, w.ip.len);
    buf_str(&detail, ",\"filesystems\":[");
    buf_add(&detail, fs_json.ptr, fs_json.len);
    buf_str(&detail, "]}");
    quarry_task_host_worker_info_free(&w);
    buf_free(&fs_json);

    if (p.report_path.ptr) {
        buf_t content = {0};
        buf_add(&content, detail.ptr, detail.len);
        buf_str(&content, "\n");
        task_plugin_string_t path = {(uint8_t *)p.report_path.ptr, p.report_path.len};
        task_plugin_string_t body = {(uint8_t *)content.ptr, content.len};
        bool written = quarry_task_host_write_file(&path, &body, &herr);
        buf_free(&content);
        if (!written) {
            buf_str(&msg, "write-file ");
            buf_add(&msg, p.report_path.ptr, p.report_path.len);
            buf_str(&msg, " failed: ");
            put_host_error(&msg, &herr);
            quarry_task_host_error_free(&herr);
            buf_free(&detail);
            params_free(&p);
            *err = buf_take(&msg);
            return false;
        }
    }
    params_free(&p);
    ret->status = EXPORTS_QUARRY_TASK_TASK_STATUS_SUCCESS;
    ret->pid.is_some = false;
    ret->detail = buf_take(&detail);
    return true;
}
