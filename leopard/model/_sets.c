/* The compact form of a stored set, and its way back to a roaring bitmap.
 *
 * A set of ids is stored either in the Roaring portable format (what pyroaring's
 * BitMap.serialize writes: its first byte is 0x3A or 0x3B, from the cookies 12346 and
 * 12347) or, when that is smaller, as the tag byte 0x01 followed by the ids in
 * ascending order as LEB128 varints: the first id itself, then each id's distance from
 * the one before less one. A subject's direct groups spread over many roaring
 * containers of one or two ids each (8 bytes of header apiece), and a closure's
 * depth-first ids leave small gaps that an array container stores in 2 bytes and a
 * varint in 1. leopard/store/layout.py names the values stored so; setcodec.py beside
 * this file is the same codec in Python (used where this module is not built, and by
 * the tests to check it).
 *
 *   pack(roaring: bytes) -> bytes         the compact form if smaller, else the input
 *   unpack(raw: bytes, start=0) -> bytes  the roaring form of raw[start:]
 *   load(raw: bytes, start=0) -> BitMap   BitMap.deserialize(unpack(raw, start))
 *   set_deserialize(f)                    the function load calls (BitMap.deserialize)
 *   held_meets(cache, epoch, subject, group) -> True, False or None
 *       a check answered from the sets an index holds in memory (see held_meets below)
 *   SMALL_IDS                             the most ids of a value held_meets reads in place
 *
 * Malformed input raises ValueError saying what is wrong; nothing is read outside the
 * buffer given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAG 0x01
#define NO_RUN 12346u
#define RUN 12347u
#define ARRAY_MAX 4096u
#define BITSET_BYTES 8192u

static PyObject *deserialize_fn = NULL;

static inline uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }

static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void wr16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A varint writer that gives up once the output would reach `limit` bytes. */
typedef struct {
    uint8_t *out;
    size_t len;
    size_t limit;
    uint32_t prev;
    int first;
} packer;

/* Where a walk over a stored set puts each id: 1 go on, 0 stop (the walk gives up),
 * -1 ids not ascending. */
typedef int (*id_sink)(void *sink, uint32_t v);

/* 1: written; 0: the output would not be smaller; -1: ids not ascending. */
static int put_id(void *sink, uint32_t v) {
    packer *w = sink;
    if (!w->first && v <= w->prev) return -1;
    uint32_t x = w->first ? v : v - w->prev - 1;
    w->first = 0;
    w->prev = v;
    while (x >= 0x80) {
        if (w->len + 1 >= w->limit) return 0;
        w->out[w->len++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    if (w->len + 1 >= w->limit) return 0;
    w->out[w->len++] = (uint8_t)x;
    return 1;
}

/* Walk a roaring portable serialization, feeding each id to `put`. Returns 1 when
 * every id was taken, 0 when the sink gave up (for the packer: the compact form is not
 * smaller), -1 with an exception set when the input is no roaring bitmap. */
static int walk_roaring(const uint8_t *p, size_t len, id_sink put, void *w) {
    int rc;
    if (len < 4) goto bad;
    uint32_t cookie = rd32(p);
    size_t n, pos;
    const uint8_t *runs = NULL;
    if ((cookie & 0xFFFFu) == RUN) {
        n = (size_t)(cookie >> 16) + 1;
        runs = p + 4;
        pos = 4 + (n + 7) / 8;
    } else if (cookie == NO_RUN) {
        if (len < 8) goto bad;
        n = rd32(p + 4);
        pos = 8;
    } else {
        goto bad;
    }
    if (n > 65536 || pos > len || (len - pos) / 4 < n) goto bad;
    const uint8_t *head = p + pos;
    pos += 4 * n;
    if (runs == NULL || n >= 4) pos += 4 * n; /* container offsets */
    if (pos > len) goto bad;
    for (size_t i = 0; i < n; i++) {
        uint32_t key = rd16(head + 4 * i) << 16;
        uint32_t card = rd16(head + 4 * i + 2) + 1;
        if (runs != NULL && (runs[i / 8] >> (i % 8)) & 1) {
            if (len - pos < 2) goto bad;
            uint32_t nruns = rd16(p + pos);
            pos += 2;
            if ((len - pos) / 4 < nruns) goto bad;
            for (uint32_t r = 0; r < nruns; r++) {
                uint32_t start = rd16(p + pos + 4 * r);
                uint32_t last = start + rd16(p + pos + 4 * r + 2);
                if (last > 0xFFFFu) goto bad;
                for (uint32_t v = start; v <= last; v++)
                    if ((rc = put(w, key | v)) <= 0) goto stop;
            }
            pos += 4 * (size_t)nruns;
        } else if (card <= ARRAY_MAX) {
            if ((len - pos) / 2 < card) goto bad;
            for (uint32_t j = 0; j < card; j++)
                if ((rc = put(w, key | rd16(p + pos + 2 * j))) <= 0) goto stop;
            pos += 2 * (size_t)card;
        } else {
            if (len - pos < BITSET_BYTES) goto bad;
            for (uint32_t word = 0; word < 1024; word++) {
                const uint8_t *q = p + pos + 8 * word;
                uint64_t bits = (uint64_t)rd32(q) | ((uint64_t)rd32(q + 4) << 32);
                while (bits) {
                    uint32_t bit = (uint32_t)__builtin_ctzll(bits);
                    if ((rc = put(w, key | (word * 64 + bit))) <= 0) goto stop;
                    bits &= bits - 1;
                }
            }
            pos += BITSET_BYTES;
        }
    }
    return 1;
stop:
    if (rc == 0) return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not a roaring bitmap (%zd bytes)", (Py_ssize_t)len);
    return -1;
}

static PyObject *pack(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "pack takes bytes");
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(arg);
    size_t len = (size_t)PyBytes_GET_SIZE(arg);
    uint8_t *out = PyMem_Malloc(len + 1);
    if (out == NULL) return PyErr_NoMemory();
    packer w = {out, 1, len, 0, 1};
    out[0] = TAG;
    int done = walk_roaring(p, len, put_id, &w);
    PyObject *res = NULL;
    if (done > 0)
        res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)w.len);
    else if (done == 0) {
        Py_INCREF(arg);
        res = arg;
    }
    PyMem_Free(out);
    return res;
}

