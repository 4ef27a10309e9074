/* Avro binary (schemaless, no header) encoder and decoder driven by a pre-resolved schema program.
 *
 * The program is a tree of tuples (see streams/contracts/fastcodec.py); Writer and Reader convert it once into
 * a tree of C nodes, validating it, so that a call does no tuple unpacking. Opcodes:
 *   (0,) null  (1,) boolean  (2,) int  (3,) long  (4,) float  (5,) double  (6,) bytes  (7,) string
 *   (8, symbols, index) enum  (9, size) fixed  (10, items) array  (11, values) map
 *   (12, ((name, required, default, node), ...)) record  (13, i_null, i_other, other) union of null and other
 *
 * Writer(program, prefix, refused)(datum) -> prefix + encoding, byte for byte what fastavro writes, or raises
 * `refused` for a datum it does not take (the caller then asks fastavro). Reader(program)(data, pos) ->
 * (value, end position); raises ValueError (or UnicodeDecodeError) on malformed input. Every read is
 * bounds-checked; counts are checked against the bytes left before anything is allocated.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    OP_NULL, OP_BOOLEAN, OP_INT, OP_LONG, OP_FLOAT, OP_DOUBLE, OP_BYTES, OP_STRING,
    OP_ENUM, OP_FIXED, OP_ARRAY, OP_MAP, OP_RECORD, OP_UNION, OP_COUNT
};

#define MAX_DEPTH 256             /* program nesting; bounds the C recursion of both directions */
#define ZERO_SIZE_BUDGET 1000000  /* items of zero encoded size (null, empty records) one read may produce */
#define STACK_BUF 1024            /* the writer's first buffer, on the C stack */

typedef struct Node Node;

typedef struct {
    PyObject *name;    /* exact str, interned */
    PyObject *deflt;   /* written when the datum lacks the (optional) field */
    Node *node;
    int required;
} Field;

struct Node {
    int op;
    Py_ssize_t min_size;  /* fewest bytes an encoding of this node takes */
    Py_ssize_t size;      /* fixed: its size; enum: the number of symbols */
    Node *child;          /* array items, map values, union's other branch */
    PyObject *symbols;    /* enum: tuple of str */
    PyObject *index;      /* enum: our own dict str -> position */
    PyObject *tmpl;       /* record: dict field name -> None, copied for each datum read */
    Field *fields;
    Py_ssize_t nfields;
    int i_null, i_other;  /* union branch indexes */
};

static PyObject *str_type;  /* "-type" */

/* -- program ------------------------------------------------------------------------------------------------ */

static void node_free(Node *n)
{
    if (n == NULL)
        return;
    node_free(n->child);
    Py_XDECREF(n->symbols);
    Py_XDECREF(n->index);
    Py_XDECREF(n->tmpl);
    if (n->fields != NULL) {
        for (Py_ssize_t i = 0; i < n->nfields; i++) {
            Py_XDECREF(n->fields[i].name);
            Py_XDECREF(n->fields[i].deflt);
            node_free(n->fields[i].node);
        }
        PyMem_Free(n->fields);
    }
    PyMem_Free(n);
}

static int node_traverse(Node *n, visitproc visit, void *arg)
{
    for (; n != NULL; n = n->child) {
        Py_VISIT(n->symbols);
        Py_VISIT(n->index);
        Py_VISIT(n->tmpl);
        for (Py_ssize_t i = 0; n->fields != NULL && i < n->nfields; i++) {
            Py_VISIT(n->fields[i].name);
            Py_VISIT(n->fields[i].deflt);
            int rc = node_traverse(n->fields[i].node, visit, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static Py_ssize_t sat_add(Py_ssize_t a, Py_ssize_t b)
{
    return a > PY_SSIZE_T_MAX - b ? PY_SSIZE_T_MAX : a + b;
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
        n->min_size = sat_add(n->min_size, fd->node->min_size);
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
    node_free(n);
    return NULL;
}

/* -- writer ------------------------------------------------------------------------------------------------- */

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
            int has = PyDict_Contains(v, str_type);
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
    Node *root = build(prog, 0);
    if (root == NULL)
        return NULL;
    WriterObject *self = (WriterObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        node_free(root);
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
    return node_traverse(self->root, visit, arg);
}

static int Writer_clear(WriterObject *self)
{
    Node *root = self->root;
    self->root = NULL;
    node_free(root);
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

static PyTypeObject WriterType = {
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

/* -- reader ------------------------------------------------------------------------------------------------- */

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
    Py_ssize_t count, item_min = sat_add(1, n->child->min_size);
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
        if (c->end - p < 4)
            return bad("truncated: a float past the end");
        x = PyFloat_Unpack4((const char *)p, 1);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        *pp = p + 4;
        return PyFloat_FromDouble(x);
    case OP_DOUBLE:
        if (c->end - p < 8)
            return bad("truncated: a double past the end");
        x = PyFloat_Unpack8((const char *)p, 1);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        *pp = p + 8;
        return PyFloat_FromDouble(x);
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
    Node *root = build(prog, 0);
    if (root == NULL)
        return NULL;
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        node_free(root);
        return NULL;
    }
    self->vectorcall = reader_call;
    self->root = root;
    return (PyObject *)self;
}

static int Reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    return node_traverse(self->root, visit, arg);
}

static int Reader_clear(ReaderObject *self)
{
    Node *root = self->root;
    self->root = NULL;
    node_free(root);
    return 0;
}

static void Reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ReaderType = {
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

/* -- module ------------------------------------------------------------------------------------------------- */

static struct PyModuleDef avroc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.contracts._avroc",
    .m_doc = "Avro binary encoder and decoder driven by a pre-resolved schema program.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__avroc(void)
{
    if (str_type == NULL) {
        str_type = PyUnicode_InternFromString("-type");
        if (str_type == NULL)
            return NULL;
    }
    if (PyType_Ready(&WriterType) < 0 || PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&avroc_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &WriterType) < 0 || PyModule_AddType(m, &ReaderType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "ZERO_SIZE_BUDGET", ZERO_SIZE_BUDGET) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
