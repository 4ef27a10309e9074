/* The reader: decodes bytes by walking the node tree (r), every read bounds-checked; the Reader type. */
#include "avroc.h"

typedef const unsigned char *Pos;

typedef struct {
    Pos end;
    Py_ssize_t zero_budget;
} RCtx;

static PyObject *bad(const char *why)
{
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

static int bad_int(const char *why)
{
    PyErr_SetString(PyExc_ValueError, why);
    return -1;
}

/* A zigzag varint of at most 10 bytes whose value fits in 64 bits. */
static inline int read_long(Pos *pp, Pos end, int64_t *out)
{
    Pos p = *pp;
    if (p >= end)
        return bad_int("truncated: a varint past the end");
    uint64_t b = *p++;
    uint64_t z = b & 0x7F;
    int shift = 7;
    while (b > 0x7F) {
        if (p >= end)
            return bad_int("truncated: a varint past the end");
        b = *p++;
        if (shift == 63 && b > 1)
            return bad_int(b > 0x7F ? "varint longer than 10 bytes" : "varint beyond 64 bits");
        z |= (b & 0x7F) << shift;
        shift += 7;
    }
    *pp = p;
    *out = (int64_t)((z >> 1) ^ ((uint64_t)0 - (z & 1)));
    return 0;
}

static PyObject *r(const Node *n, Pos *pp, RCtx *c);

static PyObject *read_str(Pos *pp, Pos end, int as_str)
{
    int64_t len;
    if (read_long(pp, end, &len) < 0)
        return NULL;
    if (len < 0)
        return bad("negative length");
    if (len > end - *pp)
        return bad("truncated: a length past the end");
    const char *s = (const char *)*pp;
    *pp += len;
    return as_str ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "strict") : PyBytes_FromStringAndSize(s, (Py_ssize_t)len);
}

/* The count of the next block (0 at the end), checked against the bytes left or the zero-size budget. */
static int read_block(Pos *pp, RCtx *c, Py_ssize_t item_min, Py_ssize_t *count)
{
    int64_t n, size;
    if (read_long(pp, c->end, &n) < 0)
        return -1;
    if (n < 0) {
        if (n == INT64_MIN)
            return bad_int("block count out of range");
        n = -n;
        if (read_long(pp, c->end, &size) < 0)  /* the block's size in bytes: not needed */
            return -1;
    }
    if (item_min > 0) {
        if (n > (c->end - *pp) / item_min)
            return bad_int("truncated: a block count past the end");
    } else {
        if (n > c->zero_budget)
            return bad_int("too many items of zero size");
        c->zero_budget -= (Py_ssize_t)n;
    }
    *count = (Py_ssize_t)n;
    return 0;
}

static PyObject *read_array(const Node *n, Pos *pp, RCtx *c)
{
    PyObject *list = NULL;
    Py_ssize_t count;
    for (;;) {
        if (read_block(pp, c, n->child->min_size, &count) < 0)
            goto fail;
        if (count == 0)
            break;
        if (list == NULL) {
            list = PyList_New(count);
            if (list == NULL)
                return NULL;
            for (Py_ssize_t i = 0; i < count; i++) {
                PyObject *x = r(n->child, pp, c);
                if (x == NULL)
                    goto fail;
                PyList_SET_ITEM(list, i, x);
            }
        } else {
            for (Py_ssize_t i = 0; i < count; i++) {
                PyObject *x = r(n->child, pp, c);
                if (x == NULL)
                    goto fail;
                int rc = PyList_Append(list, x);
                Py_DECREF(x);
                if (rc < 0)
                    goto fail;
            }
        }
    }
    return list != NULL ? list : PyList_New(0);
fail:
    Py_XDECREF(list);
    return NULL;
}