/* Walk the compact set p[0:len] (its tag byte first), feeding each id to `put`: 1 when
 * every id was taken, 0 when the sink gave up, -1 with ValueError when its varints are
 * no ascending 32-bit ids. */
static int walk_compact(const uint8_t *p, size_t len, id_sink put, void *sink) {
    const uint8_t *q = p + 1, *end = p + len;
    uint64_t next = 0; /* the smallest value the next id may take */
    const char *why = NULL;
    while (q < end) {
        uint64_t x = *q++;
        if (x & 0x80) {
            x &= 0x7F;
            int shift = 7;
            for (;;) {
                if (q >= end) {
                    why = "compact set ends inside an id";
                    goto bad;
                }
                uint8_t b = *q++;
                x |= (uint64_t)(b & 0x7F) << shift;
                if (!(b & 0x80)) break;
                shift += 7;
                if (shift > 28) {
                    why = "compact set has an id longer than 5 bytes";
                    goto bad;
                }
            }
        }
        uint64_t v = next + x;
        if (v > 0xFFFFFFFFu) {
            why = "compact set has an id above 2**32 - 1";
            goto bad;
        }
        int rc = put(sink, (uint32_t)v);
        if (rc == 0) return 0;
        if (rc < 0) { /* ascending by construction: no sink here says otherwise */
            why = "compact set has ids out of order";
            goto bad;
        }
        next = v + 1;
    }
    return 1;
bad:
    PyErr_Format(PyExc_ValueError, "%s (%zd bytes)", why, (Py_ssize_t)len);
    return -1;
}

/* The ids of a compact set split by roaring container: their low halves, and each
 * container's key and first index (`starts[nc]` ends the last). */
typedef struct {
    uint16_t *lows;
    uint32_t *keys;
    size_t *starts;
    size_t n, nc;
    uint32_t key;
} splitter;

static int split_id(void *sink, uint32_t v) {
    splitter *s = sink;
    if (v >> 16 != s->key) {
        s->key = v >> 16;
        s->keys[s->nc] = s->key;
        s->starts[s->nc++] = s->n;
    }
    s->lows[s->n++] = (uint16_t)v;
    return 1;
}

/* The roaring portable form (no run containers) of the compact set p[0:len], or NULL
 * with ValueError when its varints are no ascending 32-bit ids. One pass decodes the
 * ids into their low halves and the containers' keys and bounds; a second writes. */
