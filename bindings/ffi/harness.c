/*
 * harness.c - drives libautograd.so the way a foreign runtime does: through dlopen, dlsym and
 * libffi, with no compile-time knowledge of the library.
 *
 *   - It neither includes include/autograd.h nor links the library. It reads the header at run
 *     time, builds a signature table from it (return and parameter types, parameter names,
 *     typedefs, enum constants) and prepares one libffi call interface per declared function.
 *     Every declared function must resolve with dlsym, every declaration must parse, and the
 *     functions the harness calls itself must have the signatures it expects, or the run fails:
 *     a signature that drifts from what the library or the harness assumes cannot go unnoticed.
 *   - Every call into the library, the harness's own included, goes through ffi_call.
 *   - It runs graph cases written in a small line-oriented text format (bindings/ffi/README.md):
 *     inputs, a program of calls whose arguments are marshalled generically from the header's
 *     parameter lists, the output, expected values and statuses. For each case it builds the
 *     graph, runs backward, and checks every requires-grad input's gradient against central
 *     finite differences that it computes itself by re-running the forward through libffi, in
 *     float64 arithmetic. Options add retained graphs (backward twice, doubled gradients, then
 *     a released graph) and second derivatives (ag_grad with create_graph, against finite
 *     differences of the first derivative).
 *   - Captured functions (ag_capture): the capture function is an ffi_closure made at run time
 *     from the header's ag_capture_fn typedef; it runs the case's program on the placeholders.
 *     'replay F' calls the function on new inputs and compares every output with the eager
 *     program's, bit for bit, and its gradients with finite differences of its own calls.
 *   - Custom ops (ag_custom_op_new): forward, backward and JVP are ffi_closures made from the
 *     header's ag_custom_forward_fn / _backward_fn / _jvp_fn typedefs, whose bodies run the
 *     statements of an 'op' block of the case; expect_same compares such an op with the same
 *     function written with catalogue ops (values and gradients), and the usual checks (finite
 *     differences, second derivatives, replays) run through it.
 *   - Files (ag_safetensors_*, ag_checkpoint_*): strings ("text", tmp:NAME, a path in a temporary
 *     directory the harness makes, empties after each case and removes at exit), arrays of strings,
 *     strings returned through `const char **`, and raw bytes (bytes:[...]) for in-memory files.
 *   - After each case every handle must be released: ag_live_handle_count must be back where it
 *     was before the case (0 in a clean run).
 *
 * Usage: harness [-v] [--require-coverage] LIBRARY HEADER CASE_OR_DIRECTORY...
 * Output: one line per case, then "N passed, M failed"; exit status 0 only if M is 0.
 * With --require-coverage every function declared in the header must have been called at least
 * once over the run (the corpus exercises the whole interface).
 *
 * Build (scripts/ffi-tests.sh): cc -std=c11 -Wall -Wextra -Werror -O1 -g bindings/ffi/harness.c
 *        $(pkg-config --cflags --libs libffi) -ldl -lm
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <ffi.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================================== */
/* Small utilities                                                                            */
/* ========================================================================================== */

#define MAX_PARAMS 16   /* the most parameters a declared function may have */
#define MAX_NAME 64     /* identifiers in the header */
#define MAX_RANK 16     /* shapes in case files (the library's own limit is tested through it) */
#define N_COUNTERS 8    /* hook counters a case may use */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    return q;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

/* Appends `val` to a dynamic array `arr` with `n` elements and `cap` capacity. */
#define PUSH(arr, n, cap, val)                                                                   \
    do {                                                                                         \
        if ((n) == (cap)) {                                                                      \
            (cap) = (cap) ? 2 * (cap) : 8;                                                       \
            (arr) = xrealloc((arr), (size_t)(cap) * sizeof *(arr));                              \
        }                                                                                        \
        (arr)[(n)++] = (val);                                                                    \
    } while (0)

static bool g_verbose;

/* The first failure of the current case: later failures are consequences and are not kept. */
static char g_err[4096];
static bool g_failed;
static int g_line; /* line of the case file being executed, for messages */

__attribute__((format(printf, 1, 2))) static int failf(const char *fmt, ...) {
    if (!g_failed) {
        int k = g_line > 0 ? snprintf(g_err, sizeof g_err, "line %d: ", g_line) : 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_err + k, sizeof g_err - (size_t)k, fmt, ap);
        va_end(ap);
        g_failed = true;
    }
    return -1;
}

__attribute__((format(printf, 1, 2))) static void fatal(const char *fmt, ...) {
    fprintf(stderr, "harness: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(2);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static bool is_ident_start(int c) { return isalpha(c) || c == '_'; }
static bool is_ident_char(int c) { return isalnum(c) || c == '_'; }

static bool is_identifier(const char *s) {
    if (!is_ident_start((unsigned char)s[0])) return false;
    for (const char *p = s + 1; *p; p++)
        if (!is_ident_char((unsigned char)*p)) return false;
    return true;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ========================================================================================== */
/* The signature table, read from the header                                                  */
/* ========================================================================================== */

/*
 * Types are reduced to one-letter codes, each with its libffi type:
 *   v void, b bool (uint8), c int8/char, B uint8, h int16, H uint16, i int32, I uint32,
 *   L int64, U uint64, f float, d double, p any pointer (function pointers included).
 * A function's signature code is "R:PPP" (return code, colon, parameter codes): the harness
 * compares the functions it calls itself against such codes.
 */
static const struct {
    const char *name;
    char code;
} k_builtins[] = {
    {"void", 'v'},      {"bool", 'b'},         {"_Bool", 'b'},          {"char", 'c'},
    {"signed char", 'c'}, {"unsigned char", 'B'}, {"int8_t", 'c'},        {"uint8_t", 'B'},
    {"int16_t", 'h'},   {"uint16_t", 'H'},     {"short", 'h'},          {"int32_t", 'i'},
    {"int", 'i'},       {"uint32_t", 'I'},     {"unsigned", 'I'},       {"unsigned int", 'I'},
    {"int64_t", 'L'},   {"long", 'L'},         {"long long", 'L'},      {"uint64_t", 'U'},
    {"size_t", 'U'},    {"unsigned long", 'U'}, {"float", 'f'},         {"double", 'd'},
};

static ffi_type *ffi_for(char code) {
    switch (code) {
    case 'v': return &ffi_type_void;
    case 'b': case 'B': return &ffi_type_uint8;
    case 'c': return &ffi_type_sint8;
    case 'h': return &ffi_type_sint16;
    case 'H': return &ffi_type_uint16;
    case 'i': return &ffi_type_sint32;
    case 'I': return &ffi_type_uint32;
    case 'L': return &ffi_type_sint64;
    case 'U': return &ffi_type_uint64;
    case 'f': return &ffi_type_float;
    case 'd': return &ffi_type_double;
    case 'p': return &ffi_type_pointer;
    default: return NULL;
    }
}

/* Bytes of one element of a type code ('v', an untyped buffer, counts as 8). */
static size_t code_size(char code) {
    switch (code) {
    case 'b': case 'B': case 'c': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': case 'f': return 4;
    default: return 8;
    }
}

static bool code_is_integer(char code) { return code && strchr("bBchHiILU", code) != NULL; }

/* One parameter (or a return type, with an empty name). */
typedef struct {
    char name[MAX_NAME];
    char type[MAX_NAME]; /* declared base type: "ag_tensor", "int64_t", "void", "char", "fn" (an inline
                            function pointer) or a function-pointer typedef's name */
    int ptr;             /* pointer depth (0: passed by value) */
    bool cnst;           /* const before the first '*' (the innermost pointee is const) */
    bool in_const;       /* what the outermost pointer points to is const: an input (`const char *const *`
                            is an input array of strings, `const char **` an output) */
    bool fnptr;          /* a function pointer, typedef'd or written inline */
    char code;           /* the parameter's own type code ('p' for every pointer) */
    char elem;           /* for a pointer of depth 1: the pointee's code ('v' for void); else code */
    char fnsig[24];      /* for a function pointer: its signature code */
} param_t;

typedef struct {
    char name[MAX_NAME];
    param_t ret;
    int np;
    param_t p[MAX_PARAMS];
    ffi_type *atypes[MAX_PARAMS];
    ffi_cif cif;
    void (*fn)(void);
    long calls; /* calls made through libffi over the whole run */
} fsig_t;

typedef struct {
    char name[MAX_NAME];
    char target[MAX_NAME]; /* the aliased type, or "" for a function-pointer typedef */
    bool fnptr;
    char fnsig[24];
} tdef_t;

typedef struct {
    char name[MAX_NAME];
    int64_t value;
} const_t;

/* A handle type: a typedef of uint64_t with a T_free(T) function. */
typedef struct {
    char name[MAX_NAME];
    fsig_t *free_fn;
} htype_t;

static fsig_t *g_sigs;
static int g_nsigs, g_csigs;
static tdef_t *g_tdefs;
static int g_ntdefs, g_ctdefs;
static const_t *g_consts;
static int g_nconsts, g_cconsts;
static htype_t *g_htypes;
static int g_nhtypes, g_chtypes;

static fsig_t *find_sig(const char *name) {
    for (int i = 0; i < g_nsigs; i++)
        if (strcmp(g_sigs[i].name, name) == 0) return &g_sigs[i];
    return NULL;
}

static const tdef_t *find_tdef(const char *name) {
    for (int i = 0; i < g_ntdefs; i++)
        if (strcmp(g_tdefs[i].name, name) == 0) return &g_tdefs[i];
    return NULL;
}

static const const_t *find_const(const char *name) {
    for (int i = 0; i < g_nconsts; i++)
        if (strcmp(g_consts[i].name, name) == 0) return &g_consts[i];
    return NULL;
}

static const htype_t *find_htype(const char *name) {
    for (int i = 0; i < g_nhtypes; i++)
        if (strcmp(g_htypes[i].name, name) == 0) return &g_htypes[i];
    return NULL;
}

/* The type code of a named type, following typedefs; 0 if unknown. */
static char resolve_code(const char *name) {
    for (int depth = 0; depth < 16; depth++) {
        for (size_t i = 0; i < sizeof k_builtins / sizeof k_builtins[0]; i++)
            if (strcmp(k_builtins[i].name, name) == 0) return k_builtins[i].code;
        const tdef_t *t = find_tdef(name);
        if (!t) return 0;
        if (t->fnptr) return 'p';
        name = t->target;
    }
    return 0;
}

/* ---- tokenizing the header ---- */

typedef struct {
    char **t;
    int n, cap;
} toks_t;

static void toks_free(toks_t *tk) {
    for (int i = 0; i < tk->n; i++) free(tk->t[i]);
    free(tk->t);
    tk->t = NULL;
    tk->n = tk->cap = 0;
}

/* Replaces comments by spaces (newlines kept), leaving string literals alone. */
static void strip_comments(char *s) {
    for (char *p = s; *p;) {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p) p++;
        } else if (p[0] == '/' && p[1] == '*') {
            char *e = strstr(p + 2, "*/");
            char *end = e ? e + 2 : p + strlen(p);
            for (; p < end; p++)
                if (*p != '\n') *p = ' ';
        } else if (p[0] == '/' && p[1] == '/') {
            for (; *p && *p != '\n'; p++) *p = ' ';
        } else {
            p++;
        }
    }
}

static void tokenize_c(const char *s, toks_t *tk) {
    const char *p = s;
    while (*p) {
        if (isspace((unsigned char)*p)) {
            p++;
            continue;
        }
        const char *b = p;
        if (is_ident_start((unsigned char)*p)) {
            while (is_ident_char((unsigned char)*p)) p++;
        } else if (isdigit((unsigned char)*p)) {
            while (isalnum((unsigned char)*p) || *p == '.') p++;
        } else if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p) p++;
        } else {
            p++;
        }
        size_t n = (size_t)(p - b);
        char *t = xmalloc(n + 1);
        memcpy(t, b, n);
        t[n] = '\0';
        PUSH(tk->t, tk->n, tk->cap, t);
    }
}

static void add_const(const char *name, int64_t value) {
    const_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    c.value = value;
    PUSH(g_consts, g_nconsts, g_cconsts, c);
}

/* Parses a type written as tokens [a, b) (no name): base type, pointer depth, const. */
static int parse_type(char **t, int a, int b, char *type, size_t typesz, int *ptr, bool *cnst) {
    type[0] = '\0';
    *ptr = 0;
    *cnst = false;
    for (int i = a; i < b; i++) {
        if (strcmp(t[i], "*") == 0) {
            (*ptr)++;
        } else if (strcmp(t[i], "const") == 0) {
            if (*ptr == 0) *cnst = true; /* const before the first '*' qualifies the pointee */
        } else if (is_identifier(t[i])) {
            if (*ptr > 0) return -1; /* a type name after a '*' */
            if (type[0]) strncat(type, " ", typesz - strlen(type) - 1);
            strncat(type, t[i], typesz - strlen(type) - 1);
        } else {
            return -1;
        }
    }
    return type[0] ? 0 : -1;
}

static void set_codes(param_t *p) {
    if (p->fnptr) {
        p->code = p->elem = 'p';
    } else if (p->ptr > 0) {
        p->code = 'p';
        p->elem = p->ptr == 1 ? resolve_code(p->type) : 'p';
    } else {
        p->code = p->elem = resolve_code(p->type);
        const tdef_t *td = find_tdef(p->type);
        if (td && td->fnptr) {
            p->fnptr = true;
            snprintf(p->fnsig, sizeof p->fnsig, "%s", td->fnsig);
        }
    }
}

static int parse_params(char **t, int a, int b, param_t *out, int *np, bool allow_fnptr);

/* A function pointer R (*name)(params) in tokens [a, b): its name and signature code. */
static int parse_fnptr(char **t, int a, int b, char *name, size_t namesz, char *sig, size_t sigsz) {
    int lp = -1;
    for (int i = a; i < b; i++)
        if (strcmp(t[i], "(") == 0) {
            lp = i;
            break;
        }
    if (lp < 0 || lp + 4 > b || strcmp(t[lp + 1], "*") || !is_identifier(t[lp + 2]) ||
        strcmp(t[lp + 3], ")") || strcmp(t[lp + 4], "(") || strcmp(t[b - 1], ")"))
        return -1;
    snprintf(name, namesz, "%s", t[lp + 2]);
    param_t ret;
    memset(&ret, 0, sizeof ret);
    if (parse_type(t, a, lp, ret.type, sizeof ret.type, &ret.ptr, &ret.cnst) != 0) return -1;
    set_codes(&ret);
    param_t ps[MAX_PARAMS];
    int np = 0;
    if (parse_params(t, lp + 5, b - 1, ps, &np, false) != 0) return -1;
    if (!ret.code) return -1;
    size_t k = 0;
    sig[k++] = ret.code;
    sig[k++] = ':';
    for (int i = 0; i < np && k + 1 < sigsz; i++) {
        if (!ps[i].code) return -1;
        sig[k++] = ps[i].code;
    }
    sig[k] = '\0';
    return 0;
}

/* Whether the object the outermost of `ptr` pointers points to is const, in type tokens [a, b):
 * a `const` after the (ptr-1)th '*' (before the first one when ptr is 1). */
static bool pointee_const(char **t, int a, int b, int ptr) {
    int stars = 0;
    bool c = false;
    for (int i = a; i < b; i++) {
        if (strcmp(t[i], "*") == 0) stars++;
        else if (strcmp(t[i], "const") == 0 && ptr > 0 && stars == ptr - 1) c = true;
    }
    return c;
}

/* One parameter in tokens [a, b). */
static int parse_param(char **t, int a, int b, param_t *p, int index, bool allow_fnptr) {
    memset(p, 0, sizeof *p);
    for (int i = a; i < b; i++) {
        if (strcmp(t[i], "(") == 0) {
            if (!allow_fnptr) return -1;
            p->fnptr = true;
            p->ptr = 1;
            snprintf(p->type, sizeof p->type, "fn");
            if (parse_fnptr(t, a, b, p->name, sizeof p->name, p->fnsig, sizeof p->fnsig) != 0) return -1;
            set_codes(p);
            return 0;
        }
    }
    int nameEnd = b;
    /* The last token names the parameter unless it is part of the type. */
    if (b - a >= 2 && is_identifier(t[b - 1]) && strcmp(t[b - 1], "const") != 0 && !resolve_code(t[b - 1])) {
        snprintf(p->name, sizeof p->name, "%s", t[b - 1]);
        nameEnd = b - 1;
    } else {
        snprintf(p->name, sizeof p->name, "arg%d", index);
    }
    if (parse_type(t, a, nameEnd, p->type, sizeof p->type, &p->ptr, &p->cnst) != 0) return -1;
    p->in_const = pointee_const(t, a, nameEnd, p->ptr);
    set_codes(p);
    return p->code ? 0 : -1;
}

/* The comma-separated parameter list in tokens [a, b); "void" alone is an empty list. */
static int parse_params(char **t, int a, int b, param_t *out, int *np, bool allow_fnptr) {
    *np = 0;
    if (b - a == 1 && strcmp(t[a], "void") == 0) return 0;
    if (b == a) return 0;
    int start = a, depth = 0;
    for (int i = a; i <= b; i++) {
        if (i < b && strcmp(t[i], "(") == 0) depth++;
        if (i < b && strcmp(t[i], ")") == 0) depth--;
        if (i == b || (depth == 0 && strcmp(t[i], ",") == 0)) {
            if (*np >= MAX_PARAMS || i == start) return -1;
            if (parse_param(t, start, i, &out[*np], *np, allow_fnptr) != 0) return -1;
            (*np)++;
            start = i + 1;
        }
    }
    return depth == 0 ? 0 : -1;
}

static char *join_tokens(char **t, int a, int b) {
    size_t n = 1;
    for (int i = a; i < b; i++) n += strlen(t[i]) + 1;
    char *s = xmalloc(n);
    s[0] = '\0';
    for (int i = a; i < b; i++) {
        if (i > a) strcat(s, " ");
        strcat(s, t[i]);
    }
    return s;
}

/* The enumerators NAME [= value], ... in tokens [a, b) (between an enum's braces), as constants. */
static void parse_enumerators(char **t, int a, int b) {
    int64_t next = 0;
    for (int j = a; j < b;) {
        if (!is_identifier(t[j])) fatal("header: bad enumerator '%s'", t[j]);
        const char *name = t[j++];
        int64_t v = next;
        if (j < b && strcmp(t[j], "=") == 0) {
            j++;
            int sign = 1;
            if (j < b && strcmp(t[j], "-") == 0) {
                sign = -1;
                j++;
            }
            if (j >= b) fatal("header: enumerator '%s' without a value", name);
            char *end;
            v = sign * strtoll(t[j], &end, 0);
            /* an unsigned suffix (kDLFloat = 2U) */
            if (*end == 'U' || *end == 'u') end++;
            if (*end != '\0') {
                const const_t *c = find_const(t[j]);
                if (!c) fatal("header: enumerator value '%s' not understood", t[j]);
                v = sign * c->value;
            }
            j++;
        }
        add_const(name, v);
        next = v + 1;
        if (j < b && strcmp(t[j], ",") == 0) j++;
    }
}

/*
 * Reads the header: #define NAME INTEGER lines, typedefs (plain and function-pointer, typedef'd
 * structures and enumerations), enum constants and function prototypes. Anything else at file scope is an error, so a declaration
 * this parser cannot read fails the run instead of being skipped.
 */
