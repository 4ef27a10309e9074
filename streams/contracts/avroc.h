/* Shared declarations of the _avroc extension (see _avroc.c for the program format and the API): opcodes, limits,
 * the C program tree, and the few functions and objects used across its files. */
#ifndef AVROC_H
#define AVROC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Symbols shared between the files: not exported from the shared object, and referenced directly (no GOT/PLT). */
#if defined(__GNUC__) || defined(__clang__)
#define AVROC_HIDDEN __attribute__((visibility("hidden")))
#else
#define AVROC_HIDDEN
#endif

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

AVROC_HIDDEN extern PyObject *avroc_str_type;  /* "-type" */

AVROC_HIDDEN extern PyTypeObject avroc_WriterType;
AVROC_HIDDEN extern PyTypeObject avroc_ReaderType;

/* The C tree for a program (validated; NULL with an exception set if it is not one), its release and GC visit. */
AVROC_HIDDEN Node *avroc_build(PyObject *prog);
AVROC_HIDDEN void avroc_node_free(Node *n);
AVROC_HIDDEN int avroc_node_traverse(Node *n, visitproc visit, void *arg);

static inline Py_ssize_t avroc_sat_add(Py_ssize_t a, Py_ssize_t b)
{
    return a > PY_SSIZE_T_MAX - b ? PY_SSIZE_T_MAX : a + b;
}

#endif /* AVROC_H */
