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
 *
 * Files: avroc.h (shared declarations), avroc_program.c (program -> node tree), avroc_write.c (Writer),
 * avroc_read.c (Reader); this one defines the module and the shared globals.
 */
#include "avroc.h"

PyObject *avroc_str_type;  /* "-type" */

static struct PyModuleDef avroc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.contracts._avroc",
    .m_doc = "Avro binary encoder and decoder driven by a pre-resolved schema program.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__avroc(void)
{
    if (avroc_str_type == NULL) {
        avroc_str_type = PyUnicode_InternFromString("-type");
        if (avroc_str_type == NULL)
            return NULL;
    }
    if (PyType_Ready(&avroc_WriterType) < 0 || PyType_Ready(&avroc_ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&avroc_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &avroc_WriterType) < 0 || PyModule_AddType(m, &avroc_ReaderType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "ZERO_SIZE_BUDGET", ZERO_SIZE_BUDGET) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
