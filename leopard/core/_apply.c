/* The two hottest loops of a stream of member changes, compiled.
 *
 * Work.members and Work._flip_members (leopard/core/batchwork.py) run a loop over the
 * member edges of a batch each: the first resolves each edge to its group id, its
 * subject (made if new) and its support key, the second applies the edges in order.
 * These are the same loops step for step, without the interpreter's cost per step
 * (bench/more.md has the figures). batchwork.py runs its own Python loops where this
 * module is not built, and the tests run both on the same batches.
 *
 *   member_rows(work, m2g, base_ids, overlay_ids, new_ids, ensure, new_subjects,
 *               next_subject, bitmap) -> (rows, stored, next_subject)
 *   flip_rows(rows, support, mask_of, sets, take, dirty, m2g_dirty) -> flipped
 *
 * The arguments are Work's own dictionaries and callables, changed in place exactly as
 * the Python loops change them; a value of an unexpected shape raises TypeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *n_add, *n_discard, *n_g2m;

/* The support key of a member edge: group id, 's', subject id (4 bytes each, big-endian),
 * as leopard.store.layout.support_key(gid, False, sid). */
static PyObject *member_support_key(PyObject *gid, PyObject *sid) {
    unsigned long g = PyLong_AsUnsignedLong(gid), s = PyLong_AsUnsignedLong(sid);
    if (PyErr_Occurred()) return NULL;
    if (g > 0xFFFFFFFFul || s > 0xFFFFFFFFul) {
        PyErr_Format(PyExc_ValueError, "id out of range for a support key: %lu, %lu", g, s);
        return NULL;
    }
    unsigned char b[9] = {(unsigned char)(g >> 24), (unsigned char)(g >> 16),
                          (unsigned char)(g >> 8),  (unsigned char)g,
                          's',
                          (unsigned char)(s >> 24), (unsigned char)(s >> 16),
                          (unsigned char)(s >> 8),  (unsigned char)s};
    return PyBytes_FromStringAndSize((const char *)b, 9);
}

/* An edge of a work item: the Edge named tuple (group, subject, nested, bit). */
static int edge_of(PyObject *item, PyObject **edge, int *add) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "a work item is an (edge, touched) pair");
        return -1;
    }
    *edge = PyTuple_GET_ITEM(item, 0);
    if (!PyTuple_Check(*edge) || PyTuple_GET_SIZE(*edge) != 4) {
        PyErr_SetString(PyExc_TypeError, "an edge is a (group, subject, nested, bit) tuple");
        return -1;
    }
    *add = PyObject_IsTrue(PyTuple_GET_ITEM(item, 1));
    return *add < 0 ? -1 : 0;
}

/* Borrowed: the first of the dictionaries that has key, or NULL (an error set or not). */
static PyObject *first_of(PyObject *key, PyObject *a, PyObject *b, PyObject *c) {
    PyObject *dicts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyDict_GetItemWithError(dicts[i], key);
        if (v != NULL || PyErr_Occurred()) return v;
    }
    return NULL;
}

static PyObject *call_ensure(PyObject *ensure, PyObject *name) {
    return PyObject_CallOneArg(ensure, name);
}