static PyObject *roaring_of(const uint8_t *p, size_t len) {
    size_t cap = len > 1 ? len - 1 : 1; /* at most one id a byte */
    size_t ccap = (cap < 65536 ? cap : 65536) + 1;
    splitter split = {malloc(cap * sizeof(uint16_t)), malloc(ccap * sizeof(uint32_t)),
                      malloc(ccap * sizeof(size_t)), 0, 0, 0xFFFFFFFFu};
    uint16_t *lows = split.lows;
    uint32_t *keys = split.keys;
    size_t *starts = split.starts;
    PyObject *res = NULL;
    if (lows == NULL || keys == NULL || starts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (walk_compact(p, len, split_id, &split) < 0) goto done;
    size_t n = split.n, nc = split.nc;
    starts[nc] = n;
    size_t size = 8 + 8 * nc;
    for (size_t c = 0; c < nc; c++) {
        size_t card = starts[c + 1] - starts[c];
        size += card <= ARRAY_MAX ? 2 * card : BITSET_BYTES;
    }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (res == NULL) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    wr32(out, NO_RUN);
    wr32(out + 4, (uint32_t)nc);
    uint8_t *head = out + 8, *offsets = head + 4 * nc;
    size_t pos = 8 + 8 * nc;
    for (size_t c = 0; c < nc; c++) {
        size_t i = starts[c], j = starts[c + 1], card = j - i;
        wr16(head + 4 * c, keys[c]);
        wr16(head + 4 * c + 2, (uint32_t)(card - 1));
        wr32(offsets + 4 * c, (uint32_t)pos);
        if (card <= ARRAY_MAX) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(out + pos, lows + i, 2 * card);
            pos += 2 * card;
#else
            for (size_t k = i; k < j; k++, pos += 2) wr16(out + pos, lows[k]);
#endif
        } else {
            memset(out + pos, 0, BITSET_BYTES);
            for (size_t k = i; k < j; k++) out[pos + lows[k] / 8] |= (uint8_t)(1u << (lows[k] % 8));
            pos += BITSET_BYTES;
        }
    }
done:
    free(lows);
    free(keys);
    free(starts);
    return res;
}

/* raw[start:] as roaring bytes (a new reference). */
static PyObject *unpack_at(PyObject *raw, Py_ssize_t start) {
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "a stored set is bytes");
        return NULL;
    }
    Py_ssize_t total = PyBytes_GET_SIZE(raw);
    if (start < 0 || start > total) {
        PyErr_Format(PyExc_ValueError, "no set at byte %zd of %zd", start, total);
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(raw) + start;
    size_t len = (size_t)(total - start);
    if (len == 0 || p[0] != TAG) {
        if (start == 0) {
            Py_INCREF(raw);
            return raw;
        }
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
    }
    return roaring_of(p, len);
}

static PyObject *unpack(PyObject *self, PyObject *args) {
    PyObject *raw;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "O|n:unpack", &raw, &start)) return NULL;
    return unpack_at(raw, start);
}

static PyObject *load(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "load(raw, start=0)");
        return NULL;
    }
    Py_ssize_t start = 0;
    if (nargs == 2) {
        start = PyLong_AsSsize_t(args[1]);
        if (start == -1 && PyErr_Occurred()) return NULL;
    }
    if (deserialize_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_deserialize was not called");
        return NULL;
    }
    PyObject *roaring = unpack_at(args[0], start);
    if (roaring == NULL) return NULL;
    PyObject *res = PyObject_CallOneArg(deserialize_fn, roaring);
    Py_DECREF(roaring);
    return res;
}

static PyObject *set_deserialize(PyObject *self, PyObject *fn) {
    Py_INCREF(fn);
    Py_XSETREF(deserialize_fn, fn);
    Py_RETURN_NONE;
}

/* -- a check answered from the sets an index holds in memory ------------------------- */

static PyObject *intersect_name = NULL;

/* Closures remembered by name at most (caches.py's CLOSURE_LIMIT; beyond it, the
 * whole path starts the dictionary over) */
#define REACHES_HELD 2000000

/* A value held as stored with at most this many ids is read in place at every check
 * (a few dozen varints, decoded in less time than a BitMap takes to make), and stays
 * as stored; a larger one is deserialized once and held as a BitMap. */
#define SMALL_IDS 64

/* A set read in place with more ids than this meets a BitMap as a BitMap itself (the
 * subject's deserialized and kept): asking the BitMap for each id costs more. */
#define ASK_EACH 4