static void parse_header(const char *path) {
    char *text = read_file(path);
    if (!text) fatal("cannot read the header %s", path);
    strip_comments(text);

    /* Preprocessor lines: keep integer #defines as constants, drop the rest. */
    char *code = xmalloc(strlen(text) + 2);
    code[0] = '\0';
    size_t k = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *p = line;
        while (p < line + len && isspace((unsigned char)*p)) p++;
        if (p < line + len && *p == '#') {
            char name[MAX_NAME], val[64];
            char buf[256];
            size_t l = len < sizeof buf - 1 ? len : sizeof buf - 1;
            memcpy(buf, line, l);
            buf[l] = '\0';
            if (sscanf(buf, " # define %63s %63s", name, val) == 2) {
                char *end;
                long long v = strtoll(val, &end, 0);
                if (*end == '\0') add_const(name, v);
            }
            /* backslash continuations of a directive */
            while (nl && nl > line && nl[-1] == '\\') {
                line = nl + 1;
                nl = strchr(line, '\n');
            }
        } else {
            memcpy(code + k, line, len);
            k += len;
            code[k++] = '\n';
        }
        line = nl ? nl + 1 : NULL;
    }
    code[k] = '\0';
    free(text);

    toks_t tk = {0};
    tokenize_c(code, &tk);
    free(code);
    char **t = tk.t;
    int n = tk.n;
    for (int i = 0; i < n;) {
        if (strcmp(t[i], "extern") == 0 && i + 2 < n && t[i + 1][0] == '"' && strcmp(t[i + 2], "{") == 0) {
            i += 3; /* extern "C" { */
            continue;
        }
        if (strcmp(t[i], "}") == 0) { /* the end of extern "C" */
            i++;
            continue;
        }
        if (strcmp(t[i], "typedef") == 0 && i + 1 < n && (strcmp(t[i + 1], "struct") == 0 || strcmp(t[i + 1], "enum") == 0)) {
            /* typedef struct [TAG] { ... } NAME; / typedef enum { ... } NAME; (the DLPack
             * declarations). Functions take such a structure by pointer only, so its name is
             * kept as an opaque type (pointers to it are plain pointers); an enumeration's
             * constants are read, and its name is an int32_t. */
            bool is_enum = t[i + 1][0] == 'e';
            int lb = i + 2;
            if (lb < n && strcmp(t[lb], "{") != 0 && is_identifier(t[lb])) lb++; /* a tag */
            if (lb >= n || strcmp(t[lb], "{") != 0) fatal("header: cannot parse typedef %s near token %d", t[i + 1], i);
            int rb = lb, depth = 0;
            for (; rb < n; rb++) {
                if (strcmp(t[rb], "{") == 0) depth++;
                else if (strcmp(t[rb], "}") == 0 && --depth == 0) break;
            }
            if (rb + 2 >= n || !is_identifier(t[rb + 1]) || strcmp(t[rb + 2], ";") != 0)
                fatal("header: cannot parse typedef %s near token %d", t[i + 1], i);
            if (is_enum) parse_enumerators(t, lb + 1, rb);
            tdef_t td;
            memset(&td, 0, sizeof td);
            snprintf(td.name, sizeof td.name, "%s", t[rb + 1]);
            snprintf(td.target, sizeof td.target, "%s", is_enum ? "int32_t" : "struct");
            PUSH(g_tdefs, g_ntdefs, g_ctdefs, td);
            i = rb + 3;
            continue;
        }
        int e = i;
        while (e < n && strcmp(t[e], ";") != 0) e++;
        if (e == n) fatal("header: declaration without ';' at token '%s'", t[i]);
        if (strcmp(t[i], "enum") == 0) {
            /* enum { NAME [= value], ... }; */
            if (i + 1 >= e || strcmp(t[i + 1], "{") != 0 || strcmp(t[e - 1], "}") != 0)
                fatal("header: cannot parse enum near token %d", i);
            parse_enumerators(t, i + 2, e - 1);
        } else if (strcmp(t[i], "typedef") == 0) {
            tdef_t td;
            memset(&td, 0, sizeof td);
            bool paren = false;
            for (int j = i; j < e; j++)
                if (strcmp(t[j], "(") == 0) paren = true;
            if (paren) {
                td.fnptr = true;
                if (parse_fnptr(t, i + 1, e, td.name, sizeof td.name, td.fnsig, sizeof td.fnsig) != 0) {
                    char *s = join_tokens(t, i, e);
                    fprintf(stderr, "harness: header: cannot parse typedef: %s\n", s);
                    free(s);
                    exit(2);
                }
            } else {
                int ptr;
                bool cnst;
                if (e - i < 3 || !is_identifier(t[e - 1]) ||
                    parse_type(t, i + 1, e - 1, td.target, sizeof td.target, &ptr, &cnst) != 0 || ptr != 0)
                    fatal("header: cannot parse typedef ending in '%s'", t[e - 1]);
                snprintf(td.name, sizeof td.name, "%s", t[e - 1]);
                if (!resolve_code(td.target)) fatal("header: typedef %s of unknown type %s", td.name, td.target);
            }
            PUSH(g_tdefs, g_ntdefs, g_ctdefs, td);
        } else {
            /* A function prototype: RET NAME ( PARAMS ) ; */
            int lp = -1;
            for (int j = i; j < e; j++)
                if (strcmp(t[j], "(") == 0) {
                    lp = j;
                    break;
                }
            fsig_t s;
            memset(&s, 0, sizeof s);
            bool ok = lp > i && is_identifier(t[lp - 1]) && strcmp(t[e - 1], ")") == 0;
            if (ok) {
                snprintf(s.name, sizeof s.name, "%s", t[lp - 1]);
                ok = parse_type(t, i, lp - 1, s.ret.type, sizeof s.ret.type, &s.ret.ptr, &s.ret.cnst) == 0;
                if (ok) set_codes(&s.ret);
                ok = ok && s.ret.code && parse_params(t, lp + 1, e - 1, s.p, &s.np, true) == 0;
            }
            if (!ok) {
                char *d = join_tokens(t, i, e);
                fprintf(stderr, "harness: header: cannot parse declaration: %s;\n", d);
                free(d);
                exit(2);
            }
            if (find_sig(s.name)) fatal("header: %s declared twice", s.name);
            PUSH(g_sigs, g_nsigs, g_csigs, s);
        }
        i = e + 1;
    }
    toks_free(&tk);
    if (g_nsigs == 0) fatal("header %s declares no functions", path);

    /* Handle types: T a typedef of uint64_t, with a function T_free(T) (ag_tensor, ag_optimizer)
     * or T_close(T) (ag_safetensors). */
    for (int i = 0; i < g_ntdefs; i++) {
        if (g_tdefs[i].fnptr || resolve_code(g_tdefs[i].name) != 'U') continue;
        char fname[2 * MAX_NAME];
        snprintf(fname, sizeof fname, "%s_free", g_tdefs[i].name);
        fsig_t *f = find_sig(fname);
        if (!f) {
            snprintf(fname, sizeof fname, "%s_close", g_tdefs[i].name);
            f = find_sig(fname);
        }
        if (f && f->np == 1 && strcmp(f->p[0].type, g_tdefs[i].name) == 0 && f->p[0].ptr == 0) {
            htype_t h;
            memset(&h, 0, sizeof h);
            snprintf(h.name, sizeof h.name, "%s", g_tdefs[i].name);
            h.free_fn = f;
            PUSH(g_htypes, g_nhtypes, g_chtypes, h);
        }
    }
}

static void sig_code(const fsig_t *s, char *buf, size_t n) {
    size_t k = 0;
    buf[k++] = s->ret.code;
    buf[k++] = ':';
    for (int i = 0; i < s->np && k + 1 < n; i++) buf[k++] = s->p[i].code;
    buf[k] = '\0';
}

/* Resolves every declared function and prepares its libffi call interface. */
static void *load_library(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) fatal("dlopen %s: %s", path, dlerror());
    int missing = 0;
    for (int i = 0; i < g_nsigs; i++) {
        fsig_t *s = &g_sigs[i];
        dlerror();
        void *sym = dlsym(lib, s->name);
        if (!sym) {
            fprintf(stderr, "harness: %s is declared in the header but not exported by the library\n", s->name);
            missing++;
            continue;
        }
        memcpy(&s->fn, &sym, sizeof s->fn);
        for (int j = 0; j < s->np; j++) s->atypes[j] = ffi_for(s->p[j].code);
        if (ffi_prep_cif(&s->cif, FFI_DEFAULT_ABI, (unsigned)s->np, ffi_for(s->ret.code),
                         s->np ? s->atypes : NULL) != FFI_OK)
            fatal("ffi_prep_cif failed for %s", s->name);
    }
    if (missing) fatal("%d declared function(s) missing from %s", missing, path);
    return lib;
}

/* ========================================================================================== */
/* Calling through libffi                                                                     */
/* ========================================================================================== */

typedef union {
    int8_t c;
    uint8_t B;
    int16_t h;
    uint16_t H;
    int32_t i;
    uint32_t I;
    int64_t L;
    uint64_t U;
    float f;
    double d;
    void *p;
} slot_t;

typedef union {
    ffi_arg a;
    ffi_sarg s;
    void *p;
    double d;
    float f;
    uint64_t U;
} rslot_t;

static void invoke(fsig_t *s, void **av, rslot_t *r) {
    s->calls++;
    memset(r, 0, sizeof *r);
    ffi_call(&s->cif, s->fn, r, av);
}

/* The integer value a function returned (ag_status and friends). */
static int64_t ret_int(const fsig_t *s, const rslot_t *r) {
    switch (s->ret.code) {
    case 'b': case 'B': case 'H': case 'I': return (int64_t)(uint32_t)r->a;
    case 'c': case 'h': case 'i': return (int64_t)(int32_t)r->s;
    default: return (int64_t)r->U;
    }
}

/* ---- the functions the harness itself calls, each checked against the header ---- */

static struct {
    fsig_t *version, *last_error, *status_name, *live_handle_count, *from_data, *zeros, *ones, *full,
        *rand_uniform, *rand_normal, *tensor_free, *ndim, *shape, *numel, *dtype, *copy_data,
        *set_requires_grad, *requires_grad, *grad_of, *backward, *grad, *mul_scalar, *set_grad_enabled,
        *function_call, *function_call_into;
} F;

static struct {
    const char *name;
    const char *code;
    fsig_t **slot;
} k_used[] = {
    {"ag_version", "p:", &F.version},
    {"ag_last_error", "p:", &F.last_error},
    {"ag_status_name", "p:i", &F.status_name},
    {"ag_live_handle_count", "i:p", &F.live_handle_count},
    {"ag_tensor_from_data", "i:pppLi", &F.from_data},
    {"ag_tensor_zeros", "i:ppLi", &F.zeros},
    {"ag_tensor_ones", "i:ppLi", &F.ones},
    {"ag_tensor_full", "i:ppLdi", &F.full},
    {"ag_tensor_rand_uniform", "i:ppLddUi", &F.rand_uniform},
    {"ag_tensor_rand_normal", "i:ppLddUi", &F.rand_normal},
    {"ag_tensor_free", "i:U", &F.tensor_free},
    {"ag_tensor_ndim", "i:pU", &F.ndim},
    {"ag_tensor_shape", "i:pLU", &F.shape},
    {"ag_tensor_numel", "i:pU", &F.numel},
    {"ag_tensor_dtype", "i:pU", &F.dtype},
    {"ag_tensor_copy_data", "i:pLiU", &F.copy_data},
    {"ag_tensor_set_requires_grad", "i:Ub", &F.set_requires_grad},
    {"ag_tensor_requires_grad", "i:pU", &F.requires_grad},
    {"ag_tensor_grad", "i:pU", &F.grad_of},
    {"ag_backward", "i:UUbb", &F.backward},
    {"ag_grad", "i:ppLppLbbb", &F.grad},
    {"ag_mul_scalar", "i:pUd", &F.mul_scalar},
    {"ag_set_grad_enabled", "i:pb", &F.set_grad_enabled},
    {"ag_function_call", "i:pLUpL", &F.function_call},
    {"ag_function_call_into", "i:pLUpL", &F.function_call_into},
};

/* The callbacks the harness implements, checked against the header's typedefs. */
static const struct {
    const char *type;
    const char *code;
} k_callbacks[] = {
    {"ag_grad_hook", "i:pUp"},
    {"ag_post_accumulate_grad_hook", "i:Up"},
    {"ag_build_fn", "i:ppLp"},
    {"ag_capture_fn", "i:pLpLp"},
    {"ag_custom_forward_fn", "i:pLpLUp"},  /* outputs, noutputs, inputs, ninputs, ctx, payload */
    {"ag_custom_backward_fn", "i:pLpLUp"}, /* input_grads, ninputs, output_grads, noutputs, ctx, payload */
    {"ag_custom_jvp_fn", "i:pLppLUp"},     /* output_tangents, noutputs, inputs, input_tangents, ninputs, ... */
};

static int64_t g_float32, g_float64; /* AG_FLOAT32 / AG_FLOAT64 from the header */
static int64_t g_int64 = -1, g_bool = -1; /* AG_INT64 / AG_BOOL, when the header has them */

/* The element code of a tensor dtype (int64 'L', bool 'B', float32 'f', else float64 'd'). */
static char dtype_code(int64_t dt) {
    return dt == g_float32 ? 'f' : dt == g_int64 ? 'L' : dt == g_bool ? 'B' : 'd';
}

static void check_used_signatures(void) {
    for (size_t i = 0; i < sizeof k_used / sizeof k_used[0]; i++) {
        fsig_t *s = find_sig(k_used[i].name);
        if (!s) fatal("the header no longer declares %s, which the harness calls", k_used[i].name);
        char code[MAX_PARAMS + 4];
        sig_code(s, code, sizeof code);
        if (strcmp(code, k_used[i].code) != 0)
            fatal("signature drift: %s is declared as %s, the harness calls it as %s", s->name, code,
                  k_used[i].code);
        *k_used[i].slot = s;
    }
    for (size_t i = 0; i < sizeof k_callbacks / sizeof k_callbacks[0]; i++) {
        const tdef_t *t = find_tdef(k_callbacks[i].type);
        if (!t || !t->fnptr) fatal("the header no longer declares the callback type %s", k_callbacks[i].type);
        if (strcmp(t->fnsig, k_callbacks[i].code) != 0)
            fatal("signature drift: callback %s is %s, the harness implements %s", t->name, t->fnsig,
                  k_callbacks[i].code);
    }
    const const_t *f32 = find_const("AG_FLOAT32"), *f64 = find_const("AG_FLOAT64");
    if (!f32 || !f64 || !find_const("AG_OK")) fatal("the header lacks AG_OK, AG_FLOAT32 or AG_FLOAT64");
    g_float32 = f32->value;
    g_float64 = f64->value;
    if (find_const("AG_INT64")) g_int64 = find_const("AG_INT64")->value;
    if (find_const("AG_BOOL")) g_bool = find_const("AG_BOOL")->value;
    if (!find_htype("ag_tensor")) fatal("the header has no handle type ag_tensor with ag_tensor_free");
}

#define AV(...) ((void *[]){__VA_ARGS__})

static char g_callback_err[1024]; /* why the last custom op callback failed (kept aside as g_build_err is) */
static int g_cb_depth;             /* custom op callbacks running (nested calls inside keep their error) */
static uint64_t g_last_ctx;        /* the context of the last callback: $last_ctx (dead once it returned) */

static int32_t call_status(fsig_t *s, void **av) {
    rslot_t r;
    invoke(s, av, &r);
    return (int32_t)ret_int(s, &r);
}

static const char *api_string(fsig_t *s, void **av) {
    rslot_t r;
    invoke(s, av, &r);
    return (const char *)r.p;
}

static const char *api_last_error(void) {
    const char *m = api_string(F.last_error, NULL);
    return m ? m : "(NULL)";
}

static const char *api_status_name(int32_t st) { return api_string(F.status_name, AV(&st)); }

static int32_t api_free(uint64_t t) { return call_status(F.tensor_free, AV(&t)); }

static int32_t api_numel(int64_t *out, uint64_t t) { return call_status(F.numel, AV(&out, &t)); }

static int32_t api_ndim(int64_t *out, uint64_t t) { return call_status(F.ndim, AV(&out, &t)); }

static int32_t api_shape(int64_t *out, int64_t cap, uint64_t t) { return call_status(F.shape, AV(&out, &cap, &t)); }

static int32_t api_dtype(int32_t *out, uint64_t t) { return call_status(F.dtype, AV(&out, &t)); }

static int32_t api_copy_f64(double *out, int64_t cap, uint64_t t) {
    int32_t dt = (int32_t)g_float64;
    return call_status(F.copy_data, AV(&out, &cap, &dt, &t));
}

static int32_t api_from_data(uint64_t *out, const void *data, const int64_t *shape, int64_t ndim, int32_t dt) {
    return call_status(F.from_data, AV(&out, &data, &shape, &ndim, &dt));
}

static int32_t api_set_requires_grad(uint64_t t, bool on) { return call_status(F.set_requires_grad, AV(&t, &on)); }

static int32_t api_requires_grad(bool *out, uint64_t t) { return call_status(F.requires_grad, AV(&out, &t)); }

static int32_t api_grad_of(uint64_t *out, uint64_t t) { return call_status(F.grad_of, AV(&out, &t)); }

static int32_t api_backward(uint64_t root, uint64_t seed, bool retain, bool create) {
    if (g_cb_depth == 0) g_callback_err[0] = '\0';
    return call_status(F.backward, AV(&root, &seed, &retain, &create));
}

static int32_t api_grad(uint64_t *out, const uint64_t *outputs, int64_t no, const uint64_t *seeds,
                        const uint64_t *inputs, int64_t ni, bool retain, bool create, bool allow_unused) {
    if (g_cb_depth == 0) g_callback_err[0] = '\0';
    return call_status(F.grad, AV(&out, &outputs, &no, &seeds, &inputs, &ni, &retain, &create, &allow_unused));
}

static int32_t api_live(int64_t *out) { return call_status(F.live_handle_count, AV(&out)); }

static int32_t api_set_grad_enabled(bool *prev, bool on) { return call_status(F.set_grad_enabled, AV(&prev, &on)); }

/* A failed internal call: records the status and the library's message. */
static int api_fail(const char *what, int32_t st) {
    return failf("%s failed: %s (%s)%s%s", what, api_status_name(st), api_last_error(),
                 g_callback_err[0] ? "; a custom op callback: " : "", g_callback_err);
}

/* The values of tensor t as float64 (allocated; *n receives numel). */
static int tensor_values(uint64_t t, double **vals, int64_t *n) {
    int32_t st = api_numel(n, t);
    if (st) return api_fail("ag_tensor_numel", st);
    *vals = xcalloc((size_t)(*n > 0 ? *n : 1), sizeof(double));
    st = api_copy_f64(*vals, *n, t);
    if (st) {
        free(*vals);
        *vals = NULL;
        return api_fail("ag_tensor_copy_data", st);
    }
    return 0;
}

/* ========================================================================================== */
/* Case files                                                                                 */
/* ========================================================================================== */

enum { FILL_VALUES, FILL_UNIFORM, FILL_NORMAL, FILL_ZEROS, FILL_ONES, FILL_FULL };

typedef struct {
    char *name;
    int32_t dtype;
    int ndim;
    int64_t shape[MAX_RANK];
    int64_t numel;
    int fill;
    double *values; /* FILL_VALUES */
    uint64_t seed;
    double a, b; /* range, mean/std, or the FULL value */
    bool grad;
    int line;
} input_t;

enum { S_CALL, S_ASSIGN, S_FREE, S_GRADMODE, S_EXPECT, S_EXPECT_GRAD, S_EXPECT_COUNTER, S_REPLAY, S_SAME, S_STATUS, S_FROM_CALL };

typedef struct {
    int kind, line;
    char **lhs; /* S_ASSIGN: the names bound to the outputs */
    int nlhs;
    char *fn;
    char **args;
    int nargs;
    bool has_status; /* expect_status given for this statement */
    int32_t status;
    char *want_string; /* expect_string given for this statement */
} stmt_t;

/* The callbacks of a custom op, written in the case file between 'op NAME' and 'end': each
 * section (forward, backward, jvp) names what the callback is given and what it returns, and
 * holds the statements it runs (see run_section). */
enum { SEC_FORWARD, SEC_BACKWARD, SEC_JVP, N_SECTIONS };

typedef struct {
    bool present;
    int line;
    char **given[2]; /* forward: inputs; backward: output gradients; jvp: inputs, then tangents */
    int ngiven[2];
    char **ret; /* the names (or null, or a number) written to the callback's outputs */
    int nret;
    stmt_t *st;
    int nst, cst;
} section_t;

typedef struct {
    char *name;
    int line;
    section_t sec[N_SECTIONS];
} opdef_t;

typedef struct {
    char *name, *file;
    int line;
    opdef_t *defs; /* the custom ops' callbacks */
    int ndefs, cdefs;
    int open_def, open_sec; /* parser state: the op block and section being read (-1: none) */
    input_t *in;
    int nin, cin;
    stmt_t *st; /* the program, in order */
    int nst, cst;
    stmt_t *post; /* expect_counter, checked after every handle is released */
    int npost, cpost;
    char *output;
    int output_line; /* where gradient failures are reported */
    bool gradcheck, retain, second;
    double h, atol, rtol;          /* first-order check (0: defaults) */
    double h2, atol2, rtol2;       /* second-order check (0: defaults) */
    bool has_status_pending;       /* parser state */
    int32_t pending_status;
    char *pending_string;
} case_t;

/* Splits a case-file line into tokens: whitespace-separated, "[...]" and "\"...\"" kept whole,
 * '#' at the start of a token begins a comment. */
static void tokenize_line(const char *s, toks_t *tk) {
    const char *p = s;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p || *p == '#') break;
        const char *b = p;
        int depth = 0;
        bool quote = false;
        while (*p && (depth > 0 || quote || !isspace((unsigned char)*p))) {
            if (quote && *p == '\\' && p[1]) p++; /* an escape inside a string (\" included) */
            else if (*p == '"') quote = !quote;
            else if (!quote && *p == '[') depth++;
            else if (!quote && *p == ']') depth--;
            p++;
        }
        size_t n = (size_t)(p - b);
        char *t = xmalloc(n + 1);
        memcpy(t, b, n);
        t[n] = '\0';
        PUSH(tk->t, tk->n, tk->cap, t);
    }
}

/* Splits "[a, b c]" into its elements (allocated strings); returns -1 if not a list. Commas
 * inside "strings" are kept. */
static int split_list(const char *tok, toks_t *out) {
    size_t n = strlen(tok);
    if (n < 2 || tok[0] != '[' || tok[n - 1] != ']') return -1;
    char *inner = xmalloc(n);
    memcpy(inner, tok + 1, n - 2);
    inner[n - 2] = '\0';
    bool quote = false;
    for (char *p = inner; *p; p++) {
        if (quote && *p == '\\' && p[1]) p++;
        else if (*p == '"') quote = !quote;
        else if (!quote && *p == ',') *p = ' ';
    }
    tokenize_line(inner, out);
    free(inner);
    return 0;
}

static int parse_double(const char *s, double *out) {
    char *end;
    if (!*s) return -1;
    *out = strtod(s, &end);
    return *end == '\0' ? 0 : -1;
}

static int parse_i64_literal(const char *s, int64_t *out) {
    char *end;
    if (!*s) return -1;
    long long v = strtoll(s, &end, 0);
    if (*end != '\0') return -1;
    *out = v;
    return 0;
}

static int parse_dtype_name(const char *s, int32_t *dt) {
    int64_t v;
    if (strcmp(s, "float32") == 0) *dt = (int32_t)g_float32;
    else if (strcmp(s, "float64") == 0) *dt = (int32_t)g_float64;
    else if (strcmp(s, "int64") == 0 && g_int64 >= 0) *dt = (int32_t)g_int64;
    else if (strcmp(s, "bool") == 0 && g_bool >= 0) *dt = (int32_t)g_bool;
    else if (find_const(s)) *dt = (int32_t)find_const(s)->value;
    else if (parse_i64_literal(s, &v) == 0) *dt = (int32_t)v;
    else return -1;
    return 0;
}

/* A status name from the header (AG_ERR_SHAPE) or a number. */
static int parse_status(const char *s, int32_t *st) {
    const const_t *c = find_const(s);
    int64_t v;
    if (c) *st = (int32_t)c->value;
    else if (parse_i64_literal(s, &v) == 0) *st = (int32_t)v;
    else return -1;
    return 0;
}

/* key=value options: returns the value if tok is "key=...". */
static const char *opt(const char *tok, const char *key) {
    size_t n = strlen(key);
    return strncmp(tok, key, n) == 0 && tok[n] == '=' ? tok + n + 1 : NULL;
}

