/* The program: converts the tuple program into a validated tree of C nodes (avroc_build), frees it and visits it
 * for the GC. */
#include "avroc.h"

void avroc_node_free(Node *n)
{
    if (n == NULL)
        return;
    avroc_node_free(n->child);
    Py_XDECREF(n->symbols);
    Py_XDECREF(n->index);
    Py_XDECREF(n->tmpl);
    if (n->fields != NULL) {
        for (Py_ssize_t i = 0; i < n->nfields; i++) {
            Py_XDECREF(n->fields[i].name);
            Py_XDECREF(n->fields[i].deflt);
            avroc_node_free(n->fields[i].node);
        }
        PyMem_Free(n->fields);
    }
    PyMem_Free(n);
}

int avroc_node_traverse(Node *n, visitproc visit, void *arg)
{
    for (; n != NULL; n = n->child) {
        Py_VISIT(n->symbols);
        Py_VISIT(n->index);
        Py_VISIT(n->tmpl);
        for (Py_ssize_t i = 0; n->fields != NULL && i < n->nfields; i++) {
            Py_VISIT(n->fields[i].name);
            Py_VISIT(n->fields[i].deflt);
            int rc = avroc_node_traverse(n->fields[i].node, visit, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int small_int(PyObject *o, long lo, long hi, long *out, const char *what)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "program: %s must be an int", what);
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "program: %s out of range", what);
        return -1;
    }
    *out = v;
    return 0;
}

static Node *build(PyObject *prog, int depth);

static int build_enum(Node *n, PyObject *symbols, PyObject *index)
{
    if (!PyTuple_Check(symbols) || !PyDict_Check(index)) {
        PyErr_SetString(PyExc_TypeError, "program: enum needs a tuple of symbols and a dict index");
        return -1;
    }
    n->symbols = Py_NewRef(symbols);
    n->size = PyTuple_GET_SIZE(symbols);
    n->index = PyDict_New();
    if (n->index == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n->size; i++) {
        PyObject *s = PyTuple_GET_ITEM(symbols, i);
        if (!PyUnicode_CheckExact(s)) {
            PyErr_SetString(PyExc_TypeError, "program: enum symbols must be str");
            return -1;
        }
        if (PyDict_GetItemWithError(n->index, s) != NULL) {
            PyErr_SetString(PyExc_ValueError, "program: duplicate enum symbol");
            return -1;
        }
        if (PyErr_Occurred())
            return -1;
        PyObject *pos = PyLong_FromSsize_t(i);
        if (pos == NULL)
            return -1;
        int rc = PyDict_SetItem(n->index, s, pos);
        Py_DECREF(pos);
        if (rc < 0)
            return -1;
    }
    int eq = PyObject_RichCompareBool(n->index, index, Py_EQ);
    if (eq < 0)
        return -1;
    if (!eq) {
        PyErr_SetString(PyExc_ValueError, "program: enum index does not match its symbols");
        return -1;
    }
    n->min_size = 1;
    return 0;
}

static int build_record(Node *n, PyObject *fields, int depth)
{
    if (!PyTuple_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "program: record fields must be a tuple");
        return -1;
    }
    Py_ssize_t nf = PyTuple_GET_SIZE(fields);
    n->tmpl = PyDict_New();
    if (n->tmpl == NULL)
        return -1;
    n->fields = PyMem_Calloc(nf ? (size_t)nf : 1, sizeof(Field));
    if (n->fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    n->nfields = nf;
    n->min_size = 0;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *f = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) != 4 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(f, 0))) {
            PyErr_SetString(PyExc_TypeError, "program: a record field must be (name: str, required, default, node)");
            return -1;
        }
        Field *fd = &n->fields[i];
        fd->name = Py_NewRef(PyTuple_GET_ITEM(f, 0));
        PyUnicode_InternInPlace(&fd->name);
        int req = PyObject_IsTrue(PyTuple_GET_ITEM(f, 1));
        if (req < 0)
            return -1;
        fd->required = req;
        fd->deflt = Py_NewRef(PyTuple_GET_ITEM(f, 2));
        fd->node = build(PyTuple_GET_ITEM(f, 3), depth + 1);
        if (fd->node == NULL)
            return -1;
        n->min_size = avroc_sat_add(n->min_size, fd->node->min_size);
        if (PyDict_SetItem(n->tmpl, fd->name, Py_None) < 0)
            return -1;
    }
    return 0;
}

static Node *build(PyObject *prog, int depth)
{
    static const Py_ssize_t arity[OP_COUNT] = {1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 2, 2, 2, 4};
    static const Py_ssize_t min_size[OP_COUNT] = {0, 1, 1, 1, 4, 8, 1, 1, 1, 0, 1, 1, 0, 1};
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "program: nested too deeply");
        return NULL;
    }
    if (!PyTuple_Check(prog) || PyTuple_GET_SIZE(prog) < 1) {
        PyErr_SetString(PyExc_TypeError, "program: a node must be a non-empty tuple");
        return NULL;
    }
    long op;
    if (small_int(PyTuple_GET_ITEM(prog, 0), 0, OP_COUNT - 1, &op, "opcode") < 0)
        return NULL;
    if (PyTuple_GET_SIZE(prog) != arity[op]) {
        PyErr_Format(PyExc_ValueError, "program: opcode %ld takes %zd items", op, arity[op]);
        return NULL;
    }
    Node *n = PyMem_Calloc(1, sizeof(Node));
    if (n == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    n->op = (int)op;
    n->min_size = min_size[op];
    long v, w;
    switch (op) {
    case OP_ENUM:
        if (build_enum(n, PyTuple_GET_ITEM(prog, 1), PyTuple_GET_ITEM(prog, 2)) < 0)
            goto fail;
        break;
    case OP_FIXED:
        if (small_int(PyTuple_GET_ITEM(prog, 1), 0, LONG_MAX, &v, "fixed size") < 0)
            goto fail;
        if ((unsigned long)v > (unsigned long)PY_SSIZE_T_MAX) {
            PyErr_SetString(PyExc_ValueError, "program: fixed size out of range");
            goto fail;
        }
        n->size = n->min_size = (Py_ssize_t)v;
        break;
    case OP_ARRAY:
    case OP_MAP:
        n->child = build(PyTuple_GET_ITEM(prog, 1), depth + 1);
        if (n->child == NULL)
            goto fail;
        break;
    case OP_RECORD:
        if (build_record(n, PyTuple_GET_ITEM(prog, 1), depth) < 0)
            goto fail;
        break;
    case OP_UNION:
        if (small_int(PyTuple_GET_ITEM(prog, 1), 0, 1, &v, "union index") < 0 ||
            small_int(PyTuple_GET_ITEM(prog, 2), 0, 1, &w, "union index") < 0)
            goto fail;
        if (v == w) {
            PyErr_SetString(PyExc_ValueError, "program: union indexes must be 0 and 1");
            goto fail;
        }
        n->i_null = (int)v;
        n->i_other = (int)w;
        n->child = build(PyTuple_GET_ITEM(prog, 3), depth + 1);
        if (n->child == NULL)
            goto fail;
        if (n->child->op == OP_NULL || n->child->op == OP_UNION) {
            PyErr_SetString(PyExc_ValueError, "program: a union's other branch must be neither null nor a union");
            goto fail;
        }
        break;
    default:
        break;
    }
    return n;
fail:
    avroc_node_free(n);
    return NULL;
}

Node *avroc_build(PyObject *prog)
{
    return build(prog, 0);
}