/* The set held in dict[key] as a BitMap (a new reference): a value held as stored
 * (bytes: its set from byte `start` on) is deserialized, and put back in its place
 * unless the place changed meanwhile (what a deserialization can run lets another
 * thread in). NULL with no exception: not held, or no stored set (ValueError cleared:
 * the caller's slower path reads it again and reports it). NULL with one: an error. */
static PyObject *held_set(PyObject *dict, PyObject *key, Py_ssize_t start) {
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL || !PyBytes_Check(value)) {
        Py_XINCREF(value);
        return value;
    }
    Py_INCREF(value);
    PyObject *roaring = unpack_at(value, start);
    PyObject *bm = roaring == NULL ? NULL : PyObject_CallOneArg(deserialize_fn, roaring);
    Py_XDECREF(roaring);
    if (bm == NULL) {
        Py_DECREF(value);
        if (PyErr_ExceptionMatches(PyExc_ValueError)) PyErr_Clear();
        return NULL;
    }
    PyObject *now = PyDict_GetItemWithError(dict, key);
    int same = now == value;
    Py_DECREF(value);
    if ((same && PyDict_SetItem(dict, key, bm) < 0) || (!same && PyErr_Occurred())) Py_CLEAR(bm);
    return bm;
}

/* A set as held_meets reads it: a held BitMap (`bm`, a new reference), and/or its `n`
 * ascending ids at `at`: those of a small value held as stored (`raw`, a new
 * reference), decoded in place into `ids`, or an array of them held (`raw`). */
typedef struct {
    PyObject *bm, *raw;
    const uint32_t *at;
    size_t n;
    uint32_t ids[SMALL_IDS];
} held_t;

static int collect_id(void *sink, uint32_t v) {
    held_t *op = sink;
    if (op->n > 0 && v <= op->ids[op->n - 1]) return -1;
    if (op->n == SMALL_IDS) return 0;
    op->ids[op->n++] = v;
    return 1;
}

/* The ids of the stored set raw[start:] into `op`: 1; 0 when it holds more than
 * SMALL_IDS; -1 with ValueError when it is no stored set. Runs no Python code. */
static int decode_small(PyObject *raw, Py_ssize_t start, held_t *op) {
    Py_ssize_t total = PyBytes_GET_SIZE(raw);
    if (start < 0 || start > total) {
        PyErr_Format(PyExc_ValueError, "no set at byte %zd of %zd", start, total);
        return -1;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(raw) + start;
    size_t len = (size_t)(total - start);
    if (len > 10 * SMALL_IDS + 8) return 0; /* more ids than that, in either form */
    op->n = 0;
    op->at = op->ids;
    if (len > 0 && p[0] == TAG) return walk_compact(p, len, collect_id, op);
    return walk_roaring(p, len, collect_id, op); /* ids out of order: -1, ValueError */
}

/* dict[key] as an operand: 1; 0 when not held or no stored set (no exception); -1 with
 * an exception. A held BitMap is taken as it is; a value held as stored (bytes: its set
 * from byte `start` on) is read in place when it is small, else deserialized and put
 * back (held_set). */
static int held_op(PyObject *dict, PyObject *key, Py_ssize_t start, held_t *op) {
    op->bm = op->raw = NULL;
    op->at = NULL;
    op->n = 0;
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyBytes_Check(value)) { /* a BitMap held */
        Py_INCREF(value);
        op->bm = value;
        return 1;
    }
    int rc = decode_small(value, start, op); /* borrowed `value`: no Python code runs */
    if (rc > 0) {
        Py_INCREF(value);
        op->raw = value;
        return 1;
    }
    if (rc < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return -1;
        PyErr_Clear(); /* damage: the whole path reads it again and says so */
        return 0;
    }
    op->bm = held_set(dict, key, start); /* more than SMALL_IDS ids */
    return op->bm != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}

static void release(held_t *op) {
    Py_CLEAR(op->bm);
    Py_CLEAR(op->raw);
}

/* Whether the BitMap `bm` holds `v`: 1, 0, -1 with an exception. */
static int has_id(PyObject *bm, uint32_t v) {
    PyObject *x = PyLong_FromUnsignedLong(v);
    if (x == NULL) return -1;
    int res = PySequence_Contains(bm, x);
    Py_DECREF(x);
    return res;
}