static void free_stmt(stmt_t *s) {
    for (int i = 0; i < s->nlhs; i++) free(s->lhs[i]);
    free(s->lhs);
    for (int i = 0; i < s->nargs; i++) free(s->args[i]);
    free(s->args);
    free(s->fn);
    free(s->want_string);
}

static void free_case(case_t *c) {
    free(c->name);
    free(c->file);
    for (int i = 0; i < c->nin; i++) {
        free(c->in[i].name);
        free(c->in[i].values);
    }
    free(c->in);
    for (int i = 0; i < c->nst; i++) free_stmt(&c->st[i]);
    free(c->st);
    for (int i = 0; i < c->npost; i++) free_stmt(&c->post[i]);
    free(c->post);
    for (int d = 0; d < c->ndefs; d++) {
        opdef_t *def = &c->defs[d];
        for (int k = 0; k < N_SECTIONS; k++) {
            section_t *sec = &def->sec[k];
            for (int g = 0; g < 2; g++) {
                for (int i = 0; i < sec->ngiven[g]; i++) free(sec->given[g][i]);
                free(sec->given[g]);
            }
            for (int i = 0; i < sec->nret; i++) free(sec->ret[i]);
            free(sec->ret);
            for (int i = 0; i < sec->nst; i++) free_stmt(&sec->st[i]);
            free(sec->st);
        }
        free(def->name);
    }
    free(c->defs);
    free(c->output);
    free(c->pending_string);
}

static int parse_shape(const char *tok, int64_t *shape, int *ndim) {
    toks_t el = {0};
    if (split_list(tok, &el) != 0) return -1;
    int rc = 0;
    if (el.n > MAX_RANK) rc = -1;
    for (int i = 0; rc == 0 && i < el.n; i++)
        if (parse_i64_literal(el.t[i], &shape[i]) != 0 || shape[i] < 0) rc = -1;
    *ndim = el.n;
    toks_free(&el);
    return rc;
}

/* input NAME DTYPE [SHAPE] FILL... [grad] */
static int parse_input(case_t *c, toks_t *tk, int line) {
    input_t in;
    memset(&in, 0, sizeof in);
    in.line = line;
    if (tk->n < 5) return failf("input: expected 'input NAME DTYPE [SHAPE] FILL'");
    in.name = xstrdup(tk->t[1]);
    if (parse_dtype_name(tk->t[2], &in.dtype) != 0) {
        free(in.name);
        return failf("input %s: unknown dtype '%s'", tk->t[1], tk->t[2]);
    }
    if (parse_shape(tk->t[3], in.shape, &in.ndim) != 0) {
        free(in.name);
        return failf("input %s: bad shape '%s'", tk->t[1], tk->t[3]);
    }
    in.numel = 1;
    for (int i = 0; i < in.ndim; i++) in.numel *= in.shape[i];
    const char *fill = tk->t[4];
    int i = 5;
    int rc = 0;
    if (strcmp(fill, "values") == 0) {
        in.fill = FILL_VALUES;
        in.values = xcalloc((size_t)(in.numel ? in.numel : 1), sizeof(double));
        int64_t k = 0;
        for (; i < tk->n && strcmp(tk->t[i], "grad") != 0; i++, k++) {
            if (k >= in.numel || parse_double(tk->t[i], &in.values[k]) != 0) {
                rc = failf("input %s: too many or bad values", in.name);
                break;
            }
        }
        if (rc == 0 && k != in.numel)
            rc = failf("input %s: %" PRId64 " values for %" PRId64 " elements", in.name, k, in.numel);
    } else if (strcmp(fill, "random") == 0 || strcmp(fill, "normal") == 0) {
        bool uniform = strcmp(fill, "random") == 0;
        in.fill = uniform ? FILL_UNIFORM : FILL_NORMAL;
        in.a = uniform ? -1 : 0;
        in.b = 1;
        for (; i < tk->n && strcmp(tk->t[i], "grad") != 0; i++) {
            const char *v;
            int64_t s;
            if ((v = opt(tk->t[i], "seed")) && parse_i64_literal(v, &s) == 0) {
                in.seed = (uint64_t)s;
            } else if (uniform && (v = opt(tk->t[i], "range")) && sscanf(v, "%lf,%lf", &in.a, &in.b) == 2) {
            } else if (!uniform && (v = opt(tk->t[i], "mean")) && parse_double(v, &in.a) == 0) {
            } else if (!uniform && (v = opt(tk->t[i], "std")) && parse_double(v, &in.b) == 0) {
            } else {
                rc = failf("input %s: bad %s option '%s'", in.name, fill, tk->t[i]);
                break;
            }
        }
    } else if (strcmp(fill, "zeros") == 0 || strcmp(fill, "ones") == 0) {
        in.fill = fill[0] == 'z' ? FILL_ZEROS : FILL_ONES;
    } else if (strcmp(fill, "full") == 0) {
        in.fill = FILL_FULL;
        if (i >= tk->n || parse_double(tk->t[i], &in.a) != 0) rc = failf("input %s: full needs a value", in.name);
        i++;
    } else {
        rc = failf("input %s: unknown fill '%s'", in.name, fill);
    }
    if (rc == 0 && i < tk->n) {
        if (strcmp(tk->t[i], "grad") == 0 && i + 1 == tk->n) in.grad = true;
        else rc = failf("input %s: unexpected '%s'", in.name, tk->t[i]);
    }
    for (int j = 0; rc == 0 && j < c->nin; j++)
        if (strcmp(c->in[j].name, in.name) == 0) rc = failf("input %s declared twice", in.name);
    if (rc != 0) {
        free(in.name);
        free(in.values);
        return rc;
    }
    PUSH(c->in, c->nin, c->cin, in);
    return 0;
}

static void copy_tokens(toks_t *tk, int from, char ***out, int *n) {
    *n = tk->n - from;
    *out = xcalloc((size_t)(*n > 0 ? *n : 1), sizeof(char *));
    for (int i = from; i < tk->n; i++) (*out)[i - from] = xstrdup(tk->t[i]);
}

static int parse_check_opts(toks_t *tk, int from, double *h, double *atol, double *rtol) {
    for (int i = from; i < tk->n; i++) {
        const char *v;
        if ((v = opt(tk->t[i], "h")) && parse_double(v, h) == 0) continue;
        if ((v = opt(tk->t[i], "atol")) && parse_double(v, atol) == 0) continue;
        if ((v = opt(tk->t[i], "rtol")) && parse_double(v, rtol) == 0) continue;
        return failf("unknown option '%s'", tk->t[i]);
    }
    return 0;
}

/* Splits "a,b,c" into names (allocated). */
static void split_names(const char *tok, char ***out, int *n) {
    toks_t el = {0};
    char *list = xmalloc(strlen(tok) + 3);
    sprintf(list, "[%s]", tok);
    split_list(list, &el);
    free(list);
    *out = el.t;
    *n = el.n;
}

static const char *const k_section_names[N_SECTIONS] = {"forward", "backward", "jvp"};

static int parse_case_line(case_t *c, toks_t *tk, int line);

/* A line inside 'op NAME' ... 'end': a section header, 'end', or a statement of the open
 * section (calls, assignments, free, grad_mode, expect..., and 'status N'). */
static int parse_op_line(case_t *c, toks_t *tk, int line) {
    opdef_t *def = &c->defs[c->open_def];
    const char *d = tk->t[0];
    section_t *open = c->open_sec >= 0 ? &def->sec[c->open_sec] : NULL;
    bool header = false;
    for (int k = 0; k < N_SECTIONS; k++) header = header || strcmp(d, k_section_names[k]) == 0;
    if (header || strcmp(d, "end") == 0) {
        if (c->has_status_pending || c->pending_string)
            return failf("expect_status/expect_string at the end of a section, with no call after it");
        if (open && !open->nst && !open->nret && !open->ngiven[0]) return failf("op %s: an empty section", def->name);
    }
    if (strcmp(d, "end") == 0) {
        if (tk->n != 1) return failf("end takes no arguments");
        if (!def->sec[SEC_FORWARD].present) return failf("op %s has no forward section", def->name);
        c->open_def = c->open_sec = -1;
        return 0;
    }
    if (header) {
        /* forward IN,.. -> OUT,..   backward GOUT,.. -> GIN,..   jvp IN,.. TAN,.. -> TOUT,.. */
        int k = 0;
        while (strcmp(k_section_names[k], d) != 0) k++;
        section_t *sec = &def->sec[k];
        int ngiven = k == SEC_JVP ? 2 : 1;
        if (sec->present) return failf("op %s: two %s sections", def->name, d);
        if (tk->n != ngiven + 3 || strcmp(tk->t[ngiven + 1], "->") != 0)
            return failf("%s: expected '%s %s-> NAME,...'", d, d, k == SEC_JVP ? "INPUTS TANGENTS " : "NAME,... ");
        sec->present = true;
        sec->line = line;
        for (int g = 0; g < ngiven; g++) split_names(tk->t[1 + g], &sec->given[g], &sec->ngiven[g]);
        split_names(tk->t[ngiven + 2], &sec->ret, &sec->nret);
        if (k == SEC_JVP && sec->ngiven[0] != sec->ngiven[1])
            return failf("jvp: %d inputs but %d tangents", sec->ngiven[0], sec->ngiven[1]);
        c->open_sec = k;
        return 0;
    }
    if (!open) return failf("op %s: a statement before any section (forward, backward, jvp)", def->name);
    if (strcmp(d, "status") == 0 || strcmp(d, "from_call") == 0) {
        stmt_t s;
        memset(&s, 0, sizeof s);
        s.line = line;
        s.kind = d[0] == 's' ? S_STATUS : S_FROM_CALL;
        int64_t v;
        if (tk->n != 2 || parse_i64_literal(tk->t[1], &v) != 0) return failf("%s: expected '%s INTEGER'", d, d);
        s.fn = xstrdup(d);
        copy_tokens(tk, 1, &s.args, &s.nargs);
        PUSH(open->st, open->nst, open->cst, s);
        return 0;
    }
    static const char *const refused[] = {"input", "output", "gradcheck", "retain", "second_derivative", "replay",
                                          "expect_counter", "expect_same", "op", "case"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(d, refused[i]) == 0) return failf("'%s' is not allowed inside an op's section", d);
    for (int i = 1; i < tk->n; i++)
        if (strstr(tk->t[i], "build:") || strstr(tk->t[i], "capture:"))
            return failf("a section cannot pass build: or capture: functions");
    /* parse as a program line, into the section */
    stmt_t *st = c->st;
    int nst = c->nst, cst = c->cst;
    c->st = open->st, c->nst = open->nst, c->cst = open->cst;
    int od = c->open_def;
    c->open_def = -1;
    int rc = parse_case_line(c, tk, line);
    c->open_def = od;
    open->st = c->st, open->nst = c->nst, open->cst = c->cst;
    c->st = st, c->nst = nst, c->cst = cst;
    return rc;
}

/* Parses one line into the case. */
static int parse_case_line(case_t *c, toks_t *tk, int line) {
    g_line = line;
    const char *d = tk->t[0];
    stmt_t s;
    memset(&s, 0, sizeof s);
    s.line = line;
    if (c->open_def >= 0) return parse_op_line(c, tk, line);
    bool has_eq = false;
    for (int i = 1; i < tk->n; i++) has_eq = has_eq || strcmp(tk->t[i], "=") == 0;
    if (strcmp(d, "op") == 0 && !has_eq) { /* (a line 'op = ...' assigns to a name op) */
        if (tk->n != 2 || !is_identifier(tk->t[1])) return failf("op: expected 'op NAME'");
        for (int i = 0; i < c->ndefs; i++)
            if (strcmp(c->defs[i].name, tk->t[1]) == 0) return failf("op %s defined twice", tk->t[1]);
        opdef_t def;
        memset(&def, 0, sizeof def);
        def.name = xstrdup(tk->t[1]);
        def.line = line;
        PUSH(c->defs, c->ndefs, c->cdefs, def);
        c->open_def = c->ndefs - 1;
        c->open_sec = -1;
        return 0;
    }
    if (strcmp(d, "status") == 0 || strcmp(d, "from_call") == 0) return failf("%s is a statement of an op's section", d);
    if (strcmp(d, "expect_same") == 0) {
        if (tk->n < 3) return failf("expect_same: expected 'expect_same A B [tol=T] [grads=[X,..]]'");
        s.kind = S_SAME;
        s.fn = xstrdup(d);
        copy_tokens(tk, 1, &s.args, &s.nargs);
        PUSH(c->st, c->nst, c->cst, s);
        return 0;
    }
    if (strcmp(d, "input") == 0) return parse_input(c, tk, line);
    if (strcmp(d, "output") == 0) {
        if (tk->n != 2 || c->output) return failf("output: expected exactly one 'output NAME'");
        c->output = xstrdup(tk->t[1]);
        c->output_line = line;
        return 0;
    }
    if (strcmp(d, "gradcheck") == 0) {
        if (tk->n == 2 && strcmp(tk->t[1], "off") == 0) {
            c->gradcheck = false;
            return 0;
        }
        return parse_check_opts(tk, 1, &c->h, &c->atol, &c->rtol);
    }
    if (strcmp(d, "retain") == 0) {
        c->retain = true;
        return tk->n == 1 ? 0 : failf("retain takes no arguments");
    }
    if (strcmp(d, "second_derivative") == 0) {
        c->second = true;
        return parse_check_opts(tk, 1, &c->h2, &c->atol2, &c->rtol2);
    }
    if (strcmp(d, "expect_status") == 0) {
        if (tk->n != 2 || parse_status(tk->t[1], &c->pending_status) != 0)
            return failf("expect_status: unknown status '%s'", tk->n > 1 ? tk->t[1] : "");
        c->has_status_pending = true;
        return 0;
    }
    if (strcmp(d, "expect_string") == 0) {
        if (tk->n < 2) return failf("expect_string: expected text");
        free(c->pending_string);
        /* the rest of the line, tokens joined by single spaces */
        c->pending_string = join_tokens(tk->t, 1, tk->n);
        return 0;
    }
    if (strcmp(d, "expect") == 0 || strcmp(d, "expect_grad") == 0 || strcmp(d, "expect_counter") == 0) {
        if (tk->n < 2) return failf("%s: expected a name", d);
        s.kind = d[6] == '\0' ? S_EXPECT : d[7] == 'g' ? S_EXPECT_GRAD : S_EXPECT_COUNTER;
        s.fn = xstrdup(d);
        copy_tokens(tk, 1, &s.args, &s.nargs);
        if (s.kind == S_EXPECT_COUNTER) PUSH(c->post, c->npost, c->cpost, s);
        else PUSH(c->st, c->nst, c->cst, s);
        return 0;
    }
    if (strcmp(d, "replay") == 0) {
        if (tk->n < 2 || !is_identifier(tk->t[1])) return failf("replay: expected 'replay FUNCTION [options]'");
        s.kind = S_REPLAY;
        s.fn = xstrdup(d);
        copy_tokens(tk, 1, &s.args, &s.nargs);
        PUSH(c->st, c->nst, c->cst, s);
        return 0;
    }
    if (strcmp(d, "free") == 0 || strcmp(d, "grad_mode") == 0) {
        if (tk->n != 2) return failf("%s: expected one argument", d);
        if (d[0] == 'g' && strcmp(tk->t[1], "on") != 0 && strcmp(tk->t[1], "off") != 0)
            return failf("grad_mode: expected on or off");
        s.kind = d[0] == 'f' ? S_FREE : S_GRADMODE;
    } else if (strcmp(d, "call") == 0) {
        if (tk->n < 2) return failf("call: expected a function name");
        s.kind = S_CALL;
        s.fn = xstrdup(tk->t[1]);
    } else {
        /* NAME... = FUNCTION ARGS */
        int eq = -1;
        for (int i = 0; i < tk->n; i++)
            if (strcmp(tk->t[i], "=") == 0) {
                eq = i;
                break;
            }
        if (eq < 1 || eq + 1 >= tk->n) return failf("cannot understand '%s'", d);
        s.kind = S_ASSIGN;
        s.nlhs = eq;
        s.lhs = xcalloc((size_t)eq, sizeof(char *));
        for (int i = 0; i < eq; i++) {
            if (!is_identifier(tk->t[i])) {
                for (int j = 0; j < i; j++) free(s.lhs[j]);
                free(s.lhs);
                return failf("'%s' is not a name", tk->t[i]);
            }
            s.lhs[i] = xstrdup(tk->t[i]);
        }
        s.fn = xstrdup(tk->t[eq + 1]);
        copy_tokens(tk, eq + 2, &s.args, &s.nargs);
    }
    if (s.kind == S_FREE || s.kind == S_GRADMODE) copy_tokens(tk, 1, &s.args, &s.nargs);
    if (s.kind == S_CALL) copy_tokens(tk, 2, &s.args, &s.nargs);
    if (s.kind == S_CALL || s.kind == S_ASSIGN) {
        if (!find_sig(s.fn)) {
            free_stmt(&s);
            return failf("unknown function '%s' (not declared in the header)", tk->t[s.kind == S_CALL ? 1 : 0]);
        }
        s.has_status = c->has_status_pending;
        s.status = c->pending_status;
        s.want_string = c->pending_string;
        c->has_status_pending = false;
        c->pending_string = NULL;
    }
    PUSH(c->st, c->nst, c->cst, s);
    return 0;
}

/* The cases of every file, in order. */
typedef struct {
    case_t *c;
    int n, cap;
} caselist_t;

static case_t new_case(const char *name, const char *file, int line) {
    case_t c;
    memset(&c, 0, sizeof c);
    c.name = xstrdup(name);
    c.file = xstrdup(file);
    c.line = line;
    c.gradcheck = true;
    c.open_def = c.open_sec = -1;
    return c;
}

static int finish_case(case_t *c) {
    if (c->open_def >= 0) return failf("op %s: no 'end'", c->defs[c->open_def].name);
    if (c->has_status_pending || c->pending_string)
        return failf("expect_status/expect_string at the end of the case, with no call after it");
    if ((c->retain || c->second) && !c->output) return failf("retain/second_derivative need an output");
    if (c->retain && c->second) return failf("retain and second_derivative do not combine (use two cases)");
    return 0;
}

/* Reads a case file: one case, or several each beginning with "case NAME". A file that does not
 * parse is reported as one failure (its line and reason) and contributes no cases. */
static void read_cases(const char *path, caselist_t *out, int *parse_failures) {
    char *text = read_file(path);
    if (!text) {
        printf("FAIL %s: cannot read the file\n", path);
        (*parse_failures)++;
        return;
    }
    /* the default case name: the file name without directory and extension */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char name[256];
    snprintf(name, sizeof name, "%s", base);
    char *dot = strrchr(name, '.');
    if (dot) *dot = '\0';

    case_t cur = new_case(name, path, 0);
    bool started = false, any_case_line = false, bad = false;
    int line = 0;
    g_failed = false;
    g_line = 0;
    for (char *p = text; p && *p && !bad;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        line++;
        toks_t tk = {0};
        tokenize_line(p, &tk);
        if (tk.n > 0) {
            if (strcmp(tk.t[0], "case") == 0) {
                if (tk.n != 2) {
                    g_line = line;
                    failf("case: expected 'case NAME'");
                    bad = true;
                } else {
                    if (started || any_case_line) {
                        if (finish_case(&cur) != 0) bad = true;
                        else PUSH(out->c, out->n, out->cap, cur);
                    } else {
                        free_case(&cur);
                    }
                    if (!bad) {
                        char full[512];
                        snprintf(full, sizeof full, "%s/%s", name, tk.t[1]);
                        cur = new_case(full, path, line);
                        any_case_line = true;
                        started = false;
                    }
                }
            } else {
                started = true;
                if (parse_case_line(&cur, &tk, line) != 0) bad = true;
            }
        }
        toks_free(&tk);
        p = nl ? nl + 1 : NULL;
    }
    if (!bad && (started || any_case_line)) {
        if (finish_case(&cur) != 0) bad = true;
        else PUSH(out->c, out->n, out->cap, cur);
    } else if (!bad) {
        g_line = 0;
        failf("no statements");
        bad = true;
    }
    if (bad) {
        printf("FAIL %s: parse error: %s\n", path, g_err);
        (*parse_failures)++;
        free_case(&cur);
    }
    free(text);
}

/* ========================================================================================== */
/* Running a program                                                                          */
/* ========================================================================================== */

typedef struct {
    char *name;
    const htype_t *type;
    uint64_t h;
    bool freed;    /* released by the program: the value stays, stale, for later misuse */
    bool borrowed; /* owned by someone else (the inputs a gradcheck build function receives) */
} bind_t;

typedef struct {
    char *name;
    int64_t v;
} ivar_t;

typedef struct {
    int64_t calls, destroyed;
} counter_t;

static counter_t g_counters[N_COUNTERS]; /* the primary run's hook counters */
static counter_t g_scratch[N_COUNTERS];  /* the counters of replays (finite differences) */

typedef struct {
    const case_t *c;
    bool primary; /* the case's own run (checks expectations); replays only compute values */
    bind_t *b;
    int nb, cb;
    ivar_t *iv;
    int niv, civ;
    counter_t *counters;
    bool callback;    /* a custom op's callback: its checks run in every run, replays included */
    int32_t ret_status; /* what the callback returns ('status N') */
} env_t;

static void env_init(env_t *e, const case_t *c, bool primary) {
    memset(e, 0, sizeof *e);
    e->c = c;
    e->primary = primary;
    e->counters = primary ? g_counters : g_scratch;
}

static bind_t *env_find(env_t *e, const char *name) {
    for (int i = e->nb - 1; i >= 0; i--)
        if (strcmp(e->b[i].name, name) == 0) return &e->b[i];
    return NULL;
}

static int env_bind(env_t *e, const char *name, const htype_t *type, uint64_t h, bool borrowed) {
    bind_t *old = env_find(e, name);
    if (old && !old->freed && !old->borrowed && old->h != 0)
        return failf("'%s' is already bound to a live handle (free it first)", name);
    if (old) {
        free(old->name);
        *old = e->b[--e->nb];
    }
    bind_t b = {xstrdup(name), type, h, false, borrowed};
    PUSH(e->b, e->nb, e->cb, b);
    return 0;
}