/* Work.members' loop over the edges of a batch, after the subjects are read. */
static PyObject *member_rows(PyObject *self, PyObject *args) {
    PyObject *work, *m2g, *base_ids, *overlay_ids, *new_ids, *ensure, *new_subjects, *bitmap;
    Py_ssize_t next_subject;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OO!nO", &PyList_Type, &work, &PyDict_Type, &m2g,
                          &PyDict_Type, &base_ids, &PyDict_Type, &overlay_ids, &PyDict_Type,
                          &new_ids, &ensure, &PyDict_Type, &new_subjects, &next_subject, &bitmap))
        return NULL;
    PyObject *rows = PyList_New(0), *stored = PyList_New(0);
    if (rows == NULL || stored == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(work); i++) {
        PyObject *edge;
        int add;
        if (edge_of(PyList_GET_ITEM(work, i), &edge, &add) < 0) goto fail;
        PyObject *group = PyTuple_GET_ITEM(edge, 0), *subject = PyTuple_GET_ITEM(edge, 1);
        int nested = PyObject_IsTrue(PyTuple_GET_ITEM(edge, 2));
        if (nested < 0) goto fail;
        if (nested) {  /* its groups get ids here, in the order of the work */
            if (add) {
                PyObject *r = call_ensure(ensure, group);
                if (r == NULL) goto fail;
                Py_DECREF(r);
                if ((r = call_ensure(ensure, subject)) == NULL) goto fail;
                Py_DECREF(r);
            }
            continue;
        }
        PyObject *gid = first_of(group, base_ids, overlay_ids, new_ids);
        if (gid != NULL) {
            Py_INCREF(gid);
        } else {
            if (PyErr_Occurred()) goto fail;
            if (!add) continue;  /* deleting from a group the index has never held */
            if ((gid = call_ensure(ensure, group)) == NULL) goto fail;
        }
        PyObject *got = PyDict_GetItemWithError(m2g, subject);
        if (got != NULL) {
            Py_INCREF(got);
        } else {
            if (PyErr_Occurred() || !add) {  /* unknown to the index: only a touch makes it */
                Py_DECREF(gid);
                if (PyErr_Occurred()) goto fail;
                continue;
            }
            PyObject *sid = PyLong_FromSsize_t(next_subject), *groups = PyObject_CallNoArgs(bitmap);
            got = (sid && groups) ? PyTuple_Pack(2, sid, groups) : NULL;
            Py_XDECREF(groups);
            if (got == NULL || PyDict_SetItem(m2g, subject, got) < 0 ||
                PyDict_SetItem(new_subjects, sid, subject) < 0) {
                Py_XDECREF(sid);
                Py_XDECREF(got);
                Py_DECREF(gid);
                goto fail;
            }
            Py_DECREF(sid);
            next_subject++;
        }
        if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2) {
            PyErr_SetString(PyExc_TypeError, "a subject's entry is an (id, groups) pair");
            Py_DECREF(got);
            Py_DECREF(gid);
            goto fail;
        }
        PyObject *sid = PyTuple_GET_ITEM(got, 0), *groups = PyTuple_GET_ITEM(got, 1);
        PyObject *skey = Py_None;
        Py_INCREF(skey);
        int ok = 1;
        if (PyTuple_GET_ITEM(edge, 3) != Py_None) {
            Py_DECREF(skey);
            skey = member_support_key(gid, sid);
            int held = skey == NULL ? -1 : PySequence_Contains(groups, gid);
            ok = held >= 0 && (!held || PyList_Append(stored, skey) == 0);
        }
        PyObject *row = ok ? PyTuple_Pack(6, edge, add ? Py_True : Py_False, gid, sid, groups, skey)
                           : NULL;
        Py_XDECREF(skey);
        Py_DECREF(got);
        Py_DECREF(gid);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            goto fail;
        }
        Py_DECREF(row);
    }
    return Py_BuildValue("(NNn)", rows, stored, next_subject);
fail:
    Py_XDECREF(rows);
    Py_XDECREF(stored);
    return NULL;
}

/* support[key] after a touch (add) or delete of the source of `bit`; NULL on error. */
static PyObject *moved_mask(PyObject *mask, PyObject *bit_obj, int add) {
    long bit = PyLong_AsLong(bit_obj);
    if (bit == -1 && PyErr_Occurred()) return NULL;
    if (bit < 0) {
        PyErr_Format(PyExc_ValueError, "negative support bit %ld", bit);
        return NULL;
    }
    if (bit < 63 && PyLong_CheckExact(mask)) {
        int overflow;
        long long m = PyLong_AsLongLongAndOverflow(mask, &overflow);
        if (m == -1 && PyErr_Occurred()) return NULL;
        if (!overflow && m >= 0) {
            long long one = 1LL << bit;
            return PyLong_FromLongLong(add ? (m | one) : (m & ~one));
        }
    }
    /* a mask past 63 bits: as Python computes it */
    PyObject *one = PyLong_FromLong(1), *shifted = NULL, *out = NULL;
    if (one != NULL) shifted = PyNumber_Lshift(one, bit_obj);
    if (shifted != NULL) {
        if (add) {
            out = PyNumber_Or(mask, shifted);
        } else {
            PyObject *inv = PyNumber_Invert(shifted);
            out = inv ? PyNumber_And(mask, inv) : NULL;
            Py_XDECREF(inv);
        }
    }
    Py_XDECREF(one);
    Py_XDECREF(shifted);
    return out;
}

