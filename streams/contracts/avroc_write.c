/* The writer: encodes a datum by walking the node tree (w) into a growable buffer; the Writer type. */
#include "avroc.h"

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int heap;
    PyObject *refused;
} WCtx;

static int grow(WCtx *c, Py_ssize_t need)
{
    if (need > PY_SSIZE_T_MAX - c->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t want = c->len + need, cap = c->cap;
    while (cap < want)
        cap = cap > PY_SSIZE_T_MAX / 2 ? want : cap * 2;
    char *p;
    if (c->heap) {
        p = PyMem_Realloc(c->data, (size_t)cap);
    } else {
        p = PyMem_Malloc((size_t)cap);
        if (p != NULL)
            memcpy(p, c->data, (size_t)c->len);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->data = p;
    c->cap = cap;
    c->heap = 1;
    return 0;
}

static inline int reserve(WCtx *c, Py_ssize_t need)
{
    return c->cap - c->len >= need ? 0 : grow(c, need);
}

/* Appends a zigzag varint; 10 bytes must be reserved. */
static inline void put_long(WCtx *c, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ ((uint64_t)0 - ((uint64_t)v >> 63));
    unsigned char *p = (unsigned char *)c->data + c->len;
    while (z > 0x7F) {
        *p++ = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    c->len = (Py_ssize_t)(p - (unsigned char *)c->data);
}

static inline int write_long(WCtx *c, int64_t v)
{
    if (reserve(c, 10) < 0)
        return -1;
    put_long(c, v);
    return 0;
}

static inline int write_raw(WCtx *c, const char *s, Py_ssize_t n)
{
    if (write_long(c, n) < 0 || reserve(c, n) < 0)
        return -1;
    memcpy(c->data + c->len, s, (size_t)n);
    c->len += n;
    return 0;
}

static int refuse(WCtx *c, const char *why)
{
    PyErr_SetString(c->refused, why);
    return -1;
}

static int write_str(WCtx *c, PyObject *v)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    if (s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return refuse(c, "str not encodable as UTF-8");
    }
    return write_raw(c, s, n);
}

static int w(WCtx *c, const Node *n, PyObject *v);

static int write_items(WCtx *c, const Node *n, PyObject *v)
{
    int is_list = PyList_CheckExact(v);
    if (!is_list && !PyTuple_CheckExact(v))
        return refuse(c, "not a list");
    Py_ssize_t count = Py_SIZE(v);
    if (count > 0) {
        if (write_long(c, count) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (i >= Py_SIZE(v))
                return refuse(c, "list changed size");
            PyObject *x = is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            Py_INCREF(x);
            int rc = w(c, n->child, x);
            Py_DECREF(x);
            if (rc < 0)
                return -1;
        }
        if (Py_SIZE(v) != count)
            return refuse(c, "list changed size");
    }
    if (reserve(c, 1) < 0)
        return -1;
    c->data[c->len++] = 0;
    return 0;
}

static int write_map(WCtx *c, const Node *n, PyObject *v)
{
    if (!PyDict_CheckExact(v))
        return refuse(c, "not a dict");
    Py_ssize_t count = PyDict_GET_SIZE(v);
    if (count > 0) {
        if (write_long(c, count) < 0)
            return -1;
        Py_ssize_t pos = 0, seen = 0;
        PyObject *k, *x;
        while (PyDict_Next(v, &pos, &k, &x)) {
            if (!PyUnicode_CheckExact(k))
                return refuse(c, "map key not a str");
            Py_INCREF(k);
            Py_INCREF(x);
            int rc = write_str(c, k);
            if (rc == 0)
                rc = w(c, n->child, x);
            Py_DECREF(k);
            Py_DECREF(x);
            if (rc < 0)
                return -1;
            if (++seen > count || PyDict_GET_SIZE(v) != count)
                return refuse(c, "dict changed size");
        }
        if (seen != count)
            return refuse(c, "dict changed size");
    }
    if (reserve(c, 1) < 0)
        return -1;
    c->data[c->len++] = 0;
    return 0;
}

static int write_record(WCtx *c, const Node *n, PyObject *v)
{
    if (!PyDict_CheckExact(v))
        return refuse(c, "not a dict");
    for (Py_ssize_t i = 0; i < n->nfields; i++) {
        const Field *f = &n->fields[i];
        PyObject *x = PyDict_GetItemWithError(v, f->name);
        if (x == NULL) {
            if (PyErr_Occurred())
                return -1;
            if (f->required)
                return refuse(c, "missing a required field");
            x = f->deflt;
        }
        Py_INCREF(x);
        int rc = w(c, f->node, x);
        Py_DECREF(x);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int w(WCtx *c, const Node *n, PyObject *v)
{
    switch (n->op) {
    case OP_NULL:
        return v == Py_None ? 0 : refuse(c, "not null");
    case OP_BOOLEAN:
        if (v != Py_True && v != Py_False)
            return refuse(c, "not a bool");
        if (reserve(c, 1) < 0)
            return -1;
        c->data[c->len++] = v == Py_True;
        return 0;
    case OP_INT:
    case OP_LONG: {
        if (!PyLong_CheckExact(v))
            return refuse(c, "not an int");
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (n->op == OP_INT && (x < INT32_MIN || x > INT32_MAX)))
            return refuse(c, "int out of range");
        if (x == -1 && PyErr_Occurred())
            return -1;
        return write_long(c, (int64_t)x);
    }
    case OP_FLOAT:
    case OP_DOUBLE: {
        double x;
        if (PyFloat_CheckExact(v)) {
            x = PyFloat_AS_DOUBLE(v);
        } else if (PyLong_CheckExact(v)) {
            x = PyLong_AsDouble(v);
            if (x == -1.0 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    return -1;
                PyErr_Clear();
                return refuse(c, "int too large for a float");
            }
        } else {
            return refuse(c, "not a number");
        }
        if (reserve(c, 8) < 0)
            return -1;
        if (n->op == OP_DOUBLE) {
            if (PyFloat_Pack8(x, c->data + c->len, 1) < 0)
                return -1;
            c->len += 8;
            return 0;
        }
        if (PyFloat_Pack4(x, c->data + c->len, 1) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            return refuse(c, "out of range for a float");
        }
        c->len += 4;
        return 0;
    }
    case OP_BYTES:
        if (!PyBytes_CheckExact(v))
            return refuse(c, "not bytes");
        return write_raw(c, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    case OP_STRING:
        if (!PyUnicode_CheckExact(v))
            return refuse(c, "not a str");
        return write_str(c, v);
    case OP_ENUM: {
        if (!PyUnicode_CheckExact(v))
            return refuse(c, "enum symbol not a str");
        PyObject *pos = PyDict_GetItemWithError(n->index, v);
        if (pos == NULL)
            return PyErr_Occurred() ? -1 : refuse(c, "not a symbol of the enum");
        return write_long(c, PyLong_AsSsize_t(pos));
    }
    case OP_FIXED:
        if (!PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) != n->size)
            return refuse(c, "not bytes of the fixed size");
        if (reserve(c, n->size) < 0)
            return -1;
        memcpy(c->data + c->len, PyBytes_AS_STRING(v), (size_t)n->size);
        c->len += n->size;
        return 0;
    case OP_ARRAY:
        return write_items(c, n, v);
    case OP_MAP:
        return write_map(c, n, v);
    case OP_RECORD:
        return write_record(c, n, v);
    case OP_UNION:
        if (v == Py_None)
            return write_long(c, n->i_null);
        if (PyTuple_CheckExact(v))
            return refuse(c, "a tuple in a union");
        if (PyDict_CheckExact(v)) {
            int has = PyDict_Contains(v, avroc_str_type);
            if (has < 0)
                return -1;
            if (has)
                return refuse(c, "a dict with -type in a union");
        }
        if (write_long(c, n->i_other) < 0)
            return -1;
        return w(c, n->child, v);
    }
    PyErr_SetString(PyExc_SystemError, "bad opcode");
    return -1;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Node *root;
    PyObject *prefix;
    PyObject *refused;
} WriterObject;

static PyObject *writer_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    WriterObject *self = (WriterObject *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a writer takes exactly one positional argument");
        return NULL;
    }
    if (self->root == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "writer cleared");
        return NULL;
    }
    char stack[STACK_BUF];
    WCtx c = {stack, 0, STACK_BUF, 0, self->refused};
    PyObject *res = NULL;
    Py_ssize_t plen = PyBytes_GET_SIZE(self->prefix);
    if (reserve(&c, plen) == 0) {
        memcpy(c.data, PyBytes_AS_STRING(self->prefix), (size_t)plen);
        c.len = plen;
        if (w(&c, self->root, args[0]) == 0)
            res = PyBytes_FromStringAndSize(c.data, c.len);
    }
    if (c.heap)
        PyMem_Free(c.data);
    return res;
}

static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"program", "prefix", "refused", NULL};
    PyObject *prog, *prefix, *refused;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O:Writer", kwlist, &prog, &PyBytes_Type, &prefix, &refused))
        return NULL;
    if (!PyExceptionClass_Check(refused)) {
        PyErr_SetString(PyExc_TypeError, "Writer: refused must be an exception class");
        return NULL;
    }
    Node *root = avroc_build(prog);
    if (root == NULL)
        return NULL;
    WriterObject *self = (WriterObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        avroc_node_free(root);
        return NULL;
    }
    self->vectorcall = writer_call;
    self->root = root;
    self->prefix = Py_NewRef(prefix);
    self->refused = Py_NewRef(refused);
    return (PyObject *)self;
}

static int Writer_traverse(WriterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->prefix);
    Py_VISIT(self->refused);
    return avroc_node_traverse(self->root, visit, arg);
}

static int Writer_clear(WriterObject *self)
{
    Node *root = self->root;
    self->root = NULL;
    avroc_node_free(root);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->refused);
    return 0;
}

static void Writer_dealloc(WriterObject *self)
{
    PyObject_GC_UnTrack(self);
    Writer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject avroc_WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.contracts._avroc.Writer",
    .tp_doc = "Writer(program, prefix, refused): writer(datum) -> prefix + Avro encoding, or raises refused",
    .tp_basicsize = sizeof(WriterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Writer_new,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_traverse = (traverseproc)Writer_traverse,
    .tp_clear = (inquiry)Writer_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(WriterObject, vectorcall),
};