/* Releases every live handle the run holds. */
static int env_cleanup(env_t *e) {
    int rc = 0;
    for (int i = e->nb - 1; i >= 0; i--) {
        bind_t *b = &e->b[i];
        if (!b->freed && !b->borrowed && b->h != 0) {
            uint64_t h = b->h;
            int32_t st = call_status(b->type->free_fn, AV(&h));
            if (st) rc = failf("freeing '%s' at the end: %s (%s)", b->name, api_status_name(st), api_last_error());
        }
        free(b->name);
    }
    free(e->b);
    for (int i = 0; i < e->niv; i++) free(e->iv[i].name);
    free(e->iv);
    e->b = NULL;
    e->iv = NULL;
    e->nb = e->niv = 0;
    return rc;
}

static int env_set_int(env_t *e, const char *name, int64_t v) {
    for (int i = 0; i < e->niv; i++)
        if (strcmp(e->iv[i].name, name) == 0) {
            e->iv[i].v = v;
            return 0;
        }
    ivar_t iv = {xstrdup(name), v};
    PUSH(e->iv, e->niv, e->civ, iv);
    return 0;
}

/* An integer argument: a literal, $var, a header constant, float32/float64, true/false. */
static int parse_int_arg(env_t *e, const char *tok, int64_t *out) {
    if (strcmp(tok, "$last_ctx") == 0) { /* the context of the last custom op callback */
        *out = (int64_t)g_last_ctx;
        return 0;
    }
    if (tok[0] == '$') {
        for (int i = 0; i < e->niv; i++)
            if (strcmp(e->iv[i].name, tok + 1) == 0) {
                *out = e->iv[i].v;
                return 0;
            }
        return failf("unknown variable '%s'", tok);
    }
    if (strcmp(tok, "true") == 0 || strcmp(tok, "false") == 0) {
        *out = tok[0] == 't';
        return 0;
    }
    int32_t dt;
    if ((strcmp(tok, "float32") == 0 || strcmp(tok, "float64") == 0) && parse_dtype_name(tok, &dt) == 0) {
        *out = dt;
        return 0;
    }
    const const_t *c = find_const(tok);
    if (c) {
        *out = c->value;
        return 0;
    }
    if (parse_i64_literal(tok, out) == 0) return 0;
    return failf("'%s' is not an integer", tok);
}

static int parse_bool_arg(const char *tok, bool *out) {
    if (strcmp(tok, "true") == 0 || strcmp(tok, "1") == 0) *out = true;
    else if (strcmp(tok, "false") == 0 || strcmp(tok, "0") == 0) *out = false;
    else return failf("'%s' is not a bool", tok);
    return 0;
}

/* A handle argument: a bound name (stale if freed), null, or a literal number (made up). */
static int parse_handle_arg(env_t *e, const char *tok, uint64_t *out) {
    if (strcmp(tok, "null") == 0) {
        *out = 0;
        return 0;
    }
    if (tok[0] == '$') { /* an integer variable ($last_ctx, $ctx): a handle of another kind */
        int64_t v;
        if (parse_int_arg(e, tok, &v) != 0) return -1;
        *out = (uint64_t)v;
        return 0;
    }
    if (isdigit((unsigned char)tok[0])) {
        char *end;
        unsigned long long v = strtoull(tok, &end, 0);
        if (*end == '\0') {
            *out = v;
            return 0;
        }
    }
    bind_t *b = env_find(e, tok);
    if (!b) return failf("'%s' is not bound (a failed statement, or a typo?)", tok);
    *out = b->h;
    return 0;
}

/* ---- callbacks the cases can pass: hook:..., destroy:count, build:NAME ---- */

static int32_t hook_count(uint64_t *replacement, uint64_t grad, void *user_data) {
    (void)replacement;
    (void)grad;
    if (user_data) ((counter_t *)user_data)->calls++;
    return 0;
}

/* Replaces the gradient by 2 * gradient (computed through the library). */
static int32_t hook_scale2(uint64_t *replacement, uint64_t grad, void *user_data) {
    if (user_data) ((counter_t *)user_data)->calls++;
    double two = 2.0;
    return call_status(F.mul_scalar, AV(&replacement, &grad, &two)) == 0 ? 0 : 1;
}

static int32_t hook_fail(uint64_t *replacement, uint64_t grad, void *user_data) {
    (void)replacement;
    (void)grad;
    if (user_data) ((counter_t *)user_data)->calls++;
    return 1;
}

/* Gradient-ready hooks (ag_post_accumulate_grad_hook): ready:count counts its calls and checks
 * that the leaf already holds a gradient (it runs after the accumulation); ready:fail fails. */
static int32_t ready_count(uint64_t t, void *user_data) {
    uint64_t grad = 0, *out = &grad;
    if (call_status(F.grad_of, AV(&out, &t)) != 0 || grad == 0) return 2;
    call_status(F.tensor_free, AV(&grad));
    if (user_data) ((counter_t *)user_data)->calls++;
    return 0;
}

static int32_t ready_fail(uint64_t t, void *user_data) {
    (void)t;
    if (user_data) ((counter_t *)user_data)->calls++;
    return 1;
}

static const struct {
    const char *name;
    int32_t (*fn)(uint64_t, void *);
} k_ready_hooks[] = {{"count", ready_count}, {"fail", ready_fail}};

static void destroy_count(void *user_data) {
    if (user_data) ((counter_t *)user_data)->destroyed++;
}

static const struct {
    const char *name;
    int32_t (*fn)(uint64_t *, uint64_t, void *);
} k_hooks[] = {{"count", hook_count}, {"scale2", hook_scale2}, {"fail", hook_fail}};

/* What a build:NAME callback runs: the program before the ag_gradcheck statement. */
static struct {
    bool active;
    const case_t *c;
    int upto;                   /* statements [0, upto) */
    const char *result;         /* the name the build function returns */
    char **names;               /* names the build function's inputs are bound to */
    int nnames;
} g_build;

static int run_program(env_t *e, int upto);
static int create_inputs(env_t *e, double **vals, const char *const *skip, int nskip);

/* Why the last build function failed: a failing build is a callback failure the case may expect
 * (AG_ERR_CALLBACK), so it is kept aside and reported only if that status was not expected. */
static char g_build_err[1024];

static int32_t build_program(uint64_t *out, const uint64_t *inputs, int64_t ninputs, void *user_data) {
    (void)user_data;
    if (!g_build.active || ninputs != g_build.nnames) return 1;
    /* The nested run reports its own lines and errors; the caller's are restored after it. */
    int line = g_line;
    bool failed = g_failed;
    char *saved = xstrdup(g_err);
    g_failed = false;
    env_t e;
    env_init(&e, g_build.c, false);
    int rc = 0;
    for (int i = 0; rc == 0 && i < g_build.nnames; i++)
        rc = env_bind(&e, g_build.names[i], find_htype("ag_tensor"), inputs[i], true);
    if (rc == 0) rc = create_inputs(&e, NULL, (const char *const *)g_build.names, g_build.nnames);
    if (rc == 0) rc = run_program(&e, g_build.upto);
    bind_t *r = rc == 0 ? env_find(&e, g_build.result) : NULL;
    if (rc == 0 && (!r || r->freed || r->borrowed || r->h == 0))
        rc = failf("build:%s: no live result named %s", g_build.result, g_build.result);
    if (rc == 0) {
        *out = r->h;
        r->borrowed = true; /* the library takes it over */
    }
    env_cleanup(&e);
    if (g_failed) {
        size_t n = strlen(g_err) < sizeof g_build_err - 1 ? strlen(g_err) : sizeof g_build_err - 1;
        memcpy(g_build_err, g_err, n);
        g_build_err[n] = '\0';
    }
    g_failed = failed;
    snprintf(g_err, sizeof g_err, "%s", saved);
    free(saved);
    g_line = line;
    return rc == 0 ? 0 : 1;
}

/* ---- capture:NAMES, an ag_capture_fn made at run time: an ffi_closure from the header ---- */

/* A captured function's program, kept per case under the name its handle is bound to: the
 * statements before its ag_capture, the names its placeholders are bound to (the call's input
 * list) and the names it returns. The case's other inputs are made outside the function: the
 * function reads them in place (parameters), so its program binds them to the handles of the
 * run that captured it (`outer`). */
typedef struct {
    char *fname;
    int upto;
    char **ins;
    int nins;
    char **outs;
    int nouts;
    env_t *outer;
} capture_t;

static capture_t *g_caps; /* the current case's captured functions */
static int g_ncaps, g_ccaps;

/* Why the last capture function failed (kept aside as g_build_err is). */
static char g_capture_err[1024];

static void capture_free(capture_t *cap) {
    free(cap->fname);
    for (int i = 0; i < cap->nins; i++) free(cap->ins[i]);
    free(cap->ins);
    for (int i = 0; i < cap->nouts; i++) free(cap->outs[i]);
    free(cap->outs);
    memset(cap, 0, sizeof *cap);
}

static const capture_t *find_capture(const char *fname) {
    for (int i = g_ncaps - 1; i >= 0; i--)
        if (strcmp(g_caps[i].fname, fname) == 0) return &g_caps[i];
    return NULL;
}

static bool in_names(char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return true;
    return false;
}

/* Binds every input of the case not named in skip to the handle `outer` holds for it (borrowed). */
static int bind_parameters(env_t *e, env_t *outer, char *const *skip, int nskip) {
    for (int i = 0; i < e->c->nin; i++) {
        const char *name = e->c->in[i].name;
        if (in_names(skip, nskip, name)) continue;
        bind_t *b = env_find(outer, name);
        if (!b || b->freed) continue; /* released by the program: stays unbound */
        if (env_bind(e, name, b->type, b->h, true) != 0) return -1;
    }
    return 0;
}

/* The body of the capture function: the program before the ag_capture, with the placeholders
 * bound to the names of its input list and the case's other inputs to the outer run's handles;
 * returns the tensors bound to the output names (the library takes them over). */
static int32_t run_captured(const capture_t *cap, uint64_t *outputs, int64_t noutputs, const uint64_t *inputs,
                            int64_t ninputs) {
    if (noutputs != cap->nouts || ninputs != cap->nins || !outputs || (ninputs > 0 && !inputs)) return 2;
    int line = g_line;
    bool failed = g_failed;
    char *saved = xstrdup(g_err);
    g_failed = false;
    env_t e;
    env_init(&e, cap->outer->c, false);
    int rc = 0;
    for (int i = 0; rc == 0 && i < cap->nins; i++)
        rc = env_bind(&e, cap->ins[i], find_htype("ag_tensor"), inputs[i], true);
    if (rc == 0) rc = bind_parameters(&e, cap->outer, cap->ins, cap->nins);
    if (rc == 0) rc = run_program(&e, cap->upto);
    bind_t **res = xcalloc((size_t)(cap->nouts ? cap->nouts : 1), sizeof *res);
    for (int k = 0; rc == 0 && k < cap->nouts; k++) {
        res[k] = env_find(&e, cap->outs[k]);
        if (!res[k] || res[k]->freed || res[k]->h == 0)
            rc = failf("capture: no live result named %s", cap->outs[k]);
        else if (res[k]->borrowed && !in_names(cap->ins, cap->nins, cap->outs[k]))
            rc = failf("capture: %s is a parameter (made outside the function): return a result", cap->outs[k]);
    }
    if (rc == 0)
        for (int k = 0; k < cap->nouts; k++) {
            outputs[k] = res[k]->h;
            res[k]->borrowed = true; /* the library takes it over */
        }
    free(res);
    env_cleanup(&e);
    if (g_failed) {
        size_t n = strlen(g_err) < sizeof g_capture_err - 1 ? strlen(g_err) : sizeof g_capture_err - 1;
        memcpy(g_capture_err, g_err, n);
        g_capture_err[n] = '\0';
    }
    g_failed = failed;
    snprintf(g_err, sizeof g_err, "%s", saved);
    free(saved);
    g_line = line;
    return rc == 0 ? 0 : 1;
}

/* The closure's entry: libffi hands over the arguments as the header's ag_capture_fn declares
 * them (outputs, noutputs, inputs, ninputs, user_data; checked in check_used_signatures). */
static void capture_entry(ffi_cif *cif, void *ret, void **args, void *user_data) {
    (void)cif;
    uint64_t *outputs = *(uint64_t **)args[0];
    int64_t noutputs = *(int64_t *)args[1];
    const uint64_t *inputs = *(const uint64_t **)args[2];
    int64_t ninputs = *(int64_t *)args[3];
    *(ffi_sarg *)ret = run_captured(user_data, outputs, noutputs, inputs, ninputs);
}

/* A function pointer made at run time by libffi: a closure whose call interface is built from a
 * callback typedef's signature code ("i:pLpLp"). */
typedef struct {
    ffi_cif cif;
    ffi_type *atypes[MAX_PARAMS];
    ffi_closure *closure;
    void *code;
} closure_t;

static int closure_make(closure_t *cl, const tdef_t *t, void (*entry)(ffi_cif *, void *, void **, void *),
                        void *user_data) {
    memset(cl, 0, sizeof *cl);
    const char *sig = t->fnsig;
    if (!sig[0] || sig[1] != ':') return failf("callback %s: bad signature '%s'", t->name, sig);
    unsigned n = 0;
    for (const char *q = sig + 2; *q; q++) {
        if (n >= MAX_PARAMS || !ffi_for(*q)) return failf("callback %s: cannot build '%s'", t->name, sig);
        cl->atypes[n++] = ffi_for(*q);
    }
    if (ffi_prep_cif(&cl->cif, FFI_DEFAULT_ABI, n, ffi_for(sig[0]), n ? cl->atypes : NULL) != FFI_OK)
        return failf("callback %s: ffi_prep_cif failed", t->name);
    cl->closure = ffi_closure_alloc(sizeof(ffi_closure), &cl->code);
    if (!cl->closure) return failf("callback %s: ffi_closure_alloc failed", t->name);
    if (ffi_prep_closure_loc(cl->closure, &cl->cif, entry, user_data, cl->code) != FFI_OK) {
        ffi_closure_free(cl->closure);
        cl->closure = NULL;
        return failf("callback %s: ffi_prep_closure_loc failed", t->name);
    }
    return 0;
}

static void closure_free(closure_t *cl) {
    if (cl->closure) ffi_closure_free(cl->closure);
    cl->closure = NULL;
}

/* Whether a statement makes or uses a captured function (a capture: argument, or a function with
 * an ag_function parameter, or a replay check): not part of any function, so replays skip it. */
static bool is_function_stmt(const stmt_t *st) {
    if (st->kind == S_REPLAY) return true;
    if (st->kind != S_CALL && st->kind != S_ASSIGN) return false;
    for (int k = 0; k < st->nargs; k++) {
        const char *v = strchr(st->args[k], '=');
        if (strncmp(st->args[k], "capture:", 8) == 0 || (v && strncmp(v + 1, "capture:", 8) == 0)) return true;
    }
    const fsig_t *s = find_sig(st->fn);
    for (int i = 0; s && i < s->np; i++)
        if (strcmp(s->p[i].type, "ag_function") == 0) return true;
    return false;
}

/* ---- forward:OP, backward:OP, jvp:OP: a custom op's callbacks, ffi_closures from the header ---- */

/* One callback of a custom op: a closure made from the header's typedef (ag_custom_forward_fn,
 * ag_custom_backward_fn, ag_custom_jvp_fn) whose body runs a section of the case's 'op' block.
 * Made by the ag_custom_op_new statement that names it, kept until the case ends (the library
 * may call it as long as a graph or a captured function holds the op). */
typedef struct {
    closure_t cl;
    const case_t *c;
    const opdef_t *def;
    int sec;
    bool primary; /* made by the case's own run (not a replay) */
    int64_t calls;  /* calls of this callback so far ('from_call N') */
} cop_t;

static cop_t **g_cops; /* the current case's callbacks */
static int g_ncops, g_ccops;

static int exec_stmt(env_t *e, const stmt_t *st);

/* Whether tok is a handle written as a number (a made-up one). */
static bool number_token(const char *tok, uint64_t *v) {
    if (!isdigit((unsigned char)tok[0])) return false;
    char *end;
    unsigned long long x = strtoull(tok, &end, 0);
    if (*end != '\0') return false;
    *v = x;
    return true;
}

/*
 * The body of a callback: binds what it is given (inputs, output gradients, tangents; borrowed,
 * AG_NULL_TENSOR for a tangent it is not given) to the section's names and the context to $ctx,
 * runs the section's statements, and writes the handles bound to its return names (the library
 * takes them over: they are not freed here; a freed name writes its stale handle, 'null' writes
 * AG_NULL_TENSOR, a number writes a made-up handle). Returns 'status N' (default 0), or 1 when a
 * statement failed unexpectedly (then nothing is written).
 */
static int32_t run_section(cop_t *op, uint64_t *out, int64_t nout, const uint64_t *given0,
                           const uint64_t *given1, int64_t ngiven, uint64_t ctx, void *payload) {
    const section_t *sec = &op->def->sec[op->sec];
    if (payload) ((counter_t *)payload)->calls++;
    op->calls++;
    g_last_ctx = ctx;
    int line = g_line;
    bool failed = g_failed;
    char *saved = xstrdup(g_err);
    g_failed = false;
    g_cb_depth++;
    env_t e;
    env_init(&e, op->c, op->primary);
    e.callback = true;
    int rc = 0;
    g_line = sec->line;
    if (nout != sec->nret || ngiven != sec->ngiven[0] || !out || (ngiven > 0 && (!given0 || (op->sec == SEC_JVP && !given1))))
        rc = failf("op %s: the %s callback got %" PRId64 " handles and %" PRId64 " outputs, its section names %d and %d",
                   op->def->name, k_section_names[op->sec], ngiven, nout, sec->ngiven[0], sec->nret);
    for (int g = 0; g < (op->sec == SEC_JVP ? 2 : 1); g++)
        for (int i = 0; rc == 0 && i < ngiven; i++)
            rc = env_bind(&e, sec->given[g][i], find_htype("ag_tensor"), (g ? given1 : given0)[i], true);
    if (rc == 0) rc = env_set_int(&e, "ctx", (int64_t)ctx);
    for (int i = 0; rc == 0 && i < sec->nst; i++) {
        const stmt_t *st = &sec->st[i];
        if (st->kind == S_FROM_CALL) { /* the rest runs from the callback's Nth call on */
            int64_t n = 0;
            parse_i64_literal(st->args[0], &n);
            if (op->calls < n) break;
            continue;
        }
        rc = exec_stmt(&e, st);
    }
    /* what it writes: every name must be bound before anything is written */
    uint64_t *w = xcalloc((size_t)(sec->nret ? sec->nret : 1), sizeof *w);
    for (int k = 0; rc == 0 && k < sec->nret; k++) {
        const char *name = sec->ret[k];
        if (strcmp(name, "null") == 0 || number_token(name, &w[k])) continue;
        if (name[0] == '$') { /* $ctx: a live handle of another kind */
            int64_t v = 0;
            rc = parse_int_arg(&e, name, &v);
            w[k] = (uint64_t)v;
            continue;
        }
        bind_t *b = env_find(&e, name);
        if (!b) rc = failf("op %s: the %s section returns %s, which is not bound", op->def->name, k_section_names[op->sec], name);
        else w[k] = b->h;
    }
    for (int k = 0; rc == 0 && k < sec->nret; k++) {
        bind_t *b = strcmp(sec->ret[k], "null") == 0 || sec->ret[k][0] == '$' ? NULL : env_find(&e, sec->ret[k]);
        if (b && !b->freed) b->borrowed = true; /* the library takes it over */
        out[k] = w[k];
    }
    free(w);
    int32_t status = e.ret_status;
    env_cleanup(&e);
    g_cb_depth--;
    if (g_failed) {
        size_t n = strlen(g_err) < sizeof g_callback_err - 1 ? strlen(g_err) : sizeof g_callback_err - 1;
        memcpy(g_callback_err, g_err, n);
        g_callback_err[n] = '\0';
    }
    g_failed = failed;
    snprintf(g_err, sizeof g_err, "%s", saved);
    free(saved);
    g_line = line;
    return rc == 0 ? status : 1;
}

/* The closures' entries: libffi hands over the arguments as the header's typedefs declare them
 * (checked in check_used_signatures). */
static void forward_entry(ffi_cif *cif, void *ret, void **args, void *user_data) {
    (void)cif;
    *(ffi_sarg *)ret = run_section(user_data, *(uint64_t **)args[0], *(int64_t *)args[1], *(const uint64_t **)args[2],
                                   NULL, *(int64_t *)args[3], *(uint64_t *)args[4], *(void **)args[5]);
}

static void backward_entry(ffi_cif *cif, void *ret, void **args, void *user_data) {
    (void)cif;
    /* input_grads, ninputs, output_grads, noutputs, ctx, payload */
    *(ffi_sarg *)ret = run_section(user_data, *(uint64_t **)args[0], *(int64_t *)args[1], *(const uint64_t **)args[2],
                                   NULL, *(int64_t *)args[3], *(uint64_t *)args[4], *(void **)args[5]);
}

static void jvp_entry(ffi_cif *cif, void *ret, void **args, void *user_data) {
    (void)cif;
    /* output_tangents, noutputs, inputs, input_tangents, ninputs, ctx, payload */
    *(ffi_sarg *)ret = run_section(user_data, *(uint64_t **)args[0], *(int64_t *)args[1], *(const uint64_t **)args[2],
                                   *(const uint64_t **)args[3], *(int64_t *)args[4], *(uint64_t *)args[5],
                                   *(void **)args[6]);
}

static const char *const k_section_types[N_SECTIONS] = {"ag_custom_forward_fn", "ag_custom_backward_fn",
                                                         "ag_custom_jvp_fn"};
static void (*const k_section_entries[N_SECTIONS])(ffi_cif *, void *, void **, void *) = {forward_entry, backward_entry,
                                                                                         jvp_entry};