static int call_method(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *r = PyObject_CallMethodOneArg(obj, name, arg);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* A group's member set to change: the batch's, else the writer's cached set itself
 * (take), marked dirty. Borrowed from `members` (the loop's own gid -> set). */
static PyObject *member_set(PyObject *members, PyObject *gid, PyObject *sets, PyObject *take,
                            PyObject *dirty) {
    PyObject *bm = PyDict_GetItemWithError(members, gid);
    if (bm != NULL || PyErr_Occurred()) return bm;
    PyObject *key = PyTuple_Pack(2, n_g2m, gid);
    if (key == NULL) return NULL;
    bm = PyDict_GetItemWithError(sets, key);
    if (bm != NULL) {
        Py_INCREF(bm);
    } else if (!PyErr_Occurred()) {
        bm = PyObject_CallFunctionObjArgs(take, n_g2m, gid, NULL);
        if (bm != NULL && PyDict_SetItem(sets, key, bm) < 0) Py_CLEAR(bm);
    }
    if (bm != NULL && (PySet_Add(dirty, key) < 0 || PyDict_SetItem(members, gid, bm) < 0))
        Py_CLEAR(bm);
    Py_DECREF(key);
    Py_XDECREF(bm);  /* members holds it */
    return bm;
}

/* Work._flip_members: the rows of member_rows applied in order; those that flipped. */
static PyObject *flip_rows(PyObject *self, PyObject *args) {
    PyObject *rows, *support, *mask_of, *sets, *take, *dirty, *m2g_dirty;
    if (!PyArg_ParseTuple(args, "O!O!OO!OO!O!", &PyList_Type, &rows, &PyDict_Type, &support,
                          &mask_of, &PyDict_Type, &sets, &take, &PySet_Type, &dirty, &PySet_Type,
                          &m2g_dirty))
        return NULL;
    PyObject *flipped = PyList_New(0), *members = PyDict_New();
    if (flipped == NULL || members == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 6) {
            PyErr_SetString(PyExc_TypeError, "a member row is a 6-tuple");
            goto fail;
        }
        PyObject *edge = PyTuple_GET_ITEM(row, 0), *gid = PyTuple_GET_ITEM(row, 2);
        PyObject *sid = PyTuple_GET_ITEM(row, 3), *groups = PyTuple_GET_ITEM(row, 4);
        PyObject *key = PyTuple_GET_ITEM(row, 5);
        int add = PyObject_IsTrue(PyTuple_GET_ITEM(row, 1));
        int present = PySequence_Contains(groups, gid);
        if (add < 0 || present < 0) goto fail;
        int keep = add;
        if (key != Py_None) {
            PyObject *mask = PyDict_GetItemWithError(support, key);
            if (mask != NULL) {
                Py_INCREF(mask);
            } else {
                if (PyErr_Occurred()) goto fail;
                mask = PyObject_CallFunctionObjArgs(mask_of, key, present ? Py_True : Py_False,
                                                    NULL);
                if (mask == NULL) goto fail;
            }
            PyObject *moved = moved_mask(mask, PyTuple_GET_ITEM(edge, 3), add);
            Py_DECREF(mask);
            if (moved == NULL) goto fail;
            keep = PyObject_IsTrue(moved);
            int bad = keep < 0 || PyDict_SetItem(support, key, moved) < 0;
            Py_DECREF(moved);
            if (bad) goto fail;
        }
        if (keep == present) continue;
        PyObject *bm = member_set(members, gid, sets, take, dirty);
        if (bm == NULL) goto fail;
        PyObject *op = keep ? n_add : n_discard;
        if (call_method(groups, op, gid) < 0 || call_method(bm, op, sid) < 0 ||
            PySet_Add(m2g_dirty, PyTuple_GET_ITEM(edge, 1)) < 0 || PyList_Append(flipped, row) < 0)
            goto fail;
    }
    Py_DECREF(members);
    return flipped;
fail:
    Py_XDECREF(flipped);
    Py_XDECREF(members);
    return NULL;
}

static PyMethodDef methods[] = {
    {"member_rows", member_rows, METH_VARARGS, "Work.members' loop over a batch's member edges."},
    {"flip_rows", flip_rows, METH_VARARGS, "Work._flip_members' loop: the rows applied in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "leopard.core._apply",
                                    "The hot loops of applying member changes.", -1, methods};

PyMODINIT_FUNC PyInit__apply(void) {
    if ((n_add = PyUnicode_InternFromString("add")) == NULL ||
        (n_discard = PyUnicode_InternFromString("discard")) == NULL ||
        (n_g2m = PyUnicode_InternFromString("g2m")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