/* Whether a.intersect(b): 1, 0, or -1 with an exception. */
static int meets(PyObject *a, PyObject *b) {
    PyObject *r = PyObject_CallMethodOneArg(a, intersect_name, b);
    if (r == NULL) return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

/* Whether two ascending runs of ids share one: each id of the shorter searched for in
 * the longer, from where the one before it was. */
static int meets_ids(const uint32_t *a, size_t na, const uint32_t *b, size_t nb) {
    if (na > nb) {
        const uint32_t *t = a;
        a = b;
        b = t;
        size_t tn = na;
        na = nb;
        nb = tn;
    }
    size_t lo = 0;
    for (size_t i = 0; i < na && lo < nb; i++) {
        size_t hi = nb; /* the first of b[lo:hi] not below a[i] */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (b[mid] < a[i]) lo = mid + 1;
            else hi = mid;
        }
        if (lo < nb && b[lo] == a[i]) return 1;
    }
    return 0;
}

/* Whether two operands share an id: 1, 0, or -1 with an exception. By their ids when
 * both have them, else by their BitMaps when both have one, else each id of the one
 * asked of the other's BitMap. */
static int meets_op(const held_t *a, const held_t *b) {
    if (a->at != NULL && b->at != NULL) return meets_ids(a->at, a->n, b->at, b->n);
    if (a->bm != NULL && b->bm != NULL) return meets(a->bm, b->bm);
    const held_t *ids = a->at != NULL ? a : b;
    PyObject *bm = a->at != NULL ? b->bm : a->bm;
    for (size_t i = 0; i < ids->n; i++) {
        int res = has_id(bm, ids->at[i]);
        if (res != 0) return res;
    }
    return 0;
}

/* The resource tier of a reader: its `resource_ids`, and the span [first, end) of the
 * base's ids that are all of it (first -1: no such span, ask `ids`). */
typedef struct {
    PyObject *ids;
    long first, end;
} tier_t;

/* Whether a set id is of the resource tier: 1, 0, -1 with an exception. */
static int in_resource_tier(const tier_t *tier, uint32_t v) {
    if (tier->first >= 0 && (long)v < tier->end) return (long)v >= tier->first;
    return has_id(tier->ids, v);
}

/* Whether the closure of the group-tier set `gid` meets `direct`: 1, 0, -1 with an
 * exception, -2 when it is not held or no stored set. */
static int closure_meets(PyObject *closures, PyObject *gid, const held_t *direct) {
    held_t closure;
    int got = held_op(closures, gid, 0, &closure);
    if (got <= 0) return got < 0 ? -1 : -2; /* not held: read by the whole path */
    int res = meets_op(&closure, direct);
    release(&closure);
    return res;
}

/* Whether the sets `direct` are in the resource-tier set whose closure is `reach`: they
 * meet the closure, or the closure of one of the group-tier sets in it, taken in
 * ascending order as CachedSets._tier_meets does (`groups` when held, else those of
 * the ids of `reach`). 1, 0, -1 with an exception, -2 when a closure it needs is not
 * held or no stored set. */
static int in_tier_set(const held_t *direct, const held_t *reach, PyObject *groups,
                       const tier_t *tier, PyObject *closures) {
    int res = meets_op(direct, reach);
    if (res != 0) return res;
    if (groups == NULL) {
        for (size_t i = 0; res == 0 && i < reach->n; i++) {
            int resource = in_resource_tier(tier, reach->at[i]);
            if (resource != 0) {
                res = resource < 0 ? -1 : 0;
                continue;
            }
            PyObject *gid = PyLong_FromUnsignedLong(reach->at[i]);
            res = gid == NULL ? -1 : closure_meets(closures, gid, direct);
            Py_XDECREF(gid);
        }
        return res;
    }
    PyObject *it = PyObject_GetIter(groups), *gid;
    if (it == NULL) return -1;
    while (res == 0 && (gid = PyIter_Next(it)) != NULL) {
        res = closure_meets(closures, gid, direct);
        Py_DECREF(gid);
    }
    Py_DECREF(it);
    return res == 0 && PyErr_Occurred() ? -1 : res;
}

/* Names of what held_meets reads (interned at import). */
static PyObject *n_subjects, *n_reaches, *n_wildcards, *n_group_ids, *n_closures, *n_reader,
    *n_base_group_ids, *n_resource_ids, *n_resource_span, *n_tier_reaches, *n_tier_groups,
    *n_tier_stored, *n_tier_wild, *n_wild_ids, *n_epoch;

/* The dictionary `attrs[name]` (borrowed), NULL with no exception when it is none:
 * `attrs` is an object's attributes (its __dict__, read once for all it is asked). */