/* A callback for parameter p from a token SECTION:OP (forward:mul): its code pointer in *fn. */
static int make_custom_callback(env_t *e, const param_t *p, const char *tok, void **fn) {
    int k = 0;
    while (k < N_SECTIONS && strcmp(p->type, k_section_types[k]) != 0) k++;
    size_t len = strlen(k_section_names[k]);
    if (strncmp(tok, k_section_names[k], len) != 0 || tok[len] != ':')
        return failf("parameter %s (%s) takes %s:OP, got '%s'", p->name, p->type, k_section_names[k], tok);
    const opdef_t *def = NULL;
    for (int i = 0; i < e->c->ndefs; i++)
        if (strcmp(e->c->defs[i].name, tok + len + 1) == 0) def = &e->c->defs[i];
    if (!def) return failf("%s: no 'op %s' in this case", tok, tok + len + 1);
    if (!def->sec[k].present) return failf("%s: op %s has no %s section", tok, def->name, k_section_names[k]);
    cop_t *op = xcalloc(1, sizeof *op);
    op->c = e->c;
    op->def = def;
    op->sec = k;
    op->primary = e->primary;
    if (closure_make(&op->cl, find_tdef(p->type), k_section_entries[k], op) != 0) {
        free(op);
        return -1;
    }
    PUSH(g_cops, g_ncops, g_ccops, op);
    *fn = op->cl.code;
    return 0;
}

static bool is_custom_callback_type(const char *type) {
    for (int k = 0; k < N_SECTIONS; k++)
        if (strcmp(type, k_section_types[k]) == 0) return true;
    return false;
}

/* ---- strings, paths under the run's temporary directory, raw bytes ---- */

/* The run's temporary directory: tmp:NAME arguments are paths in it. Made by main, emptied after
 * every case (so no case sees another's files) and removed when the harness exits. */
static char g_tmpdir[4096];

/* Removes what is under `path` (not following links), and `path` itself unless keep_root. */
static void remove_tree(const char *path, bool keep_root) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
            char sub[8192];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            struct stat sb;
            if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(sub, false);
            else unlink(sub);
        }
        closedir(d);
    }
    if (!keep_root) rmdir(path);
}

static void remove_tmpdir(void) {
    if (g_tmpdir[0]) remove_tree(g_tmpdir, false);
    g_tmpdir[0] = '\0';
}

static int hex_digit(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A string argument (allocated in *out): "text" (escapes \\, \" and \xHH, not \x00), or
 * tmp:NAME, the path NAME in the run's temporary directory (tmp: alone is the directory). */
static int parse_string_arg(const char *tok, char **out) {
    *out = NULL;
    if (strncmp(tok, "tmp:", 4) == 0) {
        if (!g_tmpdir[0]) return failf("tmp: no temporary directory");
        const char *nm = tok + 4;
        if (nm[0] == '/' || strcmp(nm, "..") == 0 || strncmp(nm, "../", 3) == 0 || strstr(nm, "/../") ||
            (strlen(nm) >= 3 && strcmp(nm + strlen(nm) - 3, "/..") == 0))
            return failf("'%s': a tmp: path stays inside the temporary directory (no leading '/', no '..')", tok);
        size_t n = strlen(g_tmpdir) + strlen(tok + 4) + 2;
        *out = xmalloc(n);
        snprintf(*out, n, "%s%s%s", g_tmpdir, tok[4] ? "/" : "", tok + 4);
        return 0;
    }
    size_t n = strlen(tok);
    if (n < 2 || tok[0] != '"' || tok[n - 1] != '"') return failf("expected a \"string\" or tmp:NAME, got '%s'", tok);
    char *d = xmalloc(n);
    size_t k = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        char c = tok[i];
        if (c == '"') {
            free(d);
            return failf("'%s': a '\"' inside a string must be written \\\"", tok);
        }
        if (c == '\\') {
            char e = i + 2 < n ? tok[i + 1] : '\0';
            if (e == '\\' || e == '"') {
                d[k++] = e;
                i++;
                continue;
            }
            int hi = e == 'x' && i + 3 < n ? hex_digit((unsigned char)tok[i + 2]) : -1;
            int lo = hi >= 0 ? hex_digit((unsigned char)tok[i + 3]) : -1;
            if (lo < 0 || (hi | lo) == 0) {
                free(d);
                return failf("'%s': bad escape (\\\\, \\\" or \\xHH, not \\x00)", tok);
            }
            d[k++] = (char)(hi * 16 + lo);
            i += 3;
            continue;
        }
        d[k++] = c;
    }
    d[k] = '\0';
    *out = d;
    return 0;
}

/* bytes:[ITEM ...] (a `const void *`: ag_safetensors_open_memory's file): hex digits, two per byte
 * (00, f83f, 0800000000000000), and 'text' (its bytes as written, no terminator), separated by
 * spaces or commas. The buffer has exactly those bytes (a read past them is valgrind's to see). */
static int parse_bytes_arg(const char *tok, unsigned char **out, int64_t *nout) {
    size_t len = strlen(tok);
    if (strncmp(tok, "bytes:[", 7) != 0 || len < 8 || tok[len - 1] != ']')
        return failf("expected bytes:[HEX... 'text'...], got '%s'", tok);
    const char *p = tok + 7, *end = tok + len - 1;
    unsigned char *buf = xmalloc(len);
    size_t k = 0;
    int rc = 0;
    while (rc == 0 && p < end) {
        if (isspace((unsigned char)*p) || *p == ',') {
            p++;
        } else if (*p == '\'') {
            const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
            if (!q) {
                rc = failf("bytes: an unterminated 'text' in '%s'", tok);
                break;
            }
            memcpy(buf + k, p + 1, (size_t)(q - p - 1));
            k += (size_t)(q - p - 1);
            p = q + 1;
        } else if (hex_digit((unsigned char)*p) >= 0) {
            const char *q = p;
            while (q < end && hex_digit((unsigned char)*q) >= 0) q++;
            if ((q - p) % 2) rc = failf("bytes: an odd number of hex digits in '%.*s'", (int)(q - p), p);
            for (; rc == 0 && p < q; p += 2) buf[k++] = (unsigned char)(hex_digit((unsigned char)p[0]) * 16 + hex_digit((unsigned char)p[1]));
        } else {
            rc = failf("bytes: unexpected '%c' in '%s'", *p, tok);
        }
    }
    if (rc == 0) {
        *out = xmalloc(k);
        memcpy(*out, buf, k);
        *nout = (int64_t)k;
    }
    free(buf);
    return rc;
}

/* A string parameter: `const char *`. */
static bool is_string_param(const param_t *p) { return p->ptr == 1 && p->cnst && p->elem == 'c'; }

/* An array of strings: `const char *const *` (names, metadata keys and values). */
static bool is_string_array(const param_t *p) { return p->ptr == 2 && p->in_const && resolve_code(p->type) == 'c'; }

/* A string output: `const char **` (the library's string written to *out). */
static bool is_string_out(const param_t *p) {
    return p->ptr == 2 && !p->in_const && p->cnst && resolve_code(p->type) == 'c';
}

/* ---- generic marshalling of one call from the header's parameter list ---- */

/* How one parameter is passed. */
enum { A_VALUE, A_IN_ARRAY, A_OUT, A_USERDATA, A_FN, A_COUNT };

typedef struct {
    int kind;
    slot_t slot;        /* the value passed (pointers in slot.p) */
    void *buf;          /* an array we allocated (input array or output buffer) */
    unsigned char *sentinel;
    size_t bytes;       /* size of buf */
    size_t used;        /* bytes the callee may write (count * element size) */
    int64_t count;      /* elements (arrays and output buffers) */
    const char *tok;    /* the argument token */
    bool deferred_data; /* a const void * list, converted once the dtype is known */
    toks_t list;        /* the elements of a deferred list */
    toks_t strs;        /* the strings an array of strings points to */
} arg_t;

/* A pointer parameter followed by an int64_t parameter is an array and its length, except for
 * handle outputs (their count is the number of names on the left of '='). */
static bool is_pair(const fsig_t *s, int i) {
    const param_t *p = &s->p[i];
    if ((p->ptr != 1 && !is_string_array(p)) || p->fnptr || i + 1 >= s->np) return false;
    if (is_string_param(p)) return false; /* a string (ag_custom_op_new's name) */
    const param_t *q = &s->p[i + 1];
    if (q->ptr != 0 || q->code != 'L') return false;
    if (!p->cnst && find_htype(p->type)) return false;
    /* an output pointer pairs only with a count (capacity, count, n...), not with a plain
     * integer argument after it (ag_lr_warmup_cosine's `double *out, int64_t step`) */
    if (!p->cnst && strcmp(q->name, "capacity") != 0 && strcmp(q->name, "count") != 0 && q->name[0] != 'n') return false;
    return true;
}

/* A non-const pointer parameter (or a pointer to a non-const pointer: `const char **`) is an output;
 * a lone `void *` is opaque user data. */
static bool is_output(const fsig_t *s, int i) {
    const param_t *p = &s->p[i];
    if (p->ptr == 0 || p->fnptr) return false;
    if (p->ptr >= 2) return !p->in_const;
    if (p->cnst) return false;
    if (p->elem == 'v' && !is_pair(s, i)) return false; /* user data */
    return true;
}

static void store_elem(void *buf, int64_t k, char code, double dv, int64_t iv, bool is_int) {
    unsigned char *b = buf;
    size_t sz = code_size(code);
    slot_t v;
    memset(&v, 0, sizeof v);
    switch (code) {
    case 'f': v.f = (float)(is_int ? (double)iv : dv); break;
    case 'd': v.d = is_int ? (double)iv : dv; break;
    case 'b': case 'B': v.B = (uint8_t)iv; break;
    case 'c': v.c = (int8_t)iv; break;
    case 'h': v.h = (int16_t)iv; break;
    case 'H': v.H = (uint16_t)iv; break;
    case 'i': v.i = (int32_t)iv; break;
    case 'I': v.I = (uint32_t)iv; break;
    case 'U': v.U = (uint64_t)iv; break;
    default: v.L = iv; break;
    }
    memcpy(b + (size_t)k * sz, &v, sz);
}

static int64_t load_int(const void *buf, int64_t k, char code) {
    const unsigned char *b = buf;
    slot_t v;
    memset(&v, 0, sizeof v);
    memcpy(&v, b + (size_t)k * code_size(code), code_size(code));
    switch (code) {
    case 'b': case 'B': return v.B;
    case 'c': return v.c;
    case 'h': return v.h;
    case 'H': return v.H;
    case 'i': return v.i;
    case 'I': return v.I;
    case 'U': return (int64_t)v.U;
    default: return v.L;
    }
}

static double load_double(const void *buf, int64_t k, char code) {
    const unsigned char *b = buf;
    if (code == 'f') {
        float f;
        memcpy(&f, b + (size_t)k * 4, 4);
        return f;
    }
    if (code == 'd') {
        double d;
        memcpy(&d, b + (size_t)k * 8, 8);
        return d;
    }
    return (double)load_int(buf, k, code);
}

static bool close_enough(double got, double want, double tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= tol * (1 + fabs(want));
}

/* Allocates an output buffer of `count` elements (at least `min`), filled with a sentinel. */
static void alloc_out(arg_t *a, size_t elsize, int64_t count, int64_t min) {
    int64_t n = count > min ? count : min;
    if (n > (1 << 22)) n = 1 << 22;
    a->bytes = (size_t)n * elsize + 16;
    a->used = count > 0 ? (size_t)(count < n ? count : n) * elsize : 0;
    a->buf = xmalloc(a->bytes);
    memset(a->buf, 0xA5, a->bytes);
    a->sentinel = xmalloc(a->bytes);
    memcpy(a->sentinel, a->buf, a->bytes);
    a->slot.p = a->buf;
    a->count = count;
}

/* Fills an input array parameter from a "[...]" token. */
static int marshal_in_array(env_t *e, const param_t *p, arg_t *a, const char *tok) {
    if (strcmp(tok, "null") == 0) {
        a->slot.p = NULL;
        a->count = 0;
        return 0;
    }
    if (is_string_param(p)) { /* a string: "text" or tmp:NAME */
        char *str;
        if (parse_string_arg(tok, &str) != 0) return -1;
        a->buf = str;
        a->slot.p = a->buf;
        return 0;
    }
    if (is_string_array(p)) { /* ["a","b",null]: an array of strings (or NULL entries) */
        toks_t el = {0};
        if (split_list(tok, &el) != 0) return failf("parameter %s wants a [list] of \"strings\", got '%s'", p->name, tok);
        a->count = el.n;
        a->buf = xcalloc((size_t)(el.n ? el.n : 1), sizeof(char *));
        a->slot.p = a->buf;
        int rc = 0;
        for (int k = 0; rc == 0 && k < el.n; k++) {
            if (strcmp(el.t[k], "null") == 0) continue;
            char *str;
            rc = parse_string_arg(el.t[k], &str);
            if (rc == 0) {
                PUSH(a->strs.t, a->strs.n, a->strs.cap, str);
                ((char **)a->buf)[k] = str;
            }
        }
        toks_free(&el);
        return rc;
    }
    if (strncmp(tok, "bytes:", 6) == 0) { /* raw bytes for a const void * */
        if (!(p->cnst && p->elem == 'v')) return failf("parameter %s (%s) cannot take bytes:[...]", p->name, p->type);
        unsigned char *bytes = NULL;
        if (parse_bytes_arg(tok, &bytes, &a->count) != 0) return -1;
        a->buf = bytes;
        a->slot.p = a->buf;
        return 0;
    }
    toks_t el = {0};
    if (split_list(tok, &el) != 0) return failf("parameter %s wants a [list], got '%s'", p->name, tok);
    a->count = el.n;
    if (p->elem == 'v') { /* data whose element type depends on the call's dtype argument */
        a->deferred_data = true;
        a->list = el;
        return 0;
    }
    size_t sz = code_size(p->elem);
    a->buf = xcalloc((size_t)(el.n ? el.n : 1), sz);
    a->slot.p = a->buf;
    int rc = 0;
    const htype_t *ht = find_htype(p->type);
    for (int k = 0; rc == 0 && k < el.n; k++) {
        if (ht) {
            uint64_t h;
            rc = parse_handle_arg(e, el.t[k], &h);
            if (rc == 0) store_elem(a->buf, k, 'U', 0, (int64_t)h, true);
        } else if (p->elem == 'f' || p->elem == 'd') {
            double d;
            rc = parse_double(el.t[k], &d) == 0 ? 0 : failf("'%s' is not a number", el.t[k]);
            if (rc == 0) store_elem(a->buf, k, p->elem, d, 0, false);
        } else if (code_is_integer(p->elem)) {
            int64_t v;
            rc = parse_int_arg(e, el.t[k], &v);
            if (rc == 0) store_elem(a->buf, k, p->elem, 0, v, true);
        } else {
            rc = failf("parameter %s: arrays of %s are not supported", p->name, p->type);
        }
    }
    toks_free(&el);
    return rc;
}

/* Prepares an output parameter from its token: _ (scratch), null, =EXPECTED, ->var, ~text. */
static int marshal_out(const fsig_t *s, int i, arg_t *a, const char *tok, const char *count_kw, int64_t nlhs) {
    const param_t *p = &s->p[i];
    size_t elsize = p->ptr >= 2 ? sizeof(void *) : code_size(p->elem);
    bool pair = is_pair(s, i);
    if (strcmp(tok, "null") == 0) {
        a->slot.p = NULL;
        a->count = 0;
        return 0;
    }
    int64_t count = 1, min = 1;
    if (pair) {
        min = p->elem == 'c' ? 65536 : p->elem == 'v' ? 4096 : 64;
        count = min;
        if (tok[0] == '=' && tok[1] == '[') {
            toks_t el = {0};
            split_list(tok + 1, &el);
            count = el.n;
            toks_free(&el);
        }
    } else if (nlhs > 0) {
        count = min = nlhs;
    } else if (tok[0] == '=' && tok[1] == '[' && find_htype(p->type)) {
        /* several handles written through one pointer (ag_vjp's grads): as many as listed */
        toks_t el = {0};
        split_list(tok + 1, &el);
        count = min = el.n;
        toks_free(&el);
    }
    if (count_kw) {
        int64_t v;
        if (parse_i64_literal(count_kw, &v) != 0) return failf("bad count '%s'", count_kw);
        count = v;
    }
    alloc_out(a, elsize, count, min);
    return 0;
}

/* Checks an output against its =EXPECTED token after a successful call. */
static int check_out(env_t *e, const fsig_t *s, int i, const arg_t *a) {
    const param_t *p = &s->p[i];
    const char *tok = a->tok;
    if (!tok || !a->buf) return 0;
    /* Never more than it may write (pairs: the given count). */
    if (is_pair(s, i) && memcmp((unsigned char *)a->buf + a->used, a->sentinel + a->used, a->bytes - a->used) != 0)
        return failf("%s wrote past the %" PRId64 " elements of %s", s->name, a->count, p->name);
    if (strncmp(tok, "->", 2) == 0) {
        if (!code_is_integer(p->elem)) return failf("->%s: %s is not an integer output", tok + 2, p->name);
        return env_set_int(e, tok + 2, load_int(a->buf, 0, p->elem));
    }
    if (!e->primary && !e->callback) return 0; /* replays compute, the primary run checks */
    if (is_string_out(p) && (tok[0] == '~' || tok[0] == '=')) {
        /* a string the library returned: ="text" (equal), ~text (contains), =null, =nonnull */
        const char *got;
        memcpy(&got, a->buf, sizeof got);
        if (strcmp(tok, "=null") == 0)
            return got ? failf("%s: %s is \"%s\", expected null", s->name, p->name, got) : 0;
        if (strcmp(tok, "=nonnull") != 0 && tok[0] == '=' && tok[1] != '"')
            return failf("%s: %s is a string output: =\"text\", ~text, =null or =nonnull, not '%s'", s->name, p->name, tok);
        if (!got) return failf("%s: %s is NULL, expected %s", s->name, p->name, tok + (tok[0] == '='));
        if (strcmp(tok, "=nonnull") == 0) return 0;
        if (tok[0] == '~') return strstr(got, tok + 1) ? 0 : failf("%s: %s is \"%s\", which does not contain \"%s\"", s->name, p->name, got, tok + 1);
        char *want;
        if (parse_string_arg(tok + 1, &want) != 0) return -1;
        int rc = strcmp(got, want) == 0 ? 0 : failf("%s: %s is \"%s\", expected \"%s\"", s->name, p->name, got, want);
        free(want);
        return rc;
    }
    if (tok[0] == '~' && p->elem == 'c') {
        const char *text = a->buf;
        if (!memchr(text, '\0', a->used) || !strstr(text, tok + 1))
            return failf("%s: %s does not contain \"%s\"", s->name, p->name, tok + 1);
        return 0;
    }
    if (tok[0] != '=') return 0;
    const char *want = tok + 1;
    if (p->elem == 'c') {
        const char *text = a->buf;
        if (!memchr(text, '\0', a->used) || strcmp(text, want) != 0)
            return failf("%s: %s is \"%.60s\", expected \"%s\"", s->name, p->name, text, want);
        return 0;
    }
    toks_t el = {0};
    if (want[0] == '[') split_list(want, &el);
    else {
        char *w = xstrdup(want);
        PUSH(el.t, el.n, el.cap, w);
    }
    int rc = 0;
    for (int k = 0; rc == 0 && k < el.n; k++) {
        const char *w = el.t[k];
        if (find_htype(p->type) || p->ptr >= 2) {
            /* handles and pointers: null or nonnull */
            uint64_t v = p->ptr >= 2 ? (uint64_t)(uintptr_t)((void **)a->buf)[k] : (uint64_t)load_int(a->buf, k, 'U');
            if (strcmp(w, "null") == 0 ? v != 0 : strcmp(w, "nonnull") == 0 ? v == 0 : true)
                rc = failf("%s: %s[%d] is %#" PRIx64 ", expected %s", s->name, p->name, k, v, w);
        } else if (p->elem == 'f' || p->elem == 'd') {
            double wv, got = load_double(a->buf, k, p->elem);
            if (parse_double(w, &wv) != 0) rc = failf("'%s' is not a number", w);
            else if (!close_enough(got, wv, 1e-9))
                rc = failf("%s: %s[%d] is %.17g, expected %.17g", s->name, p->name, k, got, wv);
        } else {
            int64_t wv, got = load_int(a->buf, k, p->elem);
            if (p->elem == 'b' && strcmp(w, "true") == 0) wv = 1;
            else if (p->elem == 'b' && strcmp(w, "false") == 0) wv = 0;
            else if (parse_int_arg(e, w, &wv) != 0) rc = -1;
            if (rc == 0 && got != wv)
                rc = failf("%s: %s[%d] is %" PRId64 ", expected %s", s->name, p->name, k, got, w);
        }
    }
    toks_free(&el);
    return rc;
}

/* Runs one call or assignment statement. */
static int exec_call(env_t *e, const stmt_t *st) {
    fsig_t *s = find_sig(st->fn);
    if (!s) return failf("unknown function %s", st->fn);
    bool assign = st->kind == S_ASSIGN;
    int first = 0;
    /* An assignment binds its names to the leading handle outputs (ag_jvp: output and
     * output_tangent): one name each, and every remaining name to the last of them (an array:
     * ag_grad's out_grads, ag_vjp's grads). lhs_at[i], lhs_n[i]: the names of parameter i. */
    int lhs_at[MAX_PARAMS] = {0}, lhs_n[MAX_PARAMS] = {0};
    if (assign) {
        while (first < s->np && s->p[first].ptr == 1 && !s->p[first].cnst && find_htype(s->p[first].type)) first++;
        if (first == 0)
            return failf("%s does not return a handle through its first parameter; use 'call'", s->name);
        if (st->nlhs < first)
            return failf("%s returns %d handle outputs: name each (%d names given)", s->name, first, st->nlhs);
        for (int i = 0; i < first; i++) {
            lhs_at[i] = i;
            lhs_n[i] = i == first - 1 ? st->nlhs - i : 1;
        }
    }

    /* keyword arguments (NAME=value, NAME a parameter) and positional ones */
    const char *kw[MAX_PARAMS] = {0};
    const char **pos = xcalloc((size_t)(st->nargs ? st->nargs : 1), sizeof(char *));
    int npos = 0;
    int rc = 0;
    for (int k = 0; k < st->nargs; k++) {
        const char *t = st->args[k];
        const char *eq = strchr(t, '=');
        bool keyword = false;
        if (eq && eq > t && is_ident_start((unsigned char)t[0])) {
            for (int j = 0; j < s->np; j++)
                if (strlen(s->p[j].name) == (size_t)(eq - t) && strncmp(s->p[j].name, t, (size_t)(eq - t)) == 0) {
                    kw[j] = eq + 1;
                    keyword = true;
                }
            if (!keyword) rc = failf("%s has no parameter '%.*s'", s->name, (int)(eq - t), t);
        }
        if (!keyword) pos[npos++] = t;
    }

    arg_t args[MAX_PARAMS];
    memset(args, 0, sizeof args);
    void *av[MAX_PARAMS];
    int next = 0;
    for (int i = 0; i < s->np; i++) av[i] = &args[i].slot;

    for (int i = 0; assign && i < first; i++) {
        args[i].kind = A_OUT;
        alloc_out(&args[i], 8, lhs_n[i], lhs_n[i]);
    }
    for (int i = first; rc == 0 && i < s->np; i++) {
        const param_t *p = &s->p[i];
        arg_t *a = &args[i];
        if (i > 0 && is_pair(s, i - 1) && !(assign && i - 1 < first)) {
            /* the length of the array before it */
            a->kind = A_COUNT;
            if (kw[i]) rc = parse_int_arg(e, kw[i], &a->slot.L);
            else a->slot.L = args[i - 1].count;
            continue;
        }
        const char *tok = kw[i] ? kw[i] : next < npos ? pos[next++] : NULL;
        a->tok = tok;
        if (p->fnptr) {
            a->kind = A_FN;
            a->slot.p = NULL;
            if (!tok || strcmp(tok, "null") == 0) continue;
            if (strncmp(tok, "hook:", 5) == 0 && strcmp(p->type, "ag_grad_hook") == 0) {
                bool found = false;
                for (size_t h = 0; h < sizeof k_hooks / sizeof k_hooks[0]; h++)
                    if (strcmp(k_hooks[h].name, tok + 5) == 0) {
                        memcpy(&a->slot.p, &k_hooks[h].fn, sizeof a->slot.p);
                        found = true;
                    }
                if (!found) rc = failf("unknown hook '%s'", tok);
            } else if (strncmp(tok, "ready:", 6) == 0 && strcmp(p->type, "ag_post_accumulate_grad_hook") == 0) {
                bool found = false;
                for (size_t h = 0; h < sizeof k_ready_hooks / sizeof k_ready_hooks[0]; h++)
                    if (strcmp(k_ready_hooks[h].name, tok + 6) == 0) {
                        memcpy(&a->slot.p, &k_ready_hooks[h].fn, sizeof a->slot.p);
                        found = true;
                    }
                if (!found) rc = failf("unknown gradient-ready hook '%s'", tok);
            } else if (strcmp(tok, "destroy:count") == 0 && strcmp(p->fnsig, "v:p") == 0) {
                void (*f)(void *) = destroy_count;
                memcpy(&a->slot.p, &f, sizeof a->slot.p);
            } else if (strncmp(tok, "build:", 6) == 0 && strcmp(p->type, "ag_build_fn") == 0) {
                int32_t (*f)(uint64_t *, const uint64_t *, int64_t, void *) = build_program;
                memcpy(&a->slot.p, &f, sizeof a->slot.p);
            } else if (strncmp(tok, "capture:", 8) == 0 && strcmp(p->type, "ag_capture_fn") == 0) {
                /* made below, once the call's input list is known */
            } else if (is_custom_callback_type(p->type)) {
                rc = make_custom_callback(e, p, tok, &a->slot.p);
            } else {
                rc = failf("parameter %s (%s) cannot take '%s'", p->name, p->type, tok);
            }
        } else if (is_output(s, i)) {
            a->kind = A_OUT;
            if (!tok) tok = a->tok = "_";
            rc = marshal_out(s, i, a, tok, is_pair(s, i) ? kw[i + 1] : NULL, 0);
        } else if (p->ptr >= 1 && !p->cnst && p->elem == 'v') {
            a->kind = A_USERDATA;
            a->slot.p = NULL;
            if (tok && strncmp(tok, "counter:", 8) == 0) {
                int64_t k;
                if (parse_i64_literal(tok + 8, &k) != 0 || k < 0 || k >= N_COUNTERS)
                    rc = failf("bad counter '%s' (0..%d)", tok, N_COUNTERS - 1);
                else a->slot.p = &e->counters[k];
            } else if (tok && strcmp(tok, "null") != 0) {
                rc = failf("user data must be null or counter:N, got '%s'", tok);
            }
        } else if (p->ptr >= 1) {
            a->kind = A_IN_ARRAY;
            a->slot.p = NULL;
            if (tok) rc = marshal_in_array(e, p, a, tok);
        } else {
            a->kind = A_VALUE;
            if (!tok) {
                if (p->code == 'b') {
                    a->slot.B = 0; /* bools default to false */
                    continue;
                }
                rc = failf("%s: missing argument '%s'", s->name, p->name);
                break;
            }
            if (find_htype(p->type)) {
                rc = parse_handle_arg(e, tok, &a->slot.U);
            } else if (p->code == 'b') {
                bool b = false;
                rc = parse_bool_arg(tok, &b);
                a->slot.B = b;
            } else if (p->code == 'f' || p->code == 'd') {
                double d;
                rc = parse_double(tok, &d) == 0 ? 0 : failf("'%s' is not a number (parameter %s)", tok, p->name);
                if (p->code == 'f') a->slot.f = (float)d;
                else a->slot.d = d;
            } else {
                int64_t v;
                rc = parse_int_arg(e, tok, &v);
                store_elem(&a->slot, 0, p->code, 0, v, true);
            }
        }
    }
    if (rc == 0 && next < npos) rc = failf("%s: too many arguments ('%s')", s->name, pos[next]);

    /* Typed data for `const void *` lists: float for AG_FLOAT32, int64_t for AG_INT64, one byte
     * for AG_BOOL, double otherwise. */
    for (int i = first; rc == 0 && i < s->np; i++) {
        arg_t *a = &args[i];
        if (!a->deferred_data) continue;
        char code = 'd';
        for (int j = 0; j < s->np; j++)
            if (strcmp(s->p[j].type, "ag_dtype") == 0 && s->p[j].ptr == 0) code = dtype_code(args[j].slot.i);
        a->buf = xcalloc((size_t)(a->list.n ? a->list.n : 1), code_size(code));
        a->slot.p = a->buf;
        for (int k = 0; rc == 0 && k < a->list.n; k++) {
            double d;
            if (parse_double(a->list.t[k], &d) != 0) rc = failf("'%s' is not a number", a->list.t[k]);
            else {
                bool is_int = code == 'L' || code == 'B';
                /* Converted only when int64 holds it (nan or inf in a float list is fine). */
                int64_t iv = is_int && d == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0 ? (int64_t)d : 0;
                store_elem(a->buf, k, code, d, iv, is_int);
            }
        }
    }

    /* The build function's context: the names of the call's tensor array. */
    bool build = false;
    for (int i = 0; rc == 0 && i < s->np; i++) {
        if (args[i].kind != A_FN || !args[i].tok || strncmp(args[i].tok, "build:", 6) != 0) continue;
        if (g_build.active) {
            rc = failf("build: functions do not nest");
            break;
        }
        build = true;
        g_build.c = e->c;
        g_build.upto = (int)(st - e->c->st);
        g_build.result = args[i].tok + 6;
        g_build.names = NULL;
        g_build.nnames = 0;
        /* Its inputs: the call's first tensor array after it (ag_gradcheck's inputs, ag_jvp's
         * primals), or its first tensor handle after it (ag_jacobian's input). */
        for (int j = i + 1; j < s->np; j++) {
            if (!find_htype(s->p[j].type) || !args[j].tok) continue;
            if (args[j].kind == A_IN_ARRAY) {
                toks_t el = {0};
                split_list(args[j].tok, &el);
                g_build.names = el.t;
                g_build.nnames = el.n;
                break;
            }
            if (args[j].kind == A_VALUE && env_find(e, args[j].tok)) {
                g_build.names = xcalloc(1, sizeof(char *));
                g_build.names[0] = xstrdup(args[j].tok);
                g_build.nnames = 1;
                break;
            }
        }
        g_build.active = true;
    }

    /* A capture function: the program before this statement, as an ffi_closure. */
    capture_t cap;
    memset(&cap, 0, sizeof cap);
    closure_t cl;
    memset(&cl, 0, sizeof cl);
    for (int i = 0; rc == 0 && i < s->np; i++) {
        if (args[i].kind != A_FN || !args[i].tok || strncmp(args[i].tok, "capture:", 8) != 0) continue;
        toks_t el = {0};
        char *list = xmalloc(strlen(args[i].tok + 8) + 3);
        sprintf(list, "[%s]", args[i].tok + 8);
        split_list(list, &el);
        free(list);
        cap.outs = el.t;
        cap.nouts = el.n;
        cap.upto = (int)(st - e->c->st);
        cap.outer = e;
        /* Its placeholders: the names of the call's first tensor list after it. */
        for (int j = i + 1; j < s->np; j++) {
            if (args[j].kind != A_IN_ARRAY || !find_htype(s->p[j].type) || !args[j].tok) continue;
            toks_t in = {0};
            split_list(args[j].tok, &in);
            cap.ins = in.t;
            cap.nins = in.n;
            break;
        }
        g_capture_err[0] = '\0';
        rc = closure_make(&cl, find_tdef(s->p[i].type), capture_entry, &cap);
        if (rc == 0) args[i].slot.p = cl.code;
        break;
    }

    if (rc == 0) {
        if (g_verbose && e->primary) {
            printf("    line %d: %s", st->line, s->name);
            for (int k = 0; k < st->nargs; k++) printf(" %s", st->args[k]);
            printf("\n");
        }
        rslot_t r;
        g_build_err[0] = '\0';
        if (g_cb_depth == 0) g_callback_err[0] = '\0';
        invoke(s, av, &r);
        if (build) {
            for (int k = 0; k < g_build.nnames; k++) free(g_build.names[k]);
            free(g_build.names);
            g_build.active = false;
        }
        if (cl.closure && !g_build_err[0] && g_capture_err[0]) snprintf(g_build_err, sizeof g_build_err, "%s", g_capture_err);
        bool custom_err = !g_build_err[0] && g_callback_err[0];
        if (custom_err) snprintf(g_build_err, sizeof g_build_err, "%s", g_callback_err);
        bool has_status = strcmp(s->ret.type, "ag_status") == 0 && s->ret.ptr == 0;
        int32_t st_got = has_status ? (int32_t)ret_int(s, &r) : 0;
        int32_t want = st->has_status ? st->status : 0;
        if (!has_status && st->has_status) rc = failf("%s does not return a status", s->name);
        if (has_status && st_got != want) {
            if (st_got) rc = failf("%s returned %s (%s), expected %s%s%s", s->name, api_status_name(st_got),
                                  api_last_error(), api_status_name(want),
                                  g_build_err[0] ? (custom_err ? "; a custom op callback: "
                                                    : cl.closure ? "; the capture function: " : "; the build function: ") : "",
                                  g_build_err);
            else rc = failf("%s returned AG_OK, expected %s", s->name, api_status_name(want));
        }
        if (s->ret.ptr == 1 && s->ret.elem == 'c') {
            const char *text = r.p;
            const char *w = st->want_string;
            if (!text) rc = failf("%s returned NULL", s->name);
            else if (w && e->primary && (w[0] == '~' ? !strstr(text, w + 1) : strcmp(text, w) != 0))
                rc = failf("%s returned \"%s\", expected \"%s\"", s->name, text, w);
        } else if (st->want_string) {
            rc = failf("expect_string: %s does not return a string", s->name);
        }
        if (rc == 0 && st_got != 0) {
            /* On failure: a message, and nothing written to any output. */
            const char *msg = api_last_error();
            if (msg[0] == '\0') rc = failf("%s failed with %s but ag_last_error() is empty", s->name,
                                            api_status_name(st_got));
            for (int i = 0; rc == 0 && i < s->np; i++)
                if (args[i].kind == A_OUT && args[i].buf && memcmp(args[i].buf, args[i].sentinel, args[i].bytes) != 0)
                    rc = failf("%s failed with %s but wrote to its output %s", s->name, api_status_name(st_got),
                               s->p[i].name);
        } else if (st_got == 0 && has_status) {
            /* On success: handle outputs are bound (assignments) or released (calls). */
            for (int i = 0; i < s->np; i++) {
                arg_t *a = &args[i];
                if (a->kind != A_OUT || !a->buf) continue;
                bool bound = assign && i < first; /* its handles go to names on the left */
                if (!bound) {
                    int c = check_out(e, s, i, a);
                    if (rc == 0) rc = c;
                }
                const htype_t *ht = s->p[i].ptr == 1 ? find_htype(s->p[i].type) : NULL;
                if (!ht) continue;
                int64_t n = bound ? lhs_n[i] : a->count;
                for (int k = 0; k < n; k++) {
                    uint64_t h = (uint64_t)load_int(a->buf, k, 'U');
                    if (memcmp((unsigned char *)a->buf + 8 * k, a->sentinel + 8 * k, 8) == 0) {
                        if (rc == 0) rc = failf("%s succeeded but left %s[%d] unwritten", s->name, s->p[i].name, k);
                        continue;
                    }
                    if (bound) {
                        int b = env_bind(e, st->lhs[lhs_at[i] + k], ht, h, false);
                        if (b != 0 && h) call_status(ht->free_fn, AV(&h));
                        if (rc == 0) rc = b;
                    } else if (h) {
                        call_status(ht->free_fn, AV(&h));
                    }
                }
            }
            /* A successful T_free through 'call' marks the name as released. */
            if (!assign && s->np == 1 && s == (find_htype(s->p[0].type) ? find_htype(s->p[0].type)->free_fn : NULL) &&
                args[0].tok) {
                bind_t *b = env_find(e, args[0].tok);
                if (b) b->freed = true;
            }
        }
    }

    /* A function captured into a name is kept for 'replay' (its program, inputs and outputs). */
    closure_free(&cl);
    if (cl.code && rc == 0 && assign && env_find(e, st->lhs[0]) && cap.outer) {
        cap.fname = xstrdup(st->lhs[0]);
        PUSH(g_caps, g_ncaps, g_ccaps, cap);
    } else {
        capture_free(&cap);
    }
    for (int i = 0; i < s->np; i++) {
        free(args[i].buf);
        free(args[i].sentinel);
        toks_free(&args[i].list);
        toks_free(&args[i].strs);
    }
    free(pos);
    return rc;
}

/* expect NAME [tol=T] [shape=[...]] VALUES... | expect NAME null */
static int check_values(env_t *e, const char *name, uint64_t h, char **args, int nargs, bool is_grad) {
    double tol = -1;
    int k = 0;
    int64_t shape[MAX_RANK];
    int ndim = -1;
    for (; k < nargs; k++) {
        const char *v;
        if ((v = opt(args[k], "tol"))) {
            if (parse_double(v, &tol) != 0) return failf("bad tol '%s'", v);
        } else if ((v = opt(args[k], "shape"))) {
            if (parse_shape(v, shape, &ndim) != 0) return failf("bad shape '%s'", v);
        } else {
            break;
        }
    }
    (void)e;
    if (k < nargs && strcmp(args[k], "null") == 0) {
        if (h != 0) return failf("%s%s is a tensor, expected none", is_grad ? "the gradient of " : "", name);
        return 0;
    }
    if (h == 0) return failf("%s%s is AG_NULL_TENSOR", is_grad ? "the gradient of " : "", name);
    int32_t dt;
    int32_t stc = api_dtype(&dt, h);
    if (stc) return api_fail("ag_tensor_dtype", stc);
    if (tol < 0) tol = dt == g_float32 ? 1e-5 : 1e-9;
    if (ndim >= 0) {
        int64_t got_ndim, got[MAX_RANK];
        stc = api_ndim(&got_ndim, h);
        if (stc) return api_fail("ag_tensor_ndim", stc);
        if (got_ndim != ndim) return failf("%s has rank %" PRId64 ", expected %d", name, got_ndim, ndim);
        stc = api_shape(got, MAX_RANK, h);
        if (stc) return api_fail("ag_tensor_shape", stc);
        for (int i = 0; i < ndim; i++)
            if (got[i] != shape[i])
                return failf("%s: extent %d is %" PRId64 ", expected %" PRId64, name, i, got[i], shape[i]);
    }
    if (k == nargs) return 0;
    double *vals;
    int64_t n;
    if (tensor_values(h, &vals, &n) != 0) return -1;
    int rc = 0;
    if (n != nargs - k) rc = failf("%s has %" PRId64 " elements, %d expected", name, n, nargs - k);
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        double want;
        if (parse_double(args[k + i], &want) != 0) rc = failf("'%s' is not a number", args[k + i]);
        else if (!close_enough(vals[i], want, tol))
            rc = failf("%s%s[%" PRId64 "] = %.17g, expected %.17g", is_grad ? "grad " : "", name, i, vals[i], want);
    }
    free(vals);
    return rc;
}