static PyObject *read_map(const Node *n, Pos *pp, RCtx *c)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    Py_ssize_t count, item_min = avroc_sat_add(1, n->child->min_size);
    for (;;) {
        if (read_block(pp, c, item_min, &count) < 0)
            goto fail;
        if (count == 0)
            return d;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *k = read_str(pp, c->end, 1);
            if (k == NULL)
                goto fail;
            PyObject *x = r(n->child, pp, c);
            if (x == NULL) {
                Py_DECREF(k);
                goto fail;
            }
            int rc = PyDict_SetItem(d, k, x);
            Py_DECREF(k);
            Py_DECREF(x);
            if (rc < 0)
                goto fail;
        }
    }
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *read_record(const Node *n, Pos *pp, RCtx *c)
{
    PyObject *d = PyDict_Copy(n->tmpl);
    if (d == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n->nfields; i++) {
        PyObject *x = r(n->fields[i].node, pp, c);
        if (x == NULL)
            goto fail;
        int rc = PyDict_SetItem(d, n->fields[i].name, x);
        Py_DECREF(x);
        if (rc < 0)
            goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *r(const Node *n, Pos *pp, RCtx *c)
{
    Pos p = *pp;
    int64_t i;
    double x;
    switch (n->op) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_BOOLEAN:
        if (p >= c->end)
            return bad("truncated: a boolean past the end");
        if (*p > 1)
            return bad("boolean byte not 0 or 1");
        *pp = p + 1;
        return PyBool_FromLong(*p);
    case OP_INT:
    case OP_LONG:
        if (p < c->end && *p < 0x80) {  /* one byte */
            *pp = p + 1;
            return PyLong_FromLong((long)(*p >> 1) ^ -(long)(*p & 1));
        }
        if (read_long(pp, c->end, &i) < 0)
            return NULL;
        return PyLong_FromLongLong((long long)i);
    case OP_FLOAT:
    case OP_DOUBLE: {
        Py_ssize_t width = n->op == OP_FLOAT ? 4 : 8;
        if (c->end - p < width)
            return bad("truncated: a float or double past the end");
        x = width == 4 ? PyFloat_Unpack4((const char *)p, 1) : PyFloat_Unpack8((const char *)p, 1);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        *pp = p + width;
        return PyFloat_FromDouble(x);
    }
    case OP_BYTES:
        return read_str(pp, c->end, 0);
    case OP_STRING:
        return read_str(pp, c->end, 1);
    case OP_ENUM:
        if (read_long(pp, c->end, &i) < 0)
            return NULL;
        if (i < 0 || i >= n->size)
            return bad("enum index out of range");
        return Py_NewRef(PyTuple_GET_ITEM(n->symbols, (Py_ssize_t)i));
    case OP_FIXED:
        if (c->end - p < n->size)
            return bad("truncated: a fixed past the end");
        *pp = p + n->size;
        return PyBytes_FromStringAndSize((const char *)p, n->size);
    case OP_ARRAY:
        return read_array(n, pp, c);
    case OP_MAP:
        return read_map(n, pp, c);
    case OP_RECORD:
        return read_record(n, pp, c);
    case OP_UNION:
        if (read_long(pp, c->end, &i) < 0)
            return NULL;
        if (i == n->i_null)
            Py_RETURN_NONE;
        if (i == n->i_other)
            return r(n->child, pp, c);
        return bad("union index out of range");
    }
    PyErr_SetString(PyExc_SystemError, "bad opcode");
    return NULL;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Node *root;
} ReaderObject;

static PyObject *reader_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ReaderObject *self = (ReaderObject *)callable;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a reader takes exactly two positional arguments (data, pos)");
        return NULL;
    }
    if (self->root == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "reader cleared");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "a reader reads bytes");
        return NULL;
    }
    if (!PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "pos must be an int");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > len) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    Pos start = (Pos)PyBytes_AS_STRING(data), p = start + pos;
    RCtx c = {start + len, ZERO_SIZE_BUDGET};
    PyObject *v = r(self->root, &p, &c);
    if (v == NULL)
        return NULL;
    PyObject *end = PyLong_FromSsize_t((Py_ssize_t)(p - start));
    if (end == NULL) {
        Py_DECREF(v);
        return NULL;
    }
    PyObject *res = PyTuple_New(2);
    if (res == NULL) {
        Py_DECREF(v);
        Py_DECREF(end);
        return NULL;
    }
    PyTuple_SET_ITEM(res, 0, v);
    PyTuple_SET_ITEM(res, 1, end);
    return res;
}

static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"program", NULL};
    PyObject *prog;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Reader", kwlist, &prog))
        return NULL;
    Node *root = avroc_build(prog);
    if (root == NULL)
        return NULL;
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        avroc_node_free(root);
        return NULL;
    }
    self->vectorcall = reader_call;
    self->root = root;
    return (PyObject *)self;
}

static int Reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    return avroc_node_traverse(self->root, visit, arg);
}

static int Reader_clear(ReaderObject *self)
{
    Node *root = self->root;
    self->root = NULL;
    avroc_node_free(root);
    return 0;
}

static void Reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject avroc_ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.contracts._avroc.Reader",
    .tp_doc = "Reader(program): reader(data: bytes, pos: int) -> (value, end position); ValueError if malformed",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(ReaderObject, vectorcall),
};