static PyObject *dict_attr(PyObject *attrs, PyObject *name) {
    PyObject *d = PyDict_GetItemWithError(attrs, name);
    return d != NULL && PyDict_CheckExact(d) ? d : NULL;
}

/* The attributes of `obj` (a new reference to its __dict__), NULL with an exception. */
static PyObject *attrs_of(PyObject *obj) {
    PyObject *attrs = PyObject_GenericGetDict(obj, NULL);
    if (attrs != NULL && !PyDict_CheckExact(attrs)) {
        Py_DECREF(attrs);
        PyErr_SetString(PyExc_TypeError, "held_meets reads the attributes of plain objects");
        return NULL;
    }
    return attrs;
}

/* The resource tier of a reader (its attributes `reader`) into `tier` (a new reference
 * in tier->ids): 0; -1, with an exception or not. `resource_span` is (first, end) or
 * None. */
static int tier_of(PyObject *reader, tier_t *tier) {
    tier->first = tier->end = -1;
    PyObject *span = PyDict_GetItemWithError(reader, n_resource_span);
    if (span == NULL) return -1;
    if (PyTuple_CheckExact(span) && PyTuple_GET_SIZE(span) == 2) {
        tier->first = PyLong_AsLong(PyTuple_GET_ITEM(span, 0));
        tier->end = PyLong_AsLong(PyTuple_GET_ITEM(span, 1));
    }
    if (PyErr_Occurred()) return -1;
    tier->ids = PyDict_GetItemWithError(reader, n_resource_ids);
    Py_XINCREF(tier->ids);
    return tier->ids == NULL ? -1 : 0;
}

/* Whether the reader's epoch (in its attributes `reader`) is still `epoch` (nothing
 * installed since the caller read it): 1, 0, -1 with an exception. Remembering is done
 * only then. */