/* ---- replay F: a captured function against the eager program, and its gradients ---- */

static int create_inputs_from(env_t *e, double **vals, double **out_vals, const char *const *skip, int nskip);
static double **g_input_values;
static bool any_float32(const case_t *c);
static double weight(int64_t k, int stream);
static int make_weights(uint64_t like, int stream, uint64_t *out, double **vals, int64_t *n);

/* What the replay checks of the current case found (for its "ok" line). */
static struct {
    int64_t rounds, compared, checked;
    double max_err;
} g_replay;

/* A tensor's elements in its own dtype (allocated), their count and their element size. */
static int tensor_raw(uint64_t t, void **raw, int64_t *n, size_t *elsize) {
    int32_t dt, st;
    if ((st = api_numel(n, t))) return api_fail("ag_tensor_numel", st);
    if ((st = api_dtype(&dt, t))) return api_fail("ag_tensor_dtype", st);
    *elsize = code_size(dtype_code(dt));
    *raw = xcalloc((size_t)(*n ? *n : 1), *elsize);
    if ((st = call_status(F.copy_data, AV(raw, n, &dt, &t)))) {
        free(*raw);
        *raw = NULL;
        return api_fail("ag_tensor_copy_data", st);
    }
    return 0;
}

/* A run of cap's program without the capture: the placeholders made from vals (the case's own
 * inputs of those names), the other inputs bound to the capturing run's handles. */
static int function_env(env_t *x, const capture_t *cap, double **vals) {
    env_init(x, cap->outer->c, false);
    int rc = bind_parameters(x, cap->outer, cap->ins, cap->nins);
    /* create_inputs_from skips the names it is given: every input that is not a placeholder */
    const char **skip = xcalloc((size_t)(x->c->nin ? x->c->nin : 1), sizeof *skip);
    int nskip = 0;
    for (int i = 0; i < x->c->nin; i++)
        if (!in_names(cap->ins, cap->nins, x->c->in[i].name)) skip[nskip++] = x->c->in[i].name;
    if (rc == 0) rc = create_inputs_from(x, vals, NULL, skip, nskip);
    free(skip);
    for (int j = 0; rc == 0 && j < cap->nins; j++)
        if (!env_find(x, cap->ins[j])) rc = failf("replay: placeholder %s is not an input of the case", cap->ins[j]);
    return rc;
}

/* Calls f on placeholders made from vals; out[k] receives output k's handle (the caller frees). */
static int call_function(const capture_t *cap, uint64_t f, double **vals, uint64_t *out) {
    env_t x;
    int rc = function_env(&x, cap, vals);
    uint64_t *in = xcalloc((size_t)(cap->nins ? cap->nins : 1), sizeof *in);
    for (int j = 0; rc == 0 && j < cap->nins; j++) in[j] = env_find(&x, cap->ins[j])->h;
    int64_t no = cap->nouts, ni = cap->nins;
    int32_t st = 0;
    if (rc == 0 && (st = call_status(F.function_call, AV(&out, &no, &f, &in, &ni)))) rc = api_fail("ag_function_call", st);
    free(in);
    if (env_cleanup(&x) != 0) rc = -1;
    return rc;
}

/* One round: cap's program run eagerly on vals, then f called and called into on the same
 * values; every output must have the eager output's bits. */