static int still(PyObject *reader, PyObject *epoch) {
    PyObject *now = PyDict_GetItemWithError(reader, n_epoch);
    if (now == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(now);
    int same = PyObject_RichCompareBool(now, epoch, Py_EQ);
    Py_DECREF(now);
    return same;
}

/* dict[key] = value unless the dictionary holds REACHES_HELD entries already (the
 * whole path starts it over then): 0 or -1. */
static int remember(PyObject *dict, PyObject *key, PyObject *value) {
    return PyDict_GET_SIZE(dict) > REACHES_HELD ? 0 : PyDict_SetItem(dict, key, value);
}

/* held_meets(cache, epoch, subject, group) -> True, False or None
 *
 * A check answered from what a CachedSets (`cache`) holds in memory after warm()
 * (caches.py names each dictionary), or None when it does not hold all the answer
 * needs: then the caller takes the whole path, which reads, parses, reports damage
 * and remembers. The subject's direct groups come from `subjects` (by its UTF-8 name,
 * surrogates passed). The group's closure from `reaches` or `tier_reaches` (by name),
 * or by the group's id (`group_ids`, then the reader's `base_group_ids`) from
 * `closures`, then remembered by name as remember_reach does, unless it is small and
 * of the resource tier: a document's closure is read in place from `closures` at each
 * of its checks, as small values held as stored are (SMALL_IDS). A larger value held
 * as stored is deserialized and kept, as the whole path does. A set of the resource
 * tier (the reader's `resource_ids`, `resource_span`) holds the subject when the
 * subject's groups meet its closure or the closure of a group-tier set in it
 * (`tier_groups`, or the closure's ids of the group tier); another set when they meet
 * its closure. When they do not, the subject's namespace's wildcard groups
 * (`wildcards`; None: no wildcard) are asked the same (for a resource-tier set, the
 * answer is remembered in `_tier_wild`). Nothing is remembered unless the reader's
 * epoch is still `epoch`, read by the caller before: an answer read while another
 * thread installed a batch is dropped by the caller, which reads the epoch again. */
static PyObject *held_meets(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "held_meets(cache, epoch, subject, group)");
        return NULL;
    }
    PyObject *cache = args[0], *epoch = args[1], *subject = args[2], *group = args[3];
    if (!PyUnicode_CheckExact(subject) || !PyUnicode_CheckExact(group) || deserialize_fn == NULL)
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(subject);
    Py_ssize_t colon = PyUnicode_FindChar(subject, ':', 0, n, 1);
    if (colon < 0) Py_RETURN_NONE; /* no subject: the whole path says why */
    Py_ssize_t hash = PyUnicode_FindChar(subject, '#', colon, n, 1);
    if (hash != -1) Py_RETURN_NONE; /* a userset: as leopard/core/usersets.py says */
    PyObject *attrs = attrs_of(cache), *reader = NULL, *reader_obj = NULL;
    if (attrs == NULL) return NULL;
    PyObject *subjects = dict_attr(attrs, n_subjects), *reaches = NULL, *tier_reaches = NULL;
    PyObject *tier_groups = NULL, *tier_stored = NULL, *closures = NULL;
    PyObject *groups = NULL, *key = NULL;
    held_t reach = {.bm = NULL}, direct = {.bm = NULL};
    tier_t tier = {NULL, -1, -1};
    int res = -2, resource = 0;
    if (subjects == NULL || (reaches = dict_attr(attrs, n_reaches)) == NULL) goto done;
    if ((reach.bm = PyDict_GetItemWithError(reaches, group)) != NULL) { /* the common case */
        Py_INCREF(reach.bm);
    } else if (PyErr_Occurred() || (tier_reaches = dict_attr(attrs, n_tier_reaches)) == NULL ||
               (tier_groups = dict_attr(attrs, n_tier_groups)) == NULL ||
               (tier_stored = dict_attr(attrs, n_tier_stored)) == NULL ||
               (closures = dict_attr(attrs, n_closures)) == NULL ||
               (reader_obj = PyDict_GetItemWithError(attrs, n_reader)) == NULL ||
               (reader = attrs_of(reader_obj)) == NULL || tier_of(reader, &tier) < 0) {
        goto done;
    } else if ((reach.bm = PyDict_GetItemWithError(tier_reaches, group)) != NULL) {
        Py_INCREF(reach.bm);
        resource = 1;
        if ((groups = PyDict_GetItemWithError(tier_groups, group)) == NULL) goto done;
        Py_INCREF(groups);
    } else if (PyErr_Occurred() || (resource = held_op(tier_stored, group, 0, &reach)) < 0) {
        goto done;
    } else if (resource == 0 || reach.at == NULL) { /* by the group's id, then remembered */
        release(&reach); /* tier_stored holds only values read in place */
        PyObject *group_ids = dict_attr(attrs, n_group_ids), *base_ids, *gid = NULL;
        if (group_ids == NULL || (base_ids = dict_attr(reader, n_base_group_ids)) == NULL) goto done;
        if ((gid = PyDict_GetItemWithError(group_ids, group)) == NULL && !PyErr_Occurred())
            gid = PyDict_GetItemWithError(base_ids, group);
        if (gid == NULL || !PyLong_CheckExact(gid)) goto done;
        long id = PyLong_AsLong(gid);
        if (id < 0 || id > 0xFFFFFFFFL) goto done; /* -1: no group */
        Py_INCREF(gid);
        int got = resource = in_resource_tier(&tier, (uint32_t)id);
        if (resource > 0) { /* a small one read in place, a larger one deserialized */
            got = held_op(closures, gid, 0, &reach);
        } else if (resource == 0) { /* a group's: deserialized, and remembered below */
            reach.bm = held_set(closures, gid, 0);
            got = reach.bm != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
        }
        Py_DECREF(gid);
        if (got <= 0) goto done;
        if (reach.bm != NULL) { /* a BitMap: remembered by name */
            if (resource && (groups = PyNumber_Subtract(reach.bm, tier.ids)) == NULL) goto done;
            int same = still(reader, epoch);
            if (same < 0 ||
                (same && remember(resource ? tier_reaches : reaches, group, reach.bm) < 0) ||
                (same && resource && remember(tier_groups, group, groups) < 0))
                goto done;
        } else if (resource) { /* a small resource-tier closure: its stored value */
            int same = still(reader, epoch);
            if (same < 0 || (same && remember(tier_stored, group, reach.raw) < 0)) goto done;
        }
    }
    key = PyUnicode_AsEncodedString(subject, "utf-8", "surrogatepass");
    if (key == NULL) { /* no name the index holds: the whole path says why */
        PyErr_Clear();
        goto done;
    }
    /* a MEMBER2GROUP value: the subject's id (4 bytes), then its set */
    if (held_op(subjects, key, 4, &direct) <= 0) goto done;
    if (direct.bm == NULL && reach.at == NULL && direct.n > ASK_EACH) {
        /* to meet a BitMap: deserialized and kept, as the whole path does */
        if ((direct.bm = held_set(subjects, key, 4)) == NULL) goto done;
    }
    res = resource ? in_tier_set(&direct, &reach, groups, &tier, closures) : meets_op(&direct, &reach);
    int wildcard = n >= 2 && PyUnicode_READ_CHAR(subject, n - 2) == ':' &&
                   PyUnicode_READ_CHAR(subject, n - 1) == '*'; /* its namespace's own */
    if (res != 0 || wildcard) goto done;
    PyObject *wildcards = dict_attr(attrs, n_wildcards), *answers = NULL, *tier_wild = NULL;
    PyObject *ns = PyUnicode_Substring(subject, 0, colon), *wild_ids = NULL, *flat = NULL;
    PyObject *wild = ns == NULL || wildcards == NULL ? NULL : PyDict_GetItemWithError(wildcards, ns);
    if (wild != NULL && wild != Py_None && resource && (tier_wild = dict_attr(attrs, n_tier_wild)) != NULL)
        answers = PyDict_GetItemWithError(tier_wild, ns); /* made by the whole path */
    if (wild != NULL && wild != Py_None && (wild_ids = dict_attr(attrs, n_wild_ids)) != NULL)
        flat = PyDict_GetItemWithError(wild_ids, ns); /* made with `wild` */
    Py_XDECREF(ns);
    if (wild == NULL || (resource && wild != Py_None && answers == NULL)) {
        res = -2;
    } else if (wild != Py_None) {
        held_t wilds = {.bm = wild};
        Py_INCREF(wild);
        if (flat != NULL && PyBytes_Check(flat) && PyBytes_GET_SIZE(flat) % 4 == 0) {
            Py_INCREF(flat);
            wilds.raw = flat;
            wilds.at = (const uint32_t *)PyBytes_AS_STRING(flat);
            wilds.n = (size_t)PyBytes_GET_SIZE(flat) / 4;
        }
        if (!resource) {
            res = meets_op(&wilds, &reach);
        } else {
            PyObject *found = PyDict_GetItemWithError(answers, group);
            if (found != NULL) {
                res = PyObject_IsTrue(found);
            } else if (!PyErr_Occurred()) {
                Py_INCREF(answers);
                res = in_tier_set(&wilds, &reach, groups, &tier, closures);
                int same = res < 0 ? 0 : still(reader, epoch);
                if (same < 0 || (same && remember(answers, group, res ? Py_True : Py_False) < 0))
                    res = -1;
                Py_DECREF(answers);
            }
        }
        release(&wilds);
    }
done:
    Py_XDECREF(reader);
    Py_DECREF(attrs);
    Py_XDECREF(tier.ids);
    release(&reach);
    Py_XDECREF(groups);
    Py_XDECREF(key);
    release(&direct);
    if (PyErr_Occurred()) return NULL;
    if (res < 0) Py_RETURN_NONE;
    return PyBool_FromLong(res);
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_O, "The compact form of a roaring serialization if smaller, else it."},
    {"unpack", unpack, METH_VARARGS, "The roaring serialization of a stored set raw[start:]."},
    {"load", (PyCFunction)(void (*)(void))load, METH_FASTCALL,
     "The BitMap of a stored set raw[start:]."},
    {"set_deserialize", set_deserialize, METH_O, "The function load passes roaring bytes to."},
    {"held_meets", (PyCFunction)(void (*)(void))held_meets, METH_FASTCALL,
     "A check answered from deserialized sets in memory, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "leopard.model._sets", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sets(void) {
    PyObject **names[] = {&intersect_name, &n_subjects,       &n_reaches,        &n_wildcards,
                          &n_group_ids,    &n_closures,       &n_reader,         &n_base_group_ids,
                          &n_resource_ids, &n_resource_span,  &n_tier_reaches,   &n_tier_groups,
                          &n_tier_stored,  &n_tier_wild,      &n_wild_ids,       &n_epoch};
    const char *texts[] = {"intersect",    "subjects",    "reaches",     "wildcards", "group_ids",
                           "closures",     "reader",      "base_group_ids", "resource_ids",
                           "resource_span", "tier_reaches", "tier_groups", "tier_stored", "_tier_wild",
                           "wild_ids", "epoch"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i] = PyUnicode_InternFromString(texts[i])) == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "SMALL_IDS", SMALL_IDS) < 0) Py_CLEAR(m);
    return m;
}