static int replay_round(const capture_t *cap, uint64_t f, double **vals) {
    int n = cap->nouts;
    void **eager = xcalloc((size_t)n, sizeof *eager);
    int64_t *cnt = xcalloc((size_t)n, sizeof *cnt);
    size_t *esz = xcalloc((size_t)n, sizeof *esz);
    uint64_t *out = xcalloc((size_t)n, sizeof *out), *into = xcalloc((size_t)n, sizeof *into);
    env_t x;
    int rc = function_env(&x, cap, vals);
    if (rc == 0) rc = run_program(&x, cap->upto);
    for (int k = 0; rc == 0 && k < n; k++) {
        bind_t *b = env_find(&x, cap->outs[k]);
        if (!b || b->freed) rc = failf("replay: the eager program has no %s", cap->outs[k]);
        else rc = tensor_raw(b->h, &eager[k], &cnt[k], &esz[k]);
    }
    /* The targets of ag_function_call_into: zeros of each output's shape and dtype. */
    for (int k = 0; rc == 0 && k < n; k++) {
        bind_t *b = env_find(&x, cap->outs[k]);
        int64_t ndim, shape[MAX_RANK];
        int32_t dt, st;
        uint64_t *hp = &into[k];
        const int64_t *sp = shape;
        if ((st = api_ndim(&ndim, b->h)) || (st = api_shape(shape, MAX_RANK, b->h)) || (st = api_dtype(&dt, b->h)) ||
            (st = call_status(F.zeros, AV(&hp, &sp, &ndim, &dt))))
            rc = api_fail("making a target for ag_function_call_into", st);
    }
    if (env_cleanup(&x) != 0) rc = -1;
    if (rc == 0) rc = call_function(cap, f, vals, out);
    if (rc == 0) {
        env_t y;
        rc = function_env(&y, cap, vals);
        uint64_t *in = xcalloc((size_t)(cap->nins ? cap->nins : 1), sizeof *in);
        for (int j = 0; rc == 0 && j < cap->nins; j++) in[j] = env_find(&y, cap->ins[j])->h;
        int64_t no = n, ni = cap->nins;
        int32_t st;
        if (rc == 0 && (st = call_status(F.function_call_into, AV(&into, &no, &f, &in, &ni))))
            rc = api_fail("ag_function_call_into", st);
        free(in);
        if (env_cleanup(&y) != 0) rc = -1;
    }
    for (int k = 0; rc == 0 && k < n; k++) {
        for (int w = 0; rc == 0 && w < 2; w++) {
            void *raw = NULL;
            int64_t m;
            size_t sz;
            rc = tensor_raw(w ? into[k] : out[k], &raw, &m, &sz);
            if (rc == 0 && (m != cnt[k] || sz != esz[k]))
                rc = failf("replay: output %s has %" PRId64 " elements of %zu bytes, eagerly %" PRId64 " of %zu",
                           cap->outs[k], m, sz, cnt[k], esz[k]);
            if (rc == 0 && memcmp(raw, eager[k], (size_t)m * sz) != 0) {
                int64_t at = 0;
                while (memcmp((char *)raw + at * (int64_t)sz, (char *)eager[k] + at * (int64_t)sz, sz) == 0) at++;
                rc = failf("replay: %s of output %s differs from the eager program's in its bits at [%" PRId64
                           "]: %.17g vs %.17g",
                           w ? "ag_function_call_into" : "ag_function_call", cap->outs[k], at,
                           load_double(raw, at, sz == 4 ? 'f' : 'd'), load_double(eager[k], at, sz == 4 ? 'f' : 'd'));
            }
            if (rc == 0) g_replay.compared++;
            free(raw);
        }
    }
    for (int k = 0; k < n; k++) {
        free(eager[k]);
        if (out[k]) api_free(out[k]);
        if (into[k]) api_free(into[k]);
    }
    free(eager), free(cnt), free(esz), free(out), free(into);
    return rc;
}

/* The values of output k of f at vals (as float64). */
static int function_output(const capture_t *cap, uint64_t f, double **vals, int k, double **v, int64_t *n) {
    uint64_t *out = xcalloc((size_t)cap->nouts, sizeof *out);
    int rc = call_function(cap, f, vals, out);
    if (rc == 0) rc = tensor_values(out[k], v, n);
    for (int j = 0; j < cap->nouts; j++)
        if (out[j]) api_free(out[j]);
    free(out);
    return rc;
}

static int output_index(const capture_t *cap, const char *name) {
    for (int k = 0; k < cap->nouts; k++)
        if (strcmp(cap->outs[k], name) == 0) return k;
    return -1;
}

static int input_index(const case_t *c, const char *name) {
    for (int i = 0; i < c->nin; i++)
        if (strcmp(c->in[i].name, name) == 0) return i;
    return -1;
}

/* replay F [rounds=N] [loss=L grads=G:X,...] [h=.. atol=.. rtol=..] */
static int exec_replay(env_t *e, const stmt_t *st) {
    const case_t *c = e->c;
    const capture_t *cap = find_capture(st->args[0]);
    bind_t *fb = env_find(e, st->args[0]);
    if (!cap || !fb || fb->freed) return failf("replay: %s is not a live captured function", st->args[0]);
    uint64_t f = fb->h;
    int64_t rounds = 3;
    const char *loss = NULL, *grads = NULL;
    bool f32 = any_float32(c);
    double h = f32 ? 1e-2 : 1e-6, atol = f32 ? 1e-2 : 1e-6, rtol = f32 ? 1e-2 : 1e-5;
    for (int k = 1; k < st->nargs; k++) {
        const char *v;
        if ((v = opt(st->args[k], "rounds")) && parse_i64_literal(v, &rounds) == 0 && rounds >= 1) continue;
        if ((v = opt(st->args[k], "loss"))) loss = v;
        else if ((v = opt(st->args[k], "grads"))) grads = v;
        else if ((v = opt(st->args[k], "h")) && parse_double(v, &h) == 0) continue;
        else if ((v = opt(st->args[k], "atol")) && parse_double(v, &atol) == 0) continue;
        else if ((v = opt(st->args[k], "rtol")) && parse_double(v, &rtol) == 0) continue;
        else return failf("replay: bad option '%s'", st->args[k]);
    }
    if (!loss != !grads) return failf("replay: loss= and grads= go together");

    /* New values for the placeholders, one set per round; the other inputs keep theirs. */
    double **vals = xcalloc((size_t)(c->nin ? c->nin : 1), sizeof *vals);
    for (int i = 0; i < c->nin; i++) {
        vals[i] = xcalloc((size_t)(c->in[i].numel ? c->in[i].numel : 1), sizeof(double));
        if (c->in[i].numel) memcpy(vals[i], g_input_values[i], (size_t)c->in[i].numel * sizeof(double));
    }
    int rc = 0;
    for (int64_t r = rounds; rc == 0 && r >= 1; r--) { /* the last round's values are round 1's */
        for (int j = 0; j < cap->nins; j++) {
            int i = input_index(c, cap->ins[j]);
            if (i < 0) {
                rc = failf("replay: placeholder %s is not an input of the case", cap->ins[j]);
                break;
            }
            char code = dtype_code(c->in[i].dtype);
            for (int64_t k = 0; k < c->in[i].numel; k++) {
                if (code == 'L' || code == 'B') { /* indices and masks: the values rotated, still in range */
                    vals[i][k] = g_input_values[i][(k + r) % c->in[i].numel];
                    continue;
                }
                double v = g_input_values[i][k] * (1 + 0.3 * sin(1.3 * (double)k + 0.7 * (double)r + 0.9 * j));
                vals[i][k] = code == 'f' ? (double)(float)v : v;
            }
        }
        if (rc == 0) rc = replay_round(cap, f, vals);
        g_line = st->line;
        if (rc == 0) g_replay.rounds++;
    }

    /* Gradients: output G (d loss / d X, from ag_grad inside the function) against central
     * differences of the loss, each side a call of f (sum(loss * W) for a loss of many elements). */
    toks_t pairs = {0};
    if (rc == 0 && grads) {
        char *list = xmalloc(strlen(grads) + 3);
        sprintf(list, "[%s]", grads);
        split_list(list, &pairs);
        free(list);
    }
    int lk = loss ? output_index(cap, loss) : -1;
    if (rc == 0 && loss && lk < 0) rc = failf("replay: loss %s is not an output of %s", loss, st->args[0]);
    double *L0 = NULL, *W = NULL;
    int64_t nL = 0;
    if (rc == 0 && loss) rc = function_output(cap, f, vals, lk, &L0, &nL);
    if (rc == 0 && loss) {
        W = xcalloc((size_t)(nL ? nL : 1), sizeof *W);
        for (int64_t k = 0; k < nL; k++) W[k] = nL == 1 ? 1 : weight(k, 2);
    }
    for (int p = 0; rc == 0 && p < pairs.n; p++) {
        char *colon = strchr(pairs.t[p], ':');
        if (!colon) {
            rc = failf("replay: grads wants OUTPUT:INPUT pairs, got '%s'", pairs.t[p]);
            break;
        }
        *colon = '\0';
        int gk = output_index(cap, pairs.t[p]), i = input_index(c, colon + 1);
        if (gk < 0 || i < 0 || !in_names(cap->ins, cap->nins, colon + 1)) {
            rc = failf("replay: %s is not an output or %s not a placeholder of %s", pairs.t[p], colon + 1, st->args[0]);
            break;
        }
        double *G = NULL;
        int64_t nG = 0;
        rc = function_output(cap, f, vals, gk, &G, &nG);
        if (rc == 0 && nG != c->in[i].numel) rc = failf("replay: %s has %" PRId64 " elements, %s %" PRId64,
                                                        pairs.t[p], nG, colon + 1, c->in[i].numel);
        for (int64_t k = 0; rc == 0 && k < nG; k++) {
            double x = vals[i][k], side[2], at[2];
            for (int sgn = 0; rc == 0 && sgn < 2; sgn++) {
                double v = x + (sgn ? -h : h);
                at[sgn] = vals[i][k] = c->in[i].dtype == g_float32 ? (double)(float)v : v;
                double *o = NULL;
                int64_t no = 0;
                rc = function_output(cap, f, vals, lk, &o, &no);
                side[sgn] = 0;
                for (int64_t q = 0; rc == 0 && q < no && q < nL; q++) side[sgn] += W[q] * o[q];
                free(o);
            }
            vals[i][k] = x;
            if (rc != 0) break;
            double numeric = (side[0] - side[1]) / (at[0] - at[1]), err = fabs(G[k] - numeric);
            g_line = st->line;
            g_replay.checked++;
            if (err > g_replay.max_err || isnan(err)) g_replay.max_err = isnan(err) ? INFINITY : err;
            if (!(err <= atol + rtol * fabs(numeric)))
                rc = failf("replay: %s[%" PRId64 "] (d %s / d %s) is %.12g, finite differences of replays %.12g "
                           "(|diff| %.3g)", pairs.t[p], k, loss, colon + 1, G[k], numeric, err);
        }
        free(G);
    }
    toks_free(&pairs);
    free(L0), free(W);
    for (int i = 0; i < c->nin; i++) free(vals[i]);
    free(vals);
    g_line = st->line;
    return rc;
}

/* Two tensors of the same dtype and shape whose values agree (within tol, relative). */
static int same_tensors(const char *what, uint64_t a, uint64_t b, double tol) {
    int64_t na, nb, sa[MAX_RANK], sb[MAX_RANK];
    int32_t da, db, st;
    if ((st = api_ndim(&na, a)) || (st = api_ndim(&nb, b)) || (st = api_dtype(&da, a)) || (st = api_dtype(&db, b)))
        return api_fail(what, st);
    if (da != db) return failf("%s: dtypes %s and %s differ", what, da == g_float32 ? "float32" : "float64",
                               db == g_float32 ? "float32" : "float64");
    if (na != nb || na > MAX_RANK) return failf("%s: ranks %" PRId64 " and %" PRId64 " differ", what, na, nb);
    if ((st = api_shape(sa, MAX_RANK, a)) || (st = api_shape(sb, MAX_RANK, b))) return api_fail(what, st);
    for (int64_t i = 0; i < na; i++)
        if (sa[i] != sb[i]) return failf("%s: extent %" PRId64 " is %" PRId64 " and %" PRId64, what, i, sa[i], sb[i]);
    if (tol < 0) tol = da == g_float32 ? 1e-5 : 1e-9;
    double *va, *vb;
    int64_t n, m;
    if (tensor_values(a, &va, &n) != 0) return -1;
    if (tensor_values(b, &vb, &m) != 0) {
        free(va);
        return -1;
    }
    int rc = 0;
    for (int64_t k = 0; rc == 0 && k < n; k++)
        if (!close_enough(va[k], vb[k], tol)) rc = failf("%s: [%" PRId64 "] is %.17g and %.17g", what, k, va[k], vb[k]);
    free(va);
    free(vb);
    return rc;
}

/* expect_same A B [tol=T] [grads=[X,..]]: A and B (say a custom op and the same function written
 * with catalogue ops) have the same shape, dtype and values; with grads, the gradients of
 * sum(A * W) and of sum(B * W) (fixed weights W, by ag_grad, retaining both graphs) with respect
 * to each X agree too (AG_NULL_TENSOR counts as zeros). */
static int exec_same(env_t *e, const stmt_t *st) {
    bind_t *A = env_find(e, st->args[0]), *B = env_find(e, st->args[1]);
    if (!A || !B || A->freed || B->freed) return failf("expect_same: %s or %s is not a live tensor", st->args[0], st->args[1]);
    double tol = -1;
    const char *grads = NULL;
    for (int k = 2; k < st->nargs; k++) {
        const char *v;
        if ((v = opt(st->args[k], "tol")) && parse_double(v, &tol) == 0) continue;
        if ((v = opt(st->args[k], "grads"))) grads = v;
        else return failf("expect_same: bad option '%s'", st->args[k]);
    }
    char what[256];
    snprintf(what, sizeof what, "expect_same %s %s: values", st->args[0], st->args[1]);
    int rc = same_tensors(what, A->h, B->h, tol);
    if (rc != 0 || !grads) return rc;
    toks_t xs = {0};
    if (split_list(grads, &xs) != 0 || xs.n < 1) {
        toks_free(&xs);
        return failf("expect_same: grads wants [NAME,..]");
    }
    uint64_t *in = xcalloc((size_t)xs.n, sizeof *in), *ga = xcalloc((size_t)xs.n, sizeof *ga),
             *gb = xcalloc((size_t)xs.n, sizeof *gb);
    for (int i = 0; rc == 0 && i < xs.n; i++) {
        bind_t *x = env_find(e, xs.t[i]);
        if (!x || x->freed) rc = failf("expect_same: %s is not a live tensor", xs.t[i]);
        else in[i] = x->h;
    }
    uint64_t w = 0;
    double *W = NULL;
    int64_t nW;
    if (rc == 0) rc = make_weights(A->h, 3, &w, &W, &nW);
    int32_t s;
    uint64_t oa[1] = {A->h}, ob[1] = {B->h}, seeds[1] = {w};
    if (rc == 0 && (s = api_grad(ga, oa, 1, seeds, in, xs.n, true, false, true))) rc = api_fail("ag_grad (expect_same, first)", s);
    if (rc == 0 && (s = api_grad(gb, ob, 1, seeds, in, xs.n, true, false, true))) rc = api_fail("ag_grad (expect_same, second)", s);
    for (int i = 0; rc == 0 && i < xs.n; i++) {
        snprintf(what, sizeof what, "expect_same %s %s: gradients with respect to %s", st->args[0], st->args[1], xs.t[i]);
        uint64_t z = 0;
        if (!ga[i] || !gb[i]) { /* none: zeros of the input's shape and dtype */
            int64_t nd, sh[MAX_RANK];
            int32_t dt;
            uint64_t *zp = &z;
            const int64_t *sp = sh;
            if ((s = api_ndim(&nd, in[i])) || (s = api_shape(sh, MAX_RANK, in[i])) || (s = api_dtype(&dt, in[i])) ||
                (s = call_status(F.zeros, AV(&zp, &sp, &nd, &dt))))
                rc = api_fail("zeros for a missing gradient", s);
        }
        if (rc == 0) rc = same_tensors(what, ga[i] ? ga[i] : z, gb[i] ? gb[i] : z, tol);
        if (z) api_free(z);
    }
    for (int i = 0; i < xs.n; i++) {
        if (ga[i]) api_free(ga[i]);
        if (gb[i]) api_free(gb[i]);
    }
    if (w) api_free(w);
    free(W), free(in), free(ga), free(gb);
    toks_free(&xs);
    return rc;
}

static int exec_stmt(env_t *e, const stmt_t *st) {
    g_line = st->line;
    switch (st->kind) {
    case S_CALL:
    case S_ASSIGN:
        return exec_call(e, st);
    case S_REPLAY:
        return e->primary ? exec_replay(e, st) : 0;
    case S_FREE: {
        bind_t *b = env_find(e, st->args[0]);
        if (!e->primary && !b) return 0; /* a captured function: never bound in replays */
        if (!b || b->borrowed) return failf("free: '%s' is not a handle of this case", st->args[0]);
        if (b->freed) return failf("free: '%s' is already freed (use 'call ..._free' to test that)", st->args[0]);
        uint64_t h = b->h;
        int32_t rc = call_status(b->type->free_fn, AV(&h));
        if (rc) return failf("freeing %s: %s (%s)", st->args[0], api_status_name(rc), api_last_error());
        b->freed = true;
        return 0;
    }
    case S_GRADMODE: {
        bool prev;
        int32_t rc = api_set_grad_enabled(&prev, strcmp(st->args[0], "on") == 0);
        return rc ? api_fail("ag_set_grad_enabled", rc) : 0;
    }
    case S_STATUS: {
        int64_t v = 0;
        parse_i64_literal(st->args[0], &v);
        e->ret_status = (int32_t)v;
        return 0;
    }
    case S_SAME:
        return e->primary ? exec_same(e, st) : 0;
    case S_EXPECT: {
        if (!e->primary && !e->callback) return 0;
        bind_t *b = env_find(e, st->args[0]);
        if (!b) return failf("expect: '%s' is not bound", st->args[0]);
        return check_values(e, st->args[0], b->h, st->args + 1, st->nargs - 1, false);
    }
    case S_EXPECT_GRAD: {
        if (!e->primary && !e->callback) return 0;
        bind_t *b = env_find(e, st->args[0]);
        if (!b) return failf("expect_grad: '%s' is not bound", st->args[0]);
        uint64_t g = 0;
        int32_t s = api_grad_of(&g, b->h);
        if (s) return api_fail("ag_tensor_grad", s);
        int rc = check_values(e, st->args[0], g, st->args + 1, st->nargs - 1, true);
        if (g) api_free(g);
        return rc;
    }
    default:
        return failf("internal: statement kind %d in a program", st->kind);
    }
}

/* Whether a statement passes a build: function: such a call (ag_gradcheck) checks the program
 * and is not part of the function, so replays skip it. */
static bool is_check_call(const stmt_t *st) {
    for (int k = 0; k < st->nargs; k++) {
        const char *v = strchr(st->args[k], '=');
        if (strncmp(st->args[k], "build:", 6) == 0 || (v && strncmp(v + 1, "build:", 6) == 0)) return true;
    }
    return false;
}

static int run_program(env_t *e, int upto) {
    for (int i = 0; i < upto; i++) {
        const stmt_t *st = &e->c->st[i];
        if (!e->primary && st->kind == S_CALL && is_check_call(st)) continue;
        /* Captures, calls of captured functions and replay checks are no function's part. */
        if (!e->primary && is_function_stmt(st)) continue;
        /* An assignment from a transform (NAMES = ag_jvp build:...) is part of the program and
         * replays with it, except inside a build function, where build functions do not nest. */
        if (g_build.active && st->kind == S_ASSIGN && is_check_call(st)) continue;
        if (exec_stmt(e, st) != 0) return -1;
    }
    return 0;
}

/* Creates the case's inputs. vals == NULL: from their fills (the primary run), then their values
 * are read back into fresh arrays in *out_vals if given. vals != NULL: from those values, by
 * ag_tensor_from_data (replays). Inputs named in skip are left alone (bound elsewhere). */
static int create_inputs_from(env_t *e, double **vals, double **out_vals, const char *const *skip, int nskip) {
    for (int i = 0; i < e->c->nin; i++) {
        const input_t *in = &e->c->in[i];
        bool skipped = false;
        for (int k = 0; k < nskip; k++)
            if (strcmp(skip[k], in->name) == 0) skipped = true;
        if (skipped) continue;
        g_line = in->line;
        uint64_t h = 0, *hp = &h;
        int32_t st;
        const int64_t *shape = in->shape;
        int64_t ndim = in->ndim;
        int32_t dt = in->dtype;
        const double *src = vals ? vals[i] : in->fill == FILL_VALUES ? in->values : NULL;
        if (src) {
            void *data = xcalloc((size_t)(in->numel ? in->numel : 1), 8);
            char code = dtype_code(dt);
            bool is_int = code == 'L' || code == 'B';
            for (int64_t k = 0; k < in->numel; k++) {
                /* The int64 form only for int dtypes, and only of a value int64 holds (a float
                 * input may hold nan or inf: converting those is undefined behaviour). */
                double v = src[k];
                int64_t iv = is_int && v == v && v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? (int64_t)v : 0;
                store_elem(data, k, code, v, iv, is_int);
            }
            st = api_from_data(&h, data, shape, ndim, dt);
            free(data);
        } else if (in->fill == FILL_UNIFORM || in->fill == FILL_NORMAL) {
            double lo = in->a, hi = in->b;
            uint64_t seed = in->seed;
            st = call_status(in->fill == FILL_UNIFORM ? F.rand_uniform : F.rand_normal,
                             AV(&hp, &shape, &ndim, &lo, &hi, &seed, &dt));
        } else if (in->fill == FILL_FULL) {
            double v = in->a;
            st = call_status(F.full, AV(&hp, &shape, &ndim, &v, &dt));
        } else {
            st = call_status(in->fill == FILL_ZEROS ? F.zeros : F.ones, AV(&hp, &shape, &ndim, &dt));
        }
        if (st) return failf("creating input %s: %s (%s)", in->name, api_status_name(st), api_last_error());
        if (env_bind(e, in->name, find_htype("ag_tensor"), h, false) != 0) {
            api_free(h);
            return -1;
        }
        if (in->grad && (st = api_set_requires_grad(h, true)) != 0) return api_fail("ag_tensor_set_requires_grad", st);
        if (out_vals) {
            int64_t n;
            if (tensor_values(h, &out_vals[i], &n) != 0) return -1;
            if (n != in->numel) return failf("input %s has %" PRId64 " elements, expected %" PRId64, in->name, n, in->numel);
        }
    }
    return 0;
}

static double **g_input_values; /* the primary run's input values (for replays) */

static int create_inputs(env_t *e, double **vals, const char *const *skip, int nskip) {
    return create_inputs_from(e, vals ? vals : g_input_values, NULL, skip, nskip);
}

/* ========================================================================================== */
/* Gradient checks                                                                            */
/* ========================================================================================== */

/* Fixed weights for reducing an output: w_k in [0.5, 1.5], some negative. */
static double weight(int64_t k, int stream) {
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15ull + (uint64_t)stream * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    double w = 0.5 + (double)(x % 1000) / 1000.0;
    return (x >> 40) % 3 == 0 ? -w : w;
}

/* A weights tensor of h's shape and dtype; vals receives the weights as the tensor holds them. */
static int make_weights(uint64_t like, int stream, uint64_t *out, double **vals, int64_t *n) {
    int64_t ndim, shape[MAX_RANK];
    int32_t dt, st;
    if ((st = api_ndim(&ndim, like))) return api_fail("ag_tensor_ndim", st);
    if (ndim > MAX_RANK) return failf("rank %" PRId64 " too large", ndim);
    if ((st = api_shape(shape, MAX_RANK, like))) return api_fail("ag_tensor_shape", st);
    if ((st = api_dtype(&dt, like))) return api_fail("ag_tensor_dtype", st);
    if ((st = api_numel(n, like))) return api_fail("ag_tensor_numel", st);
    *vals = xcalloc((size_t)(*n ? *n : 1), sizeof(double));
    void *data = xcalloc((size_t)(*n ? *n : 1), 8);
    for (int64_t k = 0; k < *n; k++) {
        double w = weight(k, stream);
        if (dt == g_float32) w = (float)w;
        (*vals)[k] = w;
        store_elem(data, k, dt == g_float32 ? 'f' : 'd', w, 0, false);
    }
    st = api_from_data(out, data, shape, ndim, dt);
    free(data);
    if (st) {
        free(*vals);
        *vals = NULL;
        return api_fail("ag_tensor_from_data (weights)", st);
    }
    return 0;
}

/* A replay: the program on inputs with values vals; *out receives the output's values. */
static int replay_output(const case_t *c, double **vals, double **out, int64_t *n) {
    env_t e;
    env_init(&e, c, false);
    int rc = create_inputs(&e, vals, NULL, 0);
    if (rc == 0) rc = run_program(&e, c->nst);
    bind_t *b = rc == 0 ? env_find(&e, c->output) : NULL;
    if (rc == 0 && (!b || b->freed)) rc = failf("replay: output %s is not bound", c->output);
    if (rc == 0) rc = tensor_values(b->h, out, n);
    if (env_cleanup(&e) != 0) rc = -1;
    return rc;
}

/* sum(output * W) of a replay. */
static int replay_loss(const case_t *c, double **vals, const double *W, int64_t nW, double *loss) {
    double *o;
    int64_t n;
    if (replay_output(c, vals, &o, &n) != 0) return -1;
    if (n != nW) {
        free(o);
        return failf("replay: output has %" PRId64 " elements, first run %" PRId64, n, nW);
    }
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += o[k] * W[k];
    free(o);
    *loss = s;
    return 0;
}

/* The input perturbed by +-h, as the input's dtype holds it; returns the actual difference. */
static double perturb(double **vals, const input_t *in, int i, int64_t k, double x, double h, int sign) {
    double v = x + sign * h;
    if (in->dtype == g_float32) v = (float)v;
    vals[i][k] = v;
    return v;
}

typedef struct {
    double max_err;
    int64_t checked;
} stats_t;

static int compare_grad(const case_t *c, const char *what, const char *name, int64_t k, double analytic,
                        double numeric, double atol, double rtol, stats_t *stats) {
    double err = fabs(analytic - numeric);
    g_line = c->output_line; /* replays moved it */
    stats->checked++;
    if (err > stats->max_err || isnan(err)) stats->max_err = isnan(err) ? INFINITY : err;
    if (!(err <= atol + rtol * fabs(numeric)))
        return failf("%s of %s[%" PRId64 "]: analytic %.12g, finite differences %.12g (|diff| %.3g > %.3g)", what,
                     name, k, analytic, numeric, err, atol + rtol * fabs(numeric));
    return 0;
}

static bool any_float32(const case_t *c) {
    for (int i = 0; i < c->nin; i++)
        if (c->in[i].dtype == g_float32) return true;
    return false;
}

/* The first-order check (and with retain, the retained-graph check) on the primary run. */
static int check_gradients(env_t *e, stats_t *stats) {
    const case_t *c = e->c;
    bool f32 = any_float32(c);
    double h = c->h > 0 ? c->h : f32 ? 1e-2 : 1e-6;
    double atol = c->atol > 0 ? c->atol : f32 ? 1e-2 : 1e-6;
    double rtol = c->rtol > 0 ? c->rtol : f32 ? 1e-2 : 1e-5;
    bind_t *ob = env_find(e, c->output);
    if (!ob || ob->freed || ob->h == 0) return failf("output %s is not a live tensor", c->output);
    uint64_t out = ob->h;

    /* Reduce with fixed weights: a seed tensor, or the default seed 1 for one element. */
    uint64_t seed = 0;
    double *W;
    int64_t nW;
    if (make_weights(out, 1, &seed, &W, &nW) != 0) return -1;
    if (nW == 1) {
        api_free(seed);
        seed = 0;
        W[0] = 1;
    }
    int rc = 0;
    int32_t st;
    int passes = c->retain ? 2 : 1;
    /* The last pass keeps the graph only if the second-derivative check still needs it. */
    for (int k = 0; rc == 0 && k < passes; k++)
        if ((st = api_backward(out, seed, k + 1 < passes || c->second, false))) rc = api_fail("ag_backward", st);
    if (rc == 0 && c->retain) {
        /* the graph is released now */
        st = api_backward(out, seed, false, false);
        const const_t *state = find_const("AG_ERR_STATE");
        if (!state || st != state->value)
            rc = failf("a third ag_backward through a released graph returned %s, expected AG_ERR_STATE",
                       api_status_name(st));
    }
    for (int i = 0; rc == 0 && i < c->nin; i++) {
        const input_t *in = &c->in[i];
        if (!in->grad) continue;
        bind_t *b = env_find(e, in->name);
        uint64_t g = 0;
        if (!b || b->freed) continue; /* an input the program released: its gradient is dropped */
        if ((st = api_grad_of(&g, b->h))) {
            rc = api_fail("ag_tensor_grad", st);
            break;
        }
        double *ga = NULL;
        int64_t n = in->numel;
        if (g) {
            rc = tensor_values(g, &ga, &n);
            api_free(g);
            if (rc == 0 && n != in->numel)
                rc = failf("the gradient of %s has %" PRId64 " elements, the input %" PRId64, in->name, n, in->numel);
        } else {
            ga = xcalloc((size_t)(in->numel ? in->numel : 1), sizeof(double)); /* none: zero */
        }
        for (int64_t k = 0; rc == 0 && k < in->numel; k++) {
            double x = g_input_values[i][k], lp, lm;
            double xp = perturb(g_input_values, in, i, k, x, h, +1);
            rc = replay_loss(c, g_input_values, W, nW, &lp);
            double xm = perturb(g_input_values, in, i, k, x, h, -1);
            if (rc == 0) rc = replay_loss(c, g_input_values, W, nW, &lm);
            g_input_values[i][k] = x;
            if (rc != 0) break;
            double numeric = passes * (lp - lm) / (xp - xm);
            rc = compare_grad(c, c->retain ? "retained-graph gradient (2 passes)" : "gradient", in->name, k, ga[k],
                              numeric, atol * passes, rtol, stats);
        }
        free(ga);
    }
    if (seed) api_free(seed);
    free(W);
    return rc;
}

/* First derivatives of sum(output * W) by ag_grad, for every grad input (NULL when unused). */
static int first_derivatives(env_t *e, uint64_t seed, bool create, uint64_t *grads, int *gi, int ng) {
    const case_t *c = e->c;
    bind_t *ob = env_find(e, c->output);
    if (!ob || ob->freed) return failf("output %s is not bound", c->output);
    uint64_t *inputs = xcalloc((size_t)ng, sizeof(uint64_t));
    for (int j = 0; j < ng; j++) inputs[j] = env_find(e, c->in[gi[j]].name)->h;
    uint64_t outputs[1] = {ob->h}, seeds[1] = {seed};
    int32_t st = api_grad(grads, outputs, 1, seeds, inputs, ng, true, create, true);
    free(inputs);
    return st ? api_fail(create ? "ag_grad (create_graph)" : "ag_grad", st) : 0;
}

/* S = sum_i <grad_i, V_i> of a replay, the first derivatives computed by ag_grad. */
static int replay_s(const case_t *c, double **vals, int *gi, int ng, double **V, int64_t *nV, double *S) {
    env_t e;
    env_init(&e, c, false);
    int rc = create_inputs(&e, vals, NULL, 0);
    if (rc == 0) rc = run_program(&e, c->nst);
    uint64_t seed = 0;
    double *W = NULL;
    int64_t nW = 0;
    bind_t *ob = rc == 0 ? env_find(&e, c->output) : NULL;
    if (rc == 0 && !ob) rc = failf("replay: no output");
    if (rc == 0) rc = make_weights(ob->h, 1, &seed, &W, &nW);
    if (rc == 0 && nW == 1) {
        api_free(seed);
        seed = 0;
    }
    uint64_t *g = xcalloc((size_t)ng, sizeof(uint64_t));
    if (rc == 0) rc = first_derivatives(&e, seed, false, g, gi, ng);
    double s = 0;
    for (int j = 0; j < ng; j++) {
        if (rc == 0 && g[j]) {
            double *v;
            int64_t n;
            rc = tensor_values(g[j], &v, &n);
            if (rc == 0 && n != nV[j]) rc = failf("replay: gradient size changed");
            for (int64_t k = 0; rc == 0 && k < n; k++) s += v[k] * V[j][k];
            if (rc == 0) free(v);
        }
        api_free(g[j]);
    }
    free(g);
    if (seed) api_free(seed);
    free(W);
    if (env_cleanup(&e) != 0) rc = -1;
    *S = s;
    return rc;
}

/*
 * Second derivatives: g = ag_grad(sum(output * W), inputs, create_graph), then
 * H = ag_grad(sum_i <g_i, V_i>, inputs) with fixed V, against finite differences of
 * S(x) = sum_i <g_i(x), V_i>, the first derivatives recomputed by ag_grad on replays.
 */
static int check_second(env_t *e, stats_t *stats) {
    const case_t *c = e->c;
    double h = c->h2 > 0 ? c->h2 : 1e-5;
    double atol = c->atol2 > 0 ? c->atol2 : 1e-6;
    double rtol = c->rtol2 > 0 ? c->rtol2 : 1e-5;
    int gi[64], ng = 0;
    for (int i = 0; i < c->nin && ng < 64; i++)
        if (c->in[i].grad) gi[ng++] = i;
    if (ng == 0) return failf("second_derivative: no input requires grad");
    for (int j = 0; j < ng; j++)
        if (c->in[gi[j]].dtype != g_float64) return failf("second_derivative needs float64 inputs");
    bind_t *ob = env_find(e, c->output);
    if (!ob || ob->freed) return failf("output %s is not bound", c->output);
    uint64_t seed = 0;
    double *W = NULL;
    int64_t nW;
    if (make_weights(ob->h, 1, &seed, &W, &nW) != 0) return -1;
    if (nW == 1) {
        api_free(seed);
        seed = 0;
    }
    uint64_t *g = xcalloc((size_t)ng, sizeof(uint64_t));
    uint64_t *vt = xcalloc((size_t)ng, sizeof(uint64_t));
    uint64_t *H = xcalloc((size_t)ng, sizeof(uint64_t));
    double **V = xcalloc((size_t)ng, sizeof(double *));
    int64_t *nV = xcalloc((size_t)ng, sizeof(int64_t));
    int rc = first_derivatives(e, seed, true, g, gi, ng);

    /* The differentiable first derivatives become the outputs of the second ag_grad. */
    uint64_t outs[64], seeds[64];
    int no = 0;
    for (int j = 0; rc == 0 && j < ng; j++) {
        uint64_t like = g[j] ? g[j] : env_find(e, c->in[gi[j]].name)->h;
        rc = make_weights(like, 2 + j, &vt[j], &V[j], &nV[j]);
        bool rg = false;
        int32_t st;
        if (rc == 0 && g[j] && (st = api_requires_grad(&rg, g[j]))) rc = api_fail("ag_tensor_requires_grad", st);
        if (rc == 0 && rg) {
            outs[no] = g[j];
            seeds[no++] = vt[j];
        }
    }
    uint64_t *inputs = xcalloc((size_t)ng, sizeof(uint64_t));
    for (int j = 0; j < ng; j++) inputs[j] = env_find(e, c->in[gi[j]].name)->h;
    if (rc == 0 && no > 0) {
        int32_t st = api_grad(H, outs, no, seeds, inputs, ng, false, false, true);
        if (st) rc = api_fail("ag_grad (second)", st);
    }
    for (int j = 0; rc == 0 && j < ng; j++) {
        const input_t *in = &c->in[gi[j]];
        double *ha = NULL;
        int64_t n = in->numel;
        if (H[j]) rc = tensor_values(H[j], &ha, &n);
        else ha = xcalloc((size_t)(n ? n : 1), sizeof(double));
        for (int64_t k = 0; rc == 0 && k < in->numel; k++) {
            double x = g_input_values[gi[j]][k], sp, sm;
            double xp = perturb(g_input_values, in, gi[j], k, x, h, +1);
            rc = replay_s(c, g_input_values, gi, ng, V, nV, &sp);
            double xm = perturb(g_input_values, in, gi[j], k, x, h, -1);
            if (rc == 0) rc = replay_s(c, g_input_values, gi, ng, V, nV, &sm);
            g_input_values[gi[j]][k] = x;
            if (rc == 0)
                rc = compare_grad(c, "second derivative", in->name, k, ha[k], (sp - sm) / (xp - xm), atol, rtol, stats);
        }
        free(ha);
    }
    for (int j = 0; j < ng; j++) {
        api_free(g[j]);
        api_free(vt[j]);
        api_free(H[j]);
        free(V[j]);
    }
    free(inputs);
    free(g);
    free(vt);
    free(H);
    free(V);
    free(nV);
    if (seed) api_free(seed);
    free(W);
    return rc;
}

/* expect_counter N [calls=K] [destroyed=D] (after every handle is released) */
static int check_counter(const stmt_t *st) {
    g_line = st->line;
    int64_t k;
    if (parse_i64_literal(st->args[0], &k) != 0 || k < 0 || k >= N_COUNTERS) return failf("bad counter '%s'", st->args[0]);
    for (int i = 1; i < st->nargs; i++) {
        const char *v;
        int64_t want;
        if ((v = opt(st->args[i], "calls")) && parse_i64_literal(v, &want) == 0) {
            if (g_counters[k].calls != want)
                return failf("counter %" PRId64 ": %" PRId64 " hook calls, expected %" PRId64, k, g_counters[k].calls, want);
        } else if ((v = opt(st->args[i], "destroyed")) && parse_i64_literal(v, &want) == 0) {
            if (g_counters[k].destroyed != want)
                return failf("counter %" PRId64 ": destroyed %" PRId64 " times, expected %" PRId64, k,
                             g_counters[k].destroyed, want);
        } else {
            return failf("expect_counter: bad option '%s'", st->args[i]);
        }
    }
    return 0;
}

/* Runs one case; prints its line; returns true if it passed. */
static bool run_case(const case_t *c) {
    g_failed = false;
    g_err[0] = '\0';
    g_line = 0;
    memset(g_counters, 0, sizeof g_counters);
    memset(&g_replay, 0, sizeof g_replay);
    double t0 = now_seconds();
    stats_t stats = {0, 0};
    stats_t stats2 = {0, 0};

    int64_t live0 = 0, live1 = 0;
    int32_t st = api_live(&live0);
    if (st) api_fail("ag_live_handle_count", st);
    bool prev;
    api_set_grad_enabled(&prev, true);

    g_input_values = xcalloc((size_t)(c->nin ? c->nin : 1), sizeof(double *));
    env_t e;
    env_init(&e, c, true);
    int rc = g_failed ? -1 : create_inputs_from(&e, NULL, g_input_values, NULL, 0);
    if (rc == 0) rc = run_program(&e, c->nst);
    if (rc == 0 && c->output && c->gradcheck) {
        bool any = false;
        for (int i = 0; i < c->nin; i++) any = any || c->in[i].grad;
        if (any) rc = check_gradients(&e, &stats);
        else if (c->retain) rc = failf("retain: no input requires grad");
    }
    if (rc == 0 && c->second) rc = check_second(&e, &stats2);
    g_line = 0;
    env_cleanup(&e);
    for (int k = 0; k < g_ncaps; k++) capture_free(&g_caps[k]);
    free(g_caps);
    g_caps = NULL;
    g_ncaps = g_ccaps = 0;
    /* every handle is released: no graph or function can call a custom op's callback any more */
    for (int k = 0; k < g_ncops; k++) {
        closure_free(&g_cops[k]->cl);
        free(g_cops[k]);
    }
    free(g_cops);
    g_cops = NULL;
    g_ncops = g_ccops = 0;
    g_callback_err[0] = '\0';
    api_set_grad_enabled(&prev, true);
    remove_tree(g_tmpdir, true); /* the next case starts with an empty temporary directory */
    for (int i = 0; i < c->npost; i++) check_counter(&c->post[i]);
    g_line = 0;
    st = api_live(&live1);
    if (st) api_fail("ag_live_handle_count", st);
    else if (live1 != live0)
        failf("%" PRId64 " handle(s) left alive after the case (%" PRId64 " before, %" PRId64 " after)",
              live1 - live0, live0, live1);
    for (int i = 0; i < c->nin; i++) free(g_input_values[i]);
    free(g_input_values);
    g_input_values = NULL;

    double ms = (now_seconds() - t0) * 1000;
    if (g_failed) {
        printf("FAIL %-44s %s:%s\n", c->name, c->file, g_err);
        return false;
    }
    char detail[400] = "";
    if (stats.checked) {
        snprintf(detail, sizeof detail, "%" PRId64 " gradient elements, max |err| %.1e", stats.checked, stats.max_err);
    }
    if (stats2.checked) {
        size_t l = strlen(detail);
        snprintf(detail + l, sizeof detail - l, "%s%" PRId64 " second-derivative elements, max |err| %.1e",
                 l ? "; " : "", stats2.checked, stats2.max_err);
    }
    if (g_replay.rounds) {
        size_t l = strlen(detail);
        snprintf(detail + l, sizeof detail - l, "%s%" PRId64 " replay rounds, %" PRId64 " outputs bit-identical to eager",
                 l ? "; " : "", g_replay.rounds, g_replay.compared);
        l = strlen(detail);
        if (g_replay.checked)
            snprintf(detail + l, sizeof detail - l, "; %" PRId64 " replayed gradient elements vs finite differences, max |err| %.1e",
                     g_replay.checked, g_replay.max_err);
    }
    if (!detail[0]) snprintf(detail, sizeof detail, "forward and statuses");
    printf("ok   %-44s %s (%.0f ms)\n", c->name, detail, ms);
    return true;
}

/* ========================================================================================== */
/* main                                                                                       */
/* ========================================================================================== */

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int case_filter(const struct dirent *d) { return has_suffix(d->d_name, ".case"); }

static void usage(void) {
    fprintf(stderr, "usage: harness [-v] [--require-coverage] LIBRARY HEADER CASE_OR_DIRECTORY...\n");
    exit(2);
}

int main(int argc, char **argv) {
    bool require_coverage = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0) g_verbose = true;
        else if (strcmp(argv[i], "--require-coverage") == 0) require_coverage = true;
        else usage();
    }
    if (argc - i < 3) usage();
    const char *libpath = argv[i], *header = argv[i + 1];
    setvbuf(stdout, NULL, _IOLBF, 0);

    parse_header(header);
    void *lib = load_library(libpath);
    (void)lib; /* stays loaded: the Swift runtime inside does not support unloading */
    check_used_signatures();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/ag-ffi-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_tmpdir)) fatal("cannot make a temporary directory %s: %s", g_tmpdir, strerror(errno));
    atexit(remove_tmpdir);
    const char *version = api_string(F.version, NULL);
    printf("header %s: %d functions, %d typedefs, %d constants, %d handle types; all resolved in %s (version %s)\n",
           header, g_nsigs, g_ntdefs, g_nconsts, g_nhtypes, libpath, version ? version : "?");

    /* The status names the library gives must be the header's. */
    int failed = 0, passed = 0;
    for (int k = 0; k < g_nconsts; k++) {
        const char *n = g_consts[k].name;
        if (strcmp(n, "AG_OK") != 0 && strncmp(n, "AG_ERR_", 7) != 0) continue;
        const char *got = api_status_name((int32_t)g_consts[k].value);
        if (!got || strcmp(got, n) != 0) {
            printf("FAIL status names: ag_status_name(%" PRId64 ") is \"%s\", the header says %s\n", g_consts[k].value,
                   got ? got : "(NULL)", n);
            failed++;
        }
    }

    caselist_t cases = {0};
    for (int a = i + 2; a < argc; a++) {
        const char *p = argv[a];
        if (has_suffix(p, ".case")) {
            read_cases(p, &cases, &failed);
            continue;
        }
        struct dirent **list;
        int n = scandir(p, &list, case_filter, alphasort);
        if (n < 0) {
            printf("FAIL %s: not a .case file or a readable directory\n", p);
            failed++;
            continue;
        }
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", p, list[k]->d_name);
            read_cases(path, &cases, &failed);
            free(list[k]);
        }
        free(list);
    }

    for (int k = 0; k < cases.n; k++) {
        if (run_case(&cases.c[k])) passed++;
        else failed++;
    }

    int64_t live = -1;
    api_live(&live);
    if (live != 0) {
        printf("FAIL live handles: %" PRId64 " handle(s) alive at the end of the run\n", live);
        failed++;
    }

    int covered = 0;
    for (int k = 0; k < g_nsigs; k++) covered += g_sigs[k].calls > 0;
    printf("functions called through libffi: %d of %d declared\n", covered, g_nsigs);
    if (covered < g_nsigs && require_coverage) {
        printf("FAIL coverage: never called:");
        for (int k = 0; k < g_nsigs; k++)
            if (!g_sigs[k].calls) printf(" %s", g_sigs[k].name);
        printf("\n");
        failed++;
    }

    for (int k = 0; k < cases.n; k++) free_case(&cases.c[k]);
    free(cases.c);
    free(g_sigs);
    free(g_tdefs);
    free(g_consts);
    free(g_htypes);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
