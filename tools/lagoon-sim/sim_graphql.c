/*
 * sim_graphql: a small GraphQL parser, validator and executor for the four
 * Lagoon root fields the simulator serves (bulkDeployEnvironmentLatest,
 * deploymentsByBulkId, projectByName,
 * deploymentByName with buildLog). Error messages follow graphql-js so
 * that a client tested here reads the same texts from the real Lagoon API.
 * Everything a request allocates lives in one arena freed with it. No HTTP,
 * no authentication, no faults; fragments and directives are refused.
 */
#include "sim_graphql.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MAX_DEPTH   16 /* selection and value nesting */
#define MAX_ERRORS  20 /* like graphql-js, stop reporting after a while */
#define ARENA_BLOCK 32768

/* ---- arena -------------------------------------------------------------- */

typedef struct ablock {
    struct ablock *next;
    size_t used, cap;
    max_align_t data[];
} ablock_t;

typedef struct arena {
    ablock_t *head;
    bool failed;
} arena_t;

static void *arena_alloc(arena_t *a, size_t n)
{
    ablock_t *b = a->head;
    size_t align = sizeof(max_align_t);

    n = (n + align - 1) / align * align;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(sizeof(*b) + cap);
        if (!b) {
            a->failed = true;
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    b->used += n;
    return (char *)b->data + b->used - n;
}

static char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);

    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void arena_free(arena_t *a)
{
    while (a->head) {
        ablock_t *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/*
 * jansson allocations. While a request body is parsed, its JSON tree goes
 * into the request's arena: a 100-environment bulk is hundreds of small
 * objects, and malloc/free of those cost more than everything else the
 * request does. A header byte says where a block came from, so json_decref
 * of an arena tree frees nothing and every other jansson value is an
 * ordinary heap block.
 */
#define JHDR sizeof(max_align_t)

static __thread arena_t *json_arena;

static void *json_alloc(size_t n)
{
    unsigned char *p;

    if (json_arena) {
        p = arena_alloc(json_arena, n + JHDR);
        if (!p)
            return NULL;
        p[0] = 1;
    } else {
        p = malloc(n + JHDR);
        if (!p)
            return NULL;
        p[0] = 0;
    }
    return p + JHDR;
}

static void json_free(void *ptr)
{
    unsigned char *p;

    if (!ptr)
        return;
    p = (unsigned char *)ptr - JHDR;
    if (p[0] == 0)
        free(p);
}

void rw_sim_gql_init(void)
{
    json_set_alloc_funcs(json_alloc, json_free);
}

/* ---- document ----------------------------------------------------------- */

typedef struct gql_arg {
    const char *name;
    const char *var; /* NULL when the value is a literal */
    int line, col;
    struct gql_arg *next;
} gql_arg_t;

typedef struct gql_field {
    const char *alias; /* response key; the name when there is no alias */
    const char *name;
    gql_arg_t *args;
    struct gql_field *sel; /* first child */
    bool has_sel;
    int kind; /* index into its type's field table; -1 = __typename */
    int line, col;
    struct gql_field *next;
} gql_field_t;

typedef struct gql_vardef {
    const char *name;
    const char *type; /* e.g. "[String!]!" */
    bool has_default;
    bool used;
    int line, col;
    struct gql_vardef *next;
} gql_vardef_t;

enum op_kind { OP_QUERY, OP_MUTATION, OP_SUBSCRIPTION };

typedef struct gql_op {
    enum op_kind kind;
    const char *name; /* NULL for anonymous */
    gql_vardef_t *vars;
    gql_field_t *sel;
    int line, col;
    struct gql_op *next;
} gql_op_t;

typedef struct gql_error {
    const char *msg;
    const char *code;
    int line, col; /* 0 = no location */
} gql_error_t;

struct rw_sim_gql {
    arena_t arena;
    json_t *body;
    int http_status; /* 400 when the body is not a GraphQL request */
    gql_op_t *ops;
    gql_op_t *op; /* the one to execute */
    json_t *vars; /* borrowed from body; may be NULL */
    gql_error_t errors[MAX_ERRORS];
    int n_errors;
    int deploy_fields;
};

static void add_error(rw_sim_gql_t *q, int line, int col, const char *code,
                      const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add_error(rw_sim_gql_t *q, int line, int col, const char *code,
                      const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    gql_error_t *e;

    if (q->n_errors >= MAX_ERRORS)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e = &q->errors[q->n_errors];
    e->msg = arena_strndup(&q->arena, msg, strlen(msg));
    if (!e->msg)
        return;
    e->code = code;
    e->line = line;
    e->col = col;
    q->n_errors++;
}

/* ---- lexer -------------------------------------------------------------- */

enum tok_kind { T_EOF, T_PUNCT, T_SPREAD, T_NAME, T_INT, T_FLOAT, T_STRING };

typedef struct tok {
    enum tok_kind kind;
    const char *s;
    size_t n;
    int line, col;
} tok_t;

typedef struct parser {
    rw_sim_gql_t *q;
    const char *p, *end;
    const char *line_start;
    int line;
    tok_t tok;
    bool failed; /* a syntax error was recorded: stop */
} parser_t;

static void syntax_error(parser_t *ps, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void syntax_error(parser_t *ps, int line, int col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (ps->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    add_error(ps->q, line, col, "GRAPHQL_PARSE_FAILED", "Syntax Error: %s",
              msg);
    ps->failed = true;
}

/* How graphql-js names a token in "Expected X, found Y." */
static void tok_desc(const tok_t *t, char *buf, size_t len)
{
    switch (t->kind) {
    case T_EOF:
        snprintf(buf, len, "<EOF>");
        break;
    case T_PUNCT:
        snprintf(buf, len, "\"%.*s\"", (int)t->n, t->s);
        break;
    case T_SPREAD:
        snprintf(buf, len, "\"...\"");
        break;
    case T_NAME:
        snprintf(buf, len, "Name \"%.*s\"", (int)(t->n > 60 ? 60 : t->n), t->s);
        break;
    case T_INT:
    case T_FLOAT:
        snprintf(buf, len, "%s \"%.*s\"", t->kind == T_INT ? "Int" : "Float",
                 (int)(t->n > 40 ? 40 : t->n), t->s);
        break;
    case T_STRING:
        snprintf(buf, len, "String");
        break;
    }
}

static void lex(parser_t *ps)
{
    const char *p = ps->p;
    tok_t *t = &ps->tok;

    for (;;) {
        if (p >= ps->end)
            break;
        if (*p == '\n') {
            ps->line++;
            ps->line_start = p + 1;
            p++;
        } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == ',') {
            p++;
        } else if (*p == '#') {
            while (p < ps->end && *p != '\n')
                p++;
        } else if (ps->end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
            p += 3;
        } else {
            break;
        }
    }
    t->s = p;
    t->line = ps->line;
    t->col = (int)(p - ps->line_start) + 1;
    if (p >= ps->end) {
        t->kind = T_EOF;
        t->n = 0;
        ps->p = p;
        return;
    }
    if (strchr("!$&():=@[]{}|", *p)) {
        t->kind = T_PUNCT;
        t->n = 1;
        ps->p = p + 1;
        return;
    }
    if (*p == '.') {
        if (ps->end - p >= 3 && p[1] == '.' && p[2] == '.') {
            t->kind = T_SPREAD;
            t->n = 3;
            ps->p = p + 3;
            return;
        }
        goto bad;
    }
    if (*p == '_' || isalpha((unsigned char)*p)) {
        const char *s = p;
        while (p < ps->end && (*p == '_' || isalnum((unsigned char)*p)))
            p++;
        t->kind = T_NAME;
        t->n = (size_t)(p - s);
        ps->p = p;
        return;
    }
    if (*p == '-' || isdigit((unsigned char)*p)) {
        const char *s = p;
        t->kind = T_INT;
        if (*p == '-')
            p++;
        if (p >= ps->end || !isdigit((unsigned char)*p))
            goto bad;
        while (p < ps->end && isdigit((unsigned char)*p))
            p++;
        if (p < ps->end && *p == '.') {
            t->kind = T_FLOAT;
            p++;
            while (p < ps->end && isdigit((unsigned char)*p))
                p++;
        }
        if (p < ps->end && (*p == 'e' || *p == 'E')) {
            t->kind = T_FLOAT;
            p++;
            if (p < ps->end && (*p == '+' || *p == '-'))
                p++;
            while (p < ps->end && isdigit((unsigned char)*p))
                p++;
        }
        t->n = (size_t)(p - s);
        ps->p = p;
        return;
    }
    if (*p == '"') {
        const char *s = p;
        bool block = ps->end - p >= 3 && p[1] == '"' && p[2] == '"';
        p += block ? 3 : 1;
        for (;;) {
            if (p >= ps->end || (!block && *p == '\n')) {
                syntax_error(ps, t->line, t->col, "Unterminated string.");
                t->kind = T_EOF;
                ps->p = ps->end;
                return;
            }
            if (*p == '\\') {
                p += 2;
                continue;
            }
            if (block && ps->end - p >= 3 && memcmp(p, "\"\"\"", 3) == 0) {
                p += 3;
                break;
            }
            if (!block && *p == '"') {
                p++;
                break;
            }
            if (*p == '\n') {
                ps->line++;
                ps->line_start = p + 1;
            }
            p++;
        }
        t->kind = T_STRING;
        t->n = (size_t)(p - s);
        ps->p = p;
        return;
    }
bad:
    syntax_error(ps, t->line, t->col, "Unexpected character: \"%c\".",
                 isprint((unsigned char)*p) ? *p : '?');
    t->kind = T_EOF;
    t->n = 0;
    ps->p = ps->end;
}

static bool is_punct(const parser_t *ps, char c)
{
    return ps->tok.kind == T_PUNCT && ps->tok.s[0] == c;
}

static bool is_name(const parser_t *ps, const char *name)
{
    return ps->tok.kind == T_NAME && strlen(name) == ps->tok.n &&
           memcmp(ps->tok.s, name, ps->tok.n) == 0;
}

static void unexpected(parser_t *ps, const char *expected)
{
    char found[96];

    tok_desc(&ps->tok, found, sizeof(found));
    if (expected)
        syntax_error(ps, ps->tok.line, ps->tok.col, "Expected %s, found %s.",
                     expected, found);
    else
        syntax_error(ps, ps->tok.line, ps->tok.col, "Unexpected %s.", found);
}

static bool expect_punct(parser_t *ps, char c)
{
    char want[8];

    if (is_punct(ps, c)) {
        lex(ps);
        return true;
    }
    snprintf(want, sizeof(want), "\"%c\"", c);
    unexpected(ps, want);
    return false;
}

static const char *expect_name(parser_t *ps)
{
    const char *s;

    if (ps->tok.kind != T_NAME) {
        unexpected(ps, "Name");
        return NULL;
    }
    s = arena_strndup(&ps->q->arena, ps->tok.s, ps->tok.n);
    lex(ps);
    return s;
}

/* ---- parser ------------------------------------------------------------- */

static bool refuse_unsupported(parser_t *ps)
{
    if (ps->tok.kind == T_SPREAD || is_punct(ps, '@')) {
        add_error(ps->q, ps->tok.line, ps->tok.col, "GRAPHQL_VALIDATION_FAILED",
                  "lagoon-sim supports neither fragments nor directives.");
        ps->failed = true;
        return true;
    }
    return false;
}

/* A value; only a bare variable is remembered (in *var). */
static void parse_value(parser_t *ps, int depth, const char **var)
{
    if (var)
        *var = NULL;
    if (depth > MAX_DEPTH) {
        syntax_error(ps, ps->tok.line, ps->tok.col, "Value nested too deep.");
        return;
    }
    if (is_punct(ps, '$')) {
        lex(ps);
        const char *name = expect_name(ps);
        if (var)
            *var = name;
        return;
    }
    if (is_punct(ps, '[')) {
        lex(ps);
        while (!ps->failed && !is_punct(ps, ']')) {
            if (ps->tok.kind == T_EOF) {
                unexpected(ps, "\"]\"");
                return;
            }
            parse_value(ps, depth + 1, NULL);
        }
        lex(ps);
        return;
    }
    if (is_punct(ps, '{')) {
        lex(ps);
        while (!ps->failed && !is_punct(ps, '}')) {
            if (!expect_name(ps) || !expect_punct(ps, ':'))
                return;
            parse_value(ps, depth + 1, NULL);
        }
        lex(ps);
        return;
    }
    if (ps->tok.kind == T_NAME || ps->tok.kind == T_INT ||
        ps->tok.kind == T_FLOAT || ps->tok.kind == T_STRING) {
        lex(ps);
        return;
    }
    unexpected(ps, NULL);
}

/* A type reference, appended to out as text. */
static void parse_type(parser_t *ps, rw_sim_buf_t *out, int depth)
{
    if (depth > MAX_DEPTH) {
        syntax_error(ps, ps->tok.line, ps->tok.col, "Type nested too deep.");
        return;
    }
    if (is_punct(ps, '[')) {
        lex(ps);
        rw_sim_buf_puts(out, "[");
        parse_type(ps, out, depth + 1);
        if (ps->failed || !expect_punct(ps, ']'))
            return;
        rw_sim_buf_puts(out, "]");
    } else if (ps->tok.kind == T_NAME) {
        rw_sim_buf_add(out, ps->tok.s, ps->tok.n);
        lex(ps);
    } else {
        unexpected(ps, "Name");
        return;
    }
    if (is_punct(ps, '!')) {
        rw_sim_buf_puts(out, "!");
        lex(ps);
    }
}

static gql_field_t *parse_selection(parser_t *ps, int depth);

static gql_field_t *parse_field(parser_t *ps, int depth)
{
    gql_field_t *f;
    gql_arg_t **argp;

    if (refuse_unsupported(ps))
        return NULL;
    f = arena_alloc(&ps->q->arena, sizeof(*f));
    if (!f) {
        ps->failed = true;
        return NULL;
    }
    memset(f, 0, sizeof(*f));
    f->line = ps->tok.line;
    f->col = ps->tok.col;
    f->name = expect_name(ps);
    if (!f->name)
        return NULL;
    f->alias = f->name;
    if (is_punct(ps, ':')) {
        lex(ps);
        f->name = expect_name(ps);
        if (!f->name)
            return NULL;
    }
    argp = &f->args;
    if (is_punct(ps, '(')) {
        lex(ps);
        while (!ps->failed && !is_punct(ps, ')')) {
            gql_arg_t *a = arena_alloc(&ps->q->arena, sizeof(*a));
            if (!a) {
                ps->failed = true;
                return NULL;
            }
            memset(a, 0, sizeof(*a));
            a->line = ps->tok.line;
            a->col = ps->tok.col;
            a->name = expect_name(ps);
            if (!a->name || !expect_punct(ps, ':'))
                return NULL;
            parse_value(ps, 1, &a->var);
            *argp = a;
            argp = &a->next;
        }
        if (ps->failed)
            return NULL;
        lex(ps);
    }
    if (refuse_unsupported(ps))
        return NULL;
    if (is_punct(ps, '{')) {
        f->has_sel = true;
        f->sel = parse_selection(ps, depth + 1);
    }
    return ps->failed ? NULL : f;
}

/* "{ field ... }"; the current token is "{". */
static gql_field_t *parse_selection(parser_t *ps, int depth)
{
    gql_field_t *first = NULL, **tail = &first;

    if (depth > MAX_DEPTH) {
        syntax_error(ps, ps->tok.line, ps->tok.col,
                     "Selection nested too deep.");
        return NULL;
    }
    if (!expect_punct(ps, '{'))
        return NULL;
    if (is_punct(ps, '}')) {
        unexpected(ps, "Name");
        return NULL;
    }
    while (!ps->failed && !is_punct(ps, '}')) {
        gql_field_t *f = parse_field(ps, depth);
        if (!f)
            return NULL;
        *tail = f;
        tail = &f->next;
    }
    if (!ps->failed)
        lex(ps);
    return first;
}

static gql_op_t *parse_operation(parser_t *ps)
{
    gql_op_t *op = arena_alloc(&ps->q->arena, sizeof(*op));
    gql_vardef_t **vtail;

    if (!op) {
        ps->failed = true;
        return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->line = ps->tok.line;
    op->col = ps->tok.col;
    vtail = &op->vars;
    if (is_punct(ps, '{')) {
        op->kind = OP_QUERY;
        op->sel = parse_selection(ps, 1);
        return ps->failed ? NULL : op;
    }
    if (is_name(ps, "query"))
        op->kind = OP_QUERY;
    else if (is_name(ps, "mutation"))
        op->kind = OP_MUTATION;
    else if (is_name(ps, "subscription"))
        op->kind = OP_SUBSCRIPTION;
    else if (is_name(ps, "fragment")) {
        add_error(ps->q, ps->tok.line, ps->tok.col, "GRAPHQL_VALIDATION_FAILED",
                  "lagoon-sim supports neither fragments nor directives.");
        ps->failed = true;
        return NULL;
    } else {
        unexpected(ps, NULL);
        return NULL;
    }
    lex(ps);
    if (ps->tok.kind == T_NAME)
        op->name = expect_name(ps);
    if (is_punct(ps, '(')) {
        lex(ps);
        while (!ps->failed && !is_punct(ps, ')')) {
            gql_vardef_t *v = arena_alloc(&ps->q->arena, sizeof(*v));
            rw_sim_buf_t type;

            if (!v) {
                ps->failed = true;
                return NULL;
            }
            memset(v, 0, sizeof(*v));
            v->line = ps->tok.line;
            v->col = ps->tok.col;
            if (!expect_punct(ps, '$'))
                return NULL;
            v->name = expect_name(ps);
            if (!v->name || !expect_punct(ps, ':'))
                return NULL;
            rw_sim_buf_init(&type);
            parse_type(ps, &type, 0);
            if (!ps->failed && !rw_sim_buf_failed(&type))
                v->type = arena_strndup(&ps->q->arena, type.data, type.len);
            rw_sim_buf_free(&type);
            if (ps->failed || !v->type) {
                ps->failed = true;
                return NULL;
            }
            if (is_punct(ps, '=')) {
                lex(ps);
                v->has_default = true;
                parse_value(ps, 1, NULL);
            }
            if (refuse_unsupported(ps))
                return NULL;
            *vtail = v;
            vtail = &v->next;
        }
        if (ps->failed)
            return NULL;
        lex(ps);
    }
    if (refuse_unsupported(ps))
        return NULL;
    op->sel = parse_selection(ps, 1);
    return ps->failed ? NULL : op;
}

static void parse_document(rw_sim_gql_t *q, const char *src, size_t len)
{
    parser_t ps;
    gql_op_t **tail = &q->ops;

    memset(&ps, 0, sizeof(ps));
    ps.q = q;
    ps.p = src;
    ps.end = src + len;
    ps.line_start = src;
    ps.line = 1;
    lex(&ps);
    if (ps.tok.kind == T_EOF && !ps.failed) {
        unexpected(&ps, "Name");
        return;
    }
    while (!ps.failed && ps.tok.kind != T_EOF) {
        gql_op_t *op = parse_operation(&ps);
        if (!op)
            break;
        *tail = op;
        tail = &op->next;
    }
    if (ps.failed)
        q->ops = NULL;
}

/* ---- schema ------------------------------------------------------------- */

typedef struct arg_def {
    const char *name;
    const char *type;
} arg_def_t;

typedef struct field_def {
    const char *name;
    const char *type;      /* type reference as text */
    const arg_def_t *args; /* NULL-name terminated; NULL = none */
} field_def_t;

typedef struct type_def {
    const char *name;
    bool input;                /* input object */
    const field_def_t *fields; /* NULL for scalars; NULL-name terminated */
} type_def_t;

static const field_def_t bulk_input_fields[] = {
    {"name", "String", NULL},
    {"buildVariables", "[EnvKeyValueInput]", NULL},
    {"environments", "[DeployEnvironmentLatestInput!]!", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t deploy_env_input_fields[] = {
    {"environment", "EnvironmentInput!", NULL},
    {"bulkId", "String", NULL},
    {"priority", "Int", NULL},
    {"buildVariables", "[EnvKeyValueInput]", NULL},
    {"returnData", "Boolean", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t env_input_fields[] = {
    {"id", "Int", NULL},
    {"name", "String", NULL},
    {"project", "ProjectInput", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t project_input_fields[] = {
    {"id", "Int", NULL},
    {"name", "String", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t by_name_input_fields[] = {
    {"project", "String", NULL},
    {"environment", "String", NULL},
    {"name", "String", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t kv_input_fields[] = {
    {"name", "String", NULL},
    {"value", "String", NULL},
    {NULL, NULL, NULL},
};
/* Indexes into the output tables below, resolved once per request. */
enum {
    DF_ID,
    DF_NAME,
    DF_STATUS,
    DF_CREATED,
    DF_STARTED,
    DF_COMPLETED,
    DF_BULK_ID,
    DF_BULK_NAME,
    DF_ENVIRONMENT,
    DF_PRIORITY,
    DF_BUILD_LOG
};
enum { EF_NAME, EF_PROJECT, EF_DEPLOYMENTS, EF_ROUTE };
enum { PF_NAME, PF_ENVIRONMENTS };

/* Lagoon's arguments of the nested lists; type and factFilter of
 * Project.environments are not served. */
static const arg_def_t deployments_args[] = {
    {"name", "String"},
    {"limit", "Int"},
    {NULL, NULL},
};
static const arg_def_t environments_args[] = {
    {"includeDeleted", "Boolean"},
    {NULL, NULL},
};

static const field_def_t deployment_fields[] = {
    {"id", "Int", NULL},
    {"name", "String", NULL},
    {"status", "String", NULL},
    {"created", "String", NULL},
    {"started", "String", NULL},
    {"completed", "String", NULL},
    {"bulkId", "String", NULL},
    {"bulkName", "String", NULL},
    {"environment", "Environment", NULL},
    {"priority", "Int", NULL},
    {"buildLog", "String", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t environment_fields[] = {
    {"name", "String", NULL},
    {"project", "Project", NULL},
    {"deployments", "[Deployment]", deployments_args},
    {"route", "String", NULL},
    {NULL, NULL, NULL},
};
static const field_def_t project_fields[] = {
    {"name", "String", NULL},
    {"environments", "[Environment]", environments_args},
    {NULL, NULL, NULL},
};

static const type_def_t types[] = {
    {"String", false, NULL},
    {"Int", false, NULL},
    {"Float", false, NULL},
    {"Boolean", false, NULL},
    {"ID", false, NULL},
    {"BulkDeploymentLatestInput", true, bulk_input_fields},
    {"DeployEnvironmentLatestInput", true, deploy_env_input_fields},
    {"EnvironmentInput", true, env_input_fields},
    {"ProjectInput", true, project_input_fields},
    {"EnvKeyValueInput", true, kv_input_fields},
    {"DeploymentByNameInput", true, by_name_input_fields},
    {"Deployment", false, deployment_fields},
    {"Environment", false, environment_fields},
    {"Project", false, project_fields},
};

#define BULK_FIELD    "bulkDeployEnvironmentLatest"
#define BULK_ARG      "input"
#define BULK_ARG_TYPE "BulkDeploymentLatestInput!"
#define ROWS_FIELD    "deploymentsByBulkId"
#define ROWS_ARG      "bulkId"
#define ROWS_ARG_TYPE "String!"
#define PROJECT_FIELD "projectByName"
#define PROJECT_ARG   "name"
#define PROJECT_TYPE  "String!"
#define BY_NAME_FIELD "deploymentByName"
#define BY_NAME_ARG   "input"
#define BY_NAME_TYPE  "DeploymentByNameInput"

/* Where a selection sits: what validate_sel may allow below it. */
#define SEL_LISTS 1 /* Project.environments, Environment.deployments */
#define SEL_LOG   2 /* Deployment.buildLog */

static const type_def_t *find_type(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strlen(types[i].name) == n && memcmp(types[i].name, name, n) == 0)
            return &types[i];
    return NULL;
}

/* The named type inside a reference: "[Foo!]!" -> "Foo". */
static const char *base_name(const char *type, size_t *n)
{
    while (*type == '[')
        type++;
    *n = strcspn(type, "]!");
    return type;
}

static const field_def_t *find_field(const field_def_t *fields,
                                     const char *name)
{
    for (; fields && fields->name; fields++)
        if (strcmp(fields->name, name) == 0)
            return fields;
    return NULL;
}

/* ---- validation ---------------------------------------------------------- */

static gql_vardef_t *find_var(gql_op_t *op, const char *name)
{
    for (gql_vardef_t *v = op->vars; v; v = v->next)
        if (strcmp(v->name, name) == 0)
            return v;
    return NULL;
}

/* May a variable of v's type fill a slot of type want? */
static bool var_fits(const gql_vardef_t *v, const char *want)
{
    size_t vl = strlen(v->type), wl = strlen(want);

    if (strcmp(v->type, want) == 0)
        return true;
    /* A non-null variable fits a nullable slot. */
    if (vl == wl + 1 && v->type[vl - 1] == '!' &&
        strncmp(v->type, want, wl) == 0)
        return true;
    /* A nullable variable with a default may fill a non-null slot. */
    return v->has_default && vl + 1 == wl && want[wl - 1] == '!' &&
           strncmp(v->type, want, vl) == 0;
}

static const arg_def_t *find_arg(const arg_def_t *args, const char *name)
{
    for (; args && args->name; args++)
        if (strcmp(args->name, name) == 0)
            return args;
    return NULL;
}

/* Arguments of a nested field: declared, bound to a variable that fits. */
static void validate_args(rw_sim_gql_t *q, const type_def_t *type,
                          const field_def_t *fd, const gql_field_t *f)
{
    for (const gql_arg_t *a = f->args; a; a = a->next) {
        const arg_def_t *ad = find_arg(fd->args, a->name);
        gql_vardef_t *v;
        size_t n;
        const char *bn;

        if (!ad) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Unknown argument \"%s\" on field \"%s.%s\".", a->name,
                      type->name, f->name);
            continue;
        }
        if (!a->var) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Argument \"%s\" of field \"%s\" must be passed as a "
                      "variable: lagoon-sim reads values from variables only.",
                      a->name, f->name);
            continue;
        }
        v = find_var(q->op, a->var);
        if (!v) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Variable \"$%s\" is not defined.", a->var);
            continue;
        }
        v->used = true;
        bn = base_name(v->type, &n);
        if (!find_type(bn, n))
            continue; /* reported once, at its definition */
        if (!var_fits(v, ad->type))
            add_error(q, v->line, v->col, "GRAPHQL_VALIDATION_FAILED",
                      "Variable \"$%s\" of type \"%s\" used in position "
                      "expecting type \"%s\".",
                      v->name, v->type, ad->type);
    }
}

/*
 * where (SEL_* bits): whether Project.environments and
 * Environment.deployments may be selected here, and Deployment.buildLog.
 * The sim serves the lists on the path projectByName -> environments ->
 * deployments only (what the find-bulk query reads), not below
 * deploymentsByBulkId or deeper down, which would need nested snapshots
 * for no user; and buildLog only on deploymentByName (what the poller
 * reads), so that a list of rows never renders megabytes of logs.
 */
static void validate_sel(rw_sim_gql_t *q, const type_def_t *type,
                         const gql_field_t *sel, int where)
{
    for (const gql_field_t *f = sel; f; f = f->next) {
        const field_def_t *fd;
        const type_def_t *ft;
        size_t n;
        const char *bn;
        bool is_list;

        ((gql_field_t *)f)->kind = -1;
        if (strcmp(f->name, "__typename") == 0) {
            if (f->has_sel)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"__typename\" must not have a selection "
                          "since type \"String!\" has no subfields.");
            continue;
        }
        fd = find_field(type->fields, f->name);
        if (!fd) {
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "Cannot query field \"%s\" on type \"%s\".", f->name,
                      type->name);
            continue;
        }
        ((gql_field_t *)f)->kind = (int)(fd - type->fields);
        is_list =
            (type->fields == project_fields && f->kind == PF_ENVIRONMENTS) ||
            (type->fields == environment_fields && f->kind == EF_DEPLOYMENTS);
        if (is_list && !(where & SEL_LISTS))
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "lagoon-sim serves \"%s.%s\" only under "
                      "projectByName { environments { deployments } }.",
                      type->name, f->name);
        if (type->fields == deployment_fields && f->kind == DF_BUILD_LOG &&
            !(where & SEL_LOG))
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "lagoon-sim serves \"Deployment.buildLog\" only under "
                      "deploymentByName.");
        validate_args(q, type, fd, f);
        bn = base_name(fd->type, &n);
        ft = find_type(bn, n);
        if (ft && ft->fields && !f->has_sel)
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "Field \"%s\" of type \"%s\" must have a selection of "
                      "subfields. Did you mean \"%s { ... }\"?",
                      f->name, fd->type, f->name);
        else if ((!ft || !ft->fields) && f->has_sel)
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "Field \"%s\" must not have a selection since type "
                      "\"%s\" has no subfields.",
                      f->name, fd->type);
        else if (ft && ft->fields)
            validate_sel(q, ft, f->sel,
                         (where & SEL_LISTS) && is_list ? SEL_LISTS : 0);
    }
}

/* The one argument of a root field: present, a variable, of the right type. */
static void validate_root_arg(rw_sim_gql_t *q, const char *root,
                              const gql_field_t *f, const char *arg,
                              const char *arg_type)
{
    bool seen = false;

    for (const gql_arg_t *a = f->args; a; a = a->next) {
        gql_vardef_t *v;
        size_t n;
        const char *bn;

        if (strcmp(a->name, arg) != 0) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Unknown argument \"%s\" on field \"%s.%s\".", a->name,
                      root, f->name);
            continue;
        }
        seen = true;
        if (!a->var) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Argument \"%s\" of field \"%s\" must be passed as a "
                      "variable: lagoon-sim reads values from variables only.",
                      a->name, f->name);
            continue;
        }
        v = find_var(q->op, a->var);
        if (!v) {
            add_error(q, a->line, a->col, "GRAPHQL_VALIDATION_FAILED",
                      "Variable \"$%s\" is not defined.", a->var);
            continue;
        }
        v->used = true;
        bn = base_name(v->type, &n);
        if (!find_type(bn, n))
            continue; /* reported once, at its definition */
        if (var_fits(v, arg_type))
            continue;
        add_error(q, v->line, v->col, "GRAPHQL_VALIDATION_FAILED",
                  "Variable \"$%s\" of type \"%s\" used in position "
                  "expecting type \"%s\".",
                  v->name, v->type, arg_type);
    }
    if (!seen)
        add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                  "Field \"%s\" argument \"%s\" of type \"%s\" is required, "
                  "but it was not provided.",
                  f->name, arg, arg_type);
}

static void validate_op(rw_sim_gql_t *q)
{
    gql_op_t *op = q->op;
    const char *root = op->kind == OP_MUTATION ? "Mutation" : "Query";
    static const type_def_t deployment_list = {"Deployment", false,
                                               deployment_fields};
    static const type_def_t project_type = {"Project", false, project_fields};

    if (op->kind == OP_SUBSCRIPTION) {
        add_error(q, op->line, op->col, "GRAPHQL_VALIDATION_FAILED",
                  "Schema is not configured to execute subscription "
                  "operation.");
        return;
    }
    for (gql_vardef_t *v = op->vars; v; v = v->next) {
        size_t n;
        const char *bn = base_name(v->type, &n);
        const type_def_t *t = find_type(bn, n);

        for (gql_vardef_t *w = v->next; w; w = w->next)
            if (strcmp(v->name, w->name) == 0)
                add_error(q, w->line, w->col, "GRAPHQL_VALIDATION_FAILED",
                          "There can be only one variable named \"$%s\".",
                          v->name);
        if (!t)
            add_error(q, v->line, v->col, "GRAPHQL_VALIDATION_FAILED",
                      "Unknown type \"%.*s\".", (int)n, bn);
        else if (t->fields && !t->input)
            add_error(q, v->line, v->col, "GRAPHQL_VALIDATION_FAILED",
                      "Variable \"$%s\" cannot be non-input type \"%s\".",
                      v->name, v->type);
    }
    for (gql_field_t *f = op->sel; f; f = f->next) {
        if (strcmp(f->name, "__typename") == 0) {
            if (f->has_sel || f->args)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"__typename\" takes no arguments and no "
                          "selection.");
        } else if (op->kind == OP_MUTATION &&
                   strcmp(f->name, BULK_FIELD) == 0) {
            validate_root_arg(q, root, f, BULK_ARG, BULK_ARG_TYPE);
            if (f->has_sel)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"%s\" must not have a selection since "
                          "type \"String\" has no subfields.",
                          f->name);
        } else if (op->kind == OP_QUERY && strcmp(f->name, ROWS_FIELD) == 0) {
            validate_root_arg(q, root, f, ROWS_ARG, ROWS_ARG_TYPE);
            if (!f->has_sel)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"%s\" of type \"[Deployment]\" must have a "
                          "selection of subfields. Did you mean \"%s { ... "
                          "}\"?",
                          f->name, f->name);
            else
                validate_sel(q, &deployment_list, f->sel, 0);
        } else if (op->kind == OP_QUERY &&
                   strcmp(f->name, PROJECT_FIELD) == 0) {
            validate_root_arg(q, root, f, PROJECT_ARG, PROJECT_TYPE);
            if (!f->has_sel)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"%s\" of type \"Project\" must have a "
                          "selection of subfields. Did you mean \"%s { ... "
                          "}\"?",
                          f->name, f->name);
            else
                validate_sel(q, &project_type, f->sel, SEL_LISTS);
        } else if (op->kind == OP_QUERY &&
                   strcmp(f->name, BY_NAME_FIELD) == 0) {
            validate_root_arg(q, root, f, BY_NAME_ARG, BY_NAME_TYPE);
            if (!f->has_sel)
                add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                          "Field \"%s\" of type \"Deployment\" must have a "
                          "selection of subfields. Did you mean \"%s { ... "
                          "}\"?",
                          f->name, f->name);
            else
                validate_sel(q, &deployment_list, f->sel, SEL_LOG);
        } else {
            add_error(q, f->line, f->col, "GRAPHQL_VALIDATION_FAILED",
                      "Cannot query field \"%s\" on type \"%s\".", f->name,
                      root);
        }
    }
    for (gql_vardef_t *v = op->vars; v; v = v->next)
        if (!v->used)
            add_error(q, v->line, v->col, "GRAPHQL_VALIDATION_FAILED",
                      "Variable \"$%s\" is never used.", v->name);
}

/* ---- variable coercion -------------------------------------------------- */

/* Where in the variable a value sits: a field name or a list index. */
typedef struct path_seg {
    const char *field; /* NULL for a list index */
    size_t index;
} path_seg_t;

typedef struct coerce_ctx {
    rw_sim_gql_t *q;
    const gql_vardef_t *var;
    /* Kept as segments and only printed for an error: most values are
     * fine, and formatting every path would cost more than checking. */
    path_seg_t path[MAX_DEPTH + 2];
    int depth;
} coerce_ctx_t;

static void push_field(coerce_ctx_t *c, const char *field)
{
    c->path[c->depth].field = field;
    c->depth++;
}

static void push_index(coerce_ctx_t *c, size_t index)
{
    c->path[c->depth].field = NULL;
    c->path[c->depth].index = index;
    c->depth++;
}

static void value_text(const json_t *v, char *buf, size_t len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_malloc_t jm;
    json_free_t jf;

    if (!s) {
        snprintf(buf, len, "?");
        return;
    }
    if (strlen(s) >= len && len > 4)
        snprintf(buf, len, "%.*s...", (int)(len - 4), s);
    else
        snprintf(buf, len, "%s", s);
    /* json_dumps allocates with jansson's allocator: free it the same way. */
    json_get_alloc_funcs(&jm, &jf);
    jf(s);
}

static void coerce_error(coerce_ctx_t *c, const json_t *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void coerce_error(coerce_ctx_t *c, const json_t *v, const char *fmt, ...)
{
    char reason[512], val[160], path[512];
    size_t o;
    va_list ap;
    bool root = c->depth == 0;

    o = (size_t)snprintf(path, sizeof(path), "%s", c->var->name);
    for (int i = 0; i < c->depth && o < sizeof(path); i++)
        o += c->path[i].field ? (size_t)snprintf(path + o, sizeof(path) - o,
                                                 ".%s", c->path[i].field)
                              : (size_t)snprintf(path + o, sizeof(path) - o,
                                                 "[%zu]", c->path[i].index);
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    value_text(v ? v : json_null(), val, sizeof(val));
    if (root)
        add_error(c->q, c->var->line, c->var->col, "BAD_USER_INPUT",
                  "Variable \"$%s\" got invalid value %s; %s", c->var->name,
                  val, reason);
    else
        add_error(c->q, c->var->line, c->var->col, "BAD_USER_INPUT",
                  "Variable \"$%s\" got invalid value %s at \"%s\"; %s",
                  c->var->name, val, path, reason);
}

static void coerce(coerce_ctx_t *c, const char *type, size_t tlen,
                   const json_t *v, int depth);

static void coerce_named(coerce_ctx_t *c, const char *type, size_t tlen,
                         const json_t *v, int depth)
{
    const type_def_t *t = find_type(type, tlen);
    char val[160];

    if (!t)
        return; /* reported by validation */
    if (!t->fields) {
        const char *want = NULL;

        if (strcmp(t->name, "String") == 0 && !json_is_string(v))
            want = "String cannot represent a non string value";
        else if (strcmp(t->name, "ID") == 0 && !json_is_string(v) &&
                 !json_is_integer(v))
            want = "ID cannot represent value";
        else if (strcmp(t->name, "Int") == 0 &&
                 (!json_is_integer(v) || json_integer_value(v) > INT32_MAX ||
                  json_integer_value(v) < INT32_MIN))
            want = "Int cannot represent non-integer value";
        else if (strcmp(t->name, "Float") == 0 && !json_is_number(v))
            want = "Float cannot represent non numeric value";
        else if (strcmp(t->name, "Boolean") == 0 && !json_is_boolean(v))
            want = "Boolean cannot represent a non boolean value";
        if (want) {
            value_text(v, val, sizeof(val));
            coerce_error(c, v, "%s: %s", want, val);
        }
        return;
    }
    if (!json_is_object(v)) {
        coerce_error(c, v, "Expected type \"%s\" to be an object.", t->name);
        return;
    }
    {
        const char *key;
        json_t *fv;

        json_object_foreach((json_t *)v, key, fv)
        {
            if (!find_field(t->fields, key))
                coerce_error(c, v,
                             "Field \"%s\" is not defined by type "
                             "\"%s\".",
                             key, t->name);
        }
        for (const field_def_t *fd = t->fields; fd->name; fd++) {
            size_t flen = strlen(fd->type);
            fv = json_object_get(v, fd->name);
            if (!fv && fd->type[flen - 1] == '!') {
                coerce_error(c, v,
                             "Field \"%s\" of required type \"%s\" was "
                             "not provided.",
                             fd->name, fd->type);
                continue;
            }
            if (!fv)
                continue;
            push_field(c, fd->name);
            coerce(c, fd->type, flen, fv, depth + 1);
            c->depth--;
        }
    }
}

static void coerce(coerce_ctx_t *c, const char *type, size_t tlen,
                   const json_t *v, int depth)
{
    if (depth > MAX_DEPTH) {
        coerce_error(c, v, "Value nested too deep.");
        return;
    }
    if (tlen && type[tlen - 1] == '!') {
        if (!v || json_is_null(v)) {
            coerce_error(c, v,
                         "Expected non-nullable type \"%.*s\" not to "
                         "be null.",
                         (int)tlen, type);
            return;
        }
        tlen--;
    }
    if (!v || json_is_null(v))
        return;
    if (tlen >= 2 && type[0] == '[') {
        const char *inner = type + 1;
        size_t ilen = tlen - 2;
        size_t i;
        json_t *item;

        if (!json_is_array(v)) {
            /* graphql-js coerces a lone value into a list of one. */
            coerce(c, inner, ilen, v, depth + 1);
            return;
        }
        json_array_foreach(v, i, item)
        {
            push_index(c, i);
            coerce(c, inner, ilen, item, depth + 1);
            c->depth--;
        }
        return;
    }
    coerce_named(c, type, tlen, v, depth);
}

static void coerce_vars(rw_sim_gql_t *q)
{
    for (gql_vardef_t *v = q->op->vars; v; v = v->next) {
        json_t *val = q->vars ? json_object_get(q->vars, v->name) : NULL;
        size_t tlen = strlen(v->type);
        coerce_ctx_t c;

        if (!val && v->has_default) {
            /* Defaults are parsed but not evaluated: values come from the
             * variables object only. */
            add_error(q, v->line, v->col, "BAD_USER_INPUT",
                      "lagoon-sim does not evaluate default values: pass "
                      "\"$%s\" in variables.",
                      v->name);
            continue;
        }
        if (!val || json_is_null(val)) {
            if (v->type[tlen - 1] == '!') {
                if (!val)
                    add_error(q, v->line, v->col, "BAD_USER_INPUT",
                              "Variable \"$%s\" of required type \"%s\" was "
                              "not provided.",
                              v->name, v->type);
                else
                    add_error(q, v->line, v->col, "BAD_USER_INPUT",
                              "Variable \"$%s\" of non-null type \"%s\" must "
                              "not be null.",
                              v->name, v->type);
            }
            continue;
        }
        c.q = q;
        c.var = v;
        c.depth = 0;
        coerce(&c, v->type, tlen, val, 0);
    }
}

/* ---- request ------------------------------------------------------------ */

static void select_op(rw_sim_gql_t *q, const char *op_name)
{
    int n = 0;

    for (gql_op_t *op = q->ops; op; op = op->next) {
        n++;
        if (op_name && op->name && strcmp(op->name, op_name) == 0)
            q->op = op;
    }
    if (op_name && !q->op) {
        add_error(q, 0, 0, "GRAPHQL_VALIDATION_FAILED",
                  "Unknown operation named \"%.100s\".", op_name);
    } else if (!op_name && n > 1) {
        add_error(q, 0, 0, "GRAPHQL_VALIDATION_FAILED",
                  "Must provide operation name if query contains multiple "
                  "operations.");
    } else if (!op_name) {
        q->op = q->ops;
    }
}

rw_sim_gql_t *rw_sim_gql_parse(const char *body, size_t len)
{
    rw_sim_gql_t *q = calloc(1, sizeof(*q));
    json_t *query, *opname;
    json_error_t jerr;

    if (!q)
        return NULL;
    q->http_status = 200;
    json_arena = &q->arena;
    q->body = json_loadb(body, len, 0, &jerr);
    json_arena = NULL;
    if (!q->body || !json_is_object(q->body)) {
        q->http_status = 400;
        add_error(q, 0, 0, "BAD_REQUEST", "POST body sent invalid JSON.");
        goto out;
    }
    query = json_object_get(q->body, "query");
    if (!json_is_string(query)) {
        q->http_status = 400;
        add_error(q, 0, 0, "BAD_REQUEST", "Must provide query string.");
        goto out;
    }
    q->vars = json_object_get(q->body, "variables");
    if (q->vars && !json_is_object(q->vars) && !json_is_null(q->vars)) {
        q->http_status = 400;
        add_error(q, 0, 0, "BAD_REQUEST",
                  "Variables must be provided as an Object where each "
                  "property is a variable value.");
        goto out;
    }
    if (q->vars && json_is_null(q->vars))
        q->vars = NULL;
    opname = json_object_get(q->body, "operationName");
    if (opname && !json_is_string(opname) && !json_is_null(opname)) {
        q->http_status = 400;
        add_error(q, 0, 0, "BAD_REQUEST",
                  "Expected operationName to be a string.");
        goto out;
    }
    parse_document(q, json_string_value(query), json_string_length(query));
    if (q->n_errors)
        goto out;
    select_op(q, json_is_string(opname) ? json_string_value(opname) : NULL);
    if (!q->op)
        goto out;
    for (gql_field_t *f = q->op->sel; f; f = f->next)
        if (q->op->kind == OP_MUTATION && strcmp(f->name, BULK_FIELD) == 0)
            q->deploy_fields++;
    validate_op(q);
    if (q->n_errors)
        goto out;
    coerce_vars(q);
out:
    if (q->arena.failed) {
        rw_sim_gql_free(q);
        return NULL;
    }
    return q;
}

void rw_sim_gql_free(rw_sim_gql_t *q)
{
    if (!q)
        return;
    json_decref(q->body);
    arena_free(&q->arena);
    free(q);
}

int rw_sim_gql_deploy_fields(const rw_sim_gql_t *q)
{
    return q->deploy_fields;
}

/* ---- execution ----------------------------------------------------------- */

static json_t *root_arg(rw_sim_gql_t *q, const gql_field_t *f)
{
    /* Validation guarantees one argument bound to a declared variable. */
    return q->vars ? json_object_get(q->vars, f->args->var) : NULL;
}

static const char *jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Resolver of bulkDeployEnvironmentLatest; writes the bulk id or an error. */
static bool exec_bulk(rw_sim_gql_t *q, rw_sim_t *sim, const gql_field_t *f,
                      rw_sim_buf_t *data)
{
    json_t *input = root_arg(q, f);
    json_t *envs = json_object_get(input, "environments");
    json_t *one[1];
    json_t **list;
    size_t n, i;
    rw_sim_target_t *targets;
    json_t *jvars = json_object_get(input, "buildVariables");
    rw_sim_var_t *vars = NULL;
    size_t n_vars = json_is_array(jvars) ? json_array_size(jvars) : 0;
    char bulk_id[RW_SIM_UUID_LEN + 1], errstr[256];

    if (json_is_array(envs)) {
        n = json_array_size(envs);
        list = NULL;
    } else {
        one[0] = envs;
        list = one;
        n = 1;
    }
    if (n == 0) {
        add_error(q, f->line, f->col, "BAD_USER_INPUT",
                  "Variable \"$%s\" got invalid value []; at least one "
                  "environment is required.",
                  f->args->var);
        return false;
    }
    targets = arena_alloc(&q->arena, n * sizeof(*targets));
    if (!targets) {
        add_error(q, f->line, f->col, "INTERNAL_SERVER_ERROR",
                  "Out of memory.");
        return false;
    }
    for (i = 0; i < n; i++) {
        json_t *de = list ? list[i] : json_array_get(envs, i);
        json_t *env = json_object_get(de, "environment");
        json_t *project = json_object_get(env, "project");

        targets[i].environment = jstr(env, "name");
        targets[i].project = jstr(project, "name");
        if (!targets[i].environment || !targets[i].project ||
            !targets[i].environment[0] || !targets[i].project[0]) {
            /* Lagoon resolves by id or by name; the simulator keys its
             * environments by project and environment name only. */
            add_error(q, f->line, f->col, "BAD_USER_INPUT",
                      "Variable \"$%s\" got invalid value at "
                      "\"%s.environments[%zu].environment\"; an environment "
                      "name and a project name are required.",
                      f->args->var, f->args->var, i);
            return false;
        }
    }
    /* Kept for the build logs, which print them as real builds do. */
    if (n_vars) {
        vars = arena_alloc(&q->arena, n_vars * sizeof(*vars));
        if (!vars) {
            add_error(q, f->line, f->col, "INTERNAL_SERVER_ERROR",
                      "Out of memory.");
            return false;
        }
        for (i = 0; i < n_vars; i++) {
            vars[i].name = jstr(json_array_get(jvars, i), "name");
            vars[i].value = jstr(json_array_get(jvars, i), "value");
        }
    }
    if (rw_sim_bulk_deploy(sim, jstr(input, "name"), targets, n, vars, n_vars,
                           bulk_id, errstr, sizeof(errstr)) != RW_OK) {
        add_error(q, f->line, f->col, "INTERNAL_SERVER_ERROR", "%s", errstr);
        return false;
    }
    rw_sim_buf_json_cstr(data, bulk_id);
    return true;
}

typedef struct row_ctx {
    rw_sim_buf_t *out;
    const gql_field_t *sel;
    size_t n;
    const char *log; /* buildLog of the row; NULL = null */
    size_t log_len;
} row_ctx_t;

static void key(rw_sim_buf_t *b, const gql_field_t *f, bool *first)
{
    if (!*first)
        rw_sim_buf_puts(b, ",");
    *first = false;
    rw_sim_buf_json_cstr(b, f->alias);
    rw_sim_buf_puts(b, ":");
}

/* A Project object that shows only its name (below a deployment or an
 * environment; validation keeps environments out of there). */
static void render_project_named(rw_sim_buf_t *b, const gql_field_t *sel,
                                 const char *name, size_t len)
{
    bool first = true;

    rw_sim_buf_puts(b, "{");
    for (const gql_field_t *f = sel; f; f = f->next) {
        key(b, f, &first);
        if (f->kind == PF_NAME)
            rw_sim_buf_json_str(b, name, len);
        else if (f->kind < 0)
            rw_sim_buf_puts(b, "\"Project\"");
        else
            rw_sim_buf_puts(b, "null");
    }
    rw_sim_buf_puts(b, "}");
}

/* Percent-encodes s (n bytes): unreserved characters stay as they are. */
static void url_part(rw_sim_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            rw_sim_buf_add(b, (const char *)&s[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rw_sim_buf_add(b, e, 3);
        }
    }
}

/* Environment.route: <base>/sim/env/<project>/<environment>, where the
 * sim answers health checks (sim_http). */
static void render_route(rw_sim_buf_t *b, const char *base, const char *project,
                         size_t project_len, const char *env, size_t env_len)
{
    rw_sim_buf_t u;

    rw_sim_buf_init(&u);
    rw_sim_buf_puts(&u, base ? base : "");
    rw_sim_buf_puts(&u, "/sim/env/");
    url_part(&u, project, project_len);
    rw_sim_buf_puts(&u, "/");
    url_part(&u, env, env_len);
    if (rw_sim_buf_failed(&u))
        rw_sim_buf_puts(b, "null");
    else
        rw_sim_buf_json_str(b, u.data, u.len);
    rw_sim_buf_free(&u);
}

static void render_environment(rw_sim_buf_t *b, const gql_field_t *sel,
                               const rw_sim_row_t *r)
{
    bool first = true;

    rw_sim_buf_puts(b, "{");
    for (const gql_field_t *f = sel; f; f = f->next) {
        key(b, f, &first);
        if (f->kind == EF_NAME)
            rw_sim_buf_json_str(b, r->environment, r->environment_len);
        else if (f->kind == EF_PROJECT)
            render_project_named(b, f->sel, r->project, r->project_len);
        else if (f->kind == EF_ROUTE)
            render_route(b, r->route_base, r->project, r->project_len,
                         r->environment, r->environment_len);
        else if (f->kind < 0)
            rw_sim_buf_puts(b, "\"Environment\"");
        else
            rw_sim_buf_puts(b, "null");
    }
    rw_sim_buf_puts(b, "}");
}

static void render_row(const rw_sim_row_t *r, void *ud)
{
    row_ctx_t *rc = ud;
    rw_sim_buf_t *b = rc->out;
    bool first = true;

    rw_sim_buf_puts(b, rc->n++ ? ",{" : "{");
    for (const gql_field_t *f = rc->sel; f; f = f->next) {
        key(b, f, &first);
        switch (f->kind) {
        case DF_ID:
            rw_sim_buf_int(b, r->id);
            break;
        case DF_NAME:
            rw_sim_buf_json_cstr(b, r->name);
            break;
        case DF_STATUS:
            rw_sim_buf_json_cstr(b, r->status);
            break;
        case DF_CREATED:
            rw_sim_buf_json_date(b, r->created_ms);
            break;
        case DF_STARTED:
            rw_sim_buf_json_date(b, r->started_ms);
            break;
        case DF_COMPLETED:
            rw_sim_buf_json_date(b, r->completed_ms);
            break;
        case DF_BULK_ID:
            rw_sim_buf_json_cstr(b, r->bulk_id);
            break;
        case DF_BULK_NAME:
            rw_sim_buf_json_cstr(b, r->bulk_name);
            break;
        case DF_ENVIRONMENT:
            render_environment(b, f->sel, r);
            break;
        case DF_PRIORITY:
            /* Bulks from rollwave never set a priority. */
            rw_sim_buf_puts(b, "null");
            break;
        case DF_BUILD_LOG:
            if (rc->log)
                rw_sim_buf_json_str(b, rc->log, rc->log_len);
            else
                rw_sim_buf_puts(b, "null");
            break;
        default:
            rw_sim_buf_puts(b, "\"Deployment\"");
        }
    }
    rw_sim_buf_puts(b, "}");
}

static void exec_rows(rw_sim_gql_t *q, rw_sim_t *sim, const gql_field_t *f,
                      rw_sim_buf_t *data)
{
    row_ctx_t rc = {data, f->sel, 0, NULL, 0};

    const char *bulk_id = json_string_value(root_arg(q, f));

    rw_sim_buf_puts(data, "[");
    /* A nullable variable may be null: no bulk has that id. */
    if (bulk_id)
        rw_sim_bulk_rows(sim, bulk_id, render_row, &rc);
    rw_sim_buf_puts(data, "]");
}

/* The value bound to argument name of f, or NULL (absent or null). */
static const json_t *arg_value(const rw_sim_gql_t *q, const gql_field_t *f,
                               const char *name)
{
    for (const gql_arg_t *a = f->args; a; a = a->next) {
        json_t *v;

        if (strcmp(a->name, name) != 0 || !a->var || !q->vars)
            continue;
        v = json_object_get(q->vars, a->var);
        return json_is_null(v) ? NULL : v;
    }
    return NULL;
}

/* Environment.deployments(name, limit) of a snapshot environment: newest
 * first; limit 0 or less means all, like Lagoon's "if (limit)". */
static void render_snap_deployments(const rw_sim_gql_t *q, rw_sim_buf_t *b,
                                    const gql_field_t *f,
                                    const rw_sim_env_snap_t *env)
{
    const json_t *jlimit = arg_value(q, f, "limit");
    const char *only = json_string_value(arg_value(q, f, "name"));
    long long limit = json_is_integer(jlimit) ? json_integer_value(jlimit) : 0;
    row_ctx_t rc = {b, f->sel, 0, NULL, 0};

    rw_sim_buf_puts(b, "[");
    for (size_t i = 0; i < env->n_rows; i++) {
        if (limit > 0 && (long long)rc.n >= limit)
            break;
        if (only && strcmp(env->rows[i].name, only) != 0)
            continue;
        render_row(&env->rows[i], &rc);
    }
    rw_sim_buf_puts(b, "]");
}

static void render_snap_env(const rw_sim_gql_t *q, rw_sim_buf_t *b,
                            const gql_field_t *sel,
                            const rw_sim_project_snap_t *snap,
                            const rw_sim_env_snap_t *env)
{
    bool first = true;

    rw_sim_buf_puts(b, "{");
    for (const gql_field_t *f = sel; f; f = f->next) {
        key(b, f, &first);
        if (f->kind == EF_NAME)
            rw_sim_buf_json_str(b, env->name, env->name_len);
        else if (f->kind == EF_PROJECT)
            render_project_named(b, f->sel, snap->name, snap->name_len);
        else if (f->kind == EF_DEPLOYMENTS)
            render_snap_deployments(q, b, f, env);
        else if (f->kind == EF_ROUTE)
            render_route(b, snap->route_base, snap->name, snap->name_len,
                         env->name, env->name_len);
        else
            rw_sim_buf_puts(b, "\"Environment\"");
    }
    rw_sim_buf_puts(b, "}");
}

static void render_snap_project(const rw_sim_gql_t *q, rw_sim_buf_t *b,
                                const gql_field_t *sel,
                                const rw_sim_project_snap_t *snap)
{
    bool first = true;

    rw_sim_buf_puts(b, "{");
    for (const gql_field_t *f = sel; f; f = f->next) {
        key(b, f, &first);
        if (f->kind == PF_NAME) {
            rw_sim_buf_json_str(b, snap->name, snap->name_len);
        } else if (f->kind == PF_ENVIRONMENTS) {
            /* The sim never deletes environments: includeDeleted changes
             * nothing. */
            rw_sim_buf_puts(b, "[");
            for (size_t i = 0; i < snap->n_envs; i++) {
                if (i)
                    rw_sim_buf_puts(b, ",");
                render_snap_env(q, b, f->sel, snap, &snap->envs[i]);
            }
            rw_sim_buf_puts(b, "]");
        } else {
            rw_sim_buf_puts(b, "\"Project\"");
        }
    }
    rw_sim_buf_puts(b, "}");
}

static void render_named(const rw_sim_row_t *row, const char *log, size_t len,
                         void *ud)
{
    row_ctx_t *rc = ud;

    rc->log = log;
    rc->log_len = len;
    render_row(row, rc);
}

/* Resolver of deploymentByName: null for a deployment the sim does not
 * have (Lagoon's answer too), or when the input names none. */
static void exec_by_name(rw_sim_gql_t *q, rw_sim_t *sim, const gql_field_t *f,
                         rw_sim_buf_t *data)
{
    json_t *input = root_arg(q, f);
    json_t *project = json_object_get(input, "project");
    json_t *env = json_object_get(input, "environment");
    const char *name = jstr(input, "name");
    row_ctx_t rc = {data, f->sel, 0, NULL, 0};

    if (!json_is_string(project) || !json_is_string(env) || !name ||
        !rw_sim_deployment_by_name(
            sim, json_string_value(project), json_string_length(project),
            json_string_value(env), json_string_length(env), name, render_named,
            &rc))
        rw_sim_buf_puts(data, "null");
}

/* Resolver of projectByName: null for a project no bulk ever named. */
static bool exec_project(rw_sim_gql_t *q, rw_sim_t *sim, const gql_field_t *f,
                         rw_sim_buf_t *data)
{
    json_t *name = root_arg(q, f);
    rw_sim_project_snap_t *snap = NULL;

    if (!json_is_string(name)) {
        rw_sim_buf_puts(data, "null");
        return true;
    }
    if (rw_sim_project_snapshot(sim, json_string_value(name),
                                json_string_length(name), &snap) != RW_OK) {
        add_error(q, f->line, f->col, "INTERNAL_SERVER_ERROR",
                  "Out of memory.");
        return false;
    }
    if (!snap) {
        rw_sim_buf_puts(data, "null");
        return true;
    }
    render_snap_project(q, data, f->sel, snap);
    rw_sim_project_snap_free(snap);
    return true;
}

static void write_errors(const rw_sim_gql_t *q, rw_sim_buf_t *out)
{
    rw_sim_buf_puts(out, "{\"errors\":[");
    for (int i = 0; i < q->n_errors; i++) {
        const gql_error_t *e = &q->errors[i];
        if (i)
            rw_sim_buf_puts(out, ",");
        rw_sim_buf_puts(out, "{\"message\":");
        rw_sim_buf_json_cstr(out, e->msg);
        if (e->line)
            rw_sim_buf_printf(out,
                              ",\"locations\":[{\"line\":%d,"
                              "\"column\":%d}]",
                              e->line, e->col);
        rw_sim_buf_printf(out, ",\"extensions\":{\"code\":\"%s\"}}", e->code);
    }
    rw_sim_buf_puts(out, "],\"data\":null}");
}

int rw_sim_gql_execute(rw_sim_gql_t *q, rw_sim_t *sim, rw_sim_buf_t *out)
{
    rw_sim_buf_t data;
    bool first = true;

    if (q->n_errors || !q->op) {
        write_errors(q, out);
        return q->http_status;
    }
    rw_sim_buf_init(&data);
    rw_sim_buf_puts(&data, "{\"data\":{");
    for (const gql_field_t *f = q->op->sel; f; f = f->next) {
        key(&data, f, &first);
        if (strcmp(f->name, "__typename") == 0)
            rw_sim_buf_puts(&data, q->op->kind == OP_MUTATION ? "\"Mutation\""
                                                              : "\"Query\"");
        else if (strcmp(f->name, BULK_FIELD) == 0) {
            if (!exec_bulk(q, sim, f, &data))
                break;
        } else if (strcmp(f->name, PROJECT_FIELD) == 0) {
            if (!exec_project(q, sim, f, &data))
                break;
        } else if (strcmp(f->name, BY_NAME_FIELD) == 0)
            exec_by_name(q, sim, f, &data);
        else
            exec_rows(q, sim, f, &data);
    }
    rw_sim_buf_puts(&data, "}}");
    if (q->n_errors) {
        /* A refused mutation (or a query the sim could not answer) reads
         * like a failed validation: null data. */
        rw_sim_buf_free(&data);
        write_errors(q, out);
        return 200;
    }
    rw_sim_buf_add(out, data.data, data.len);
    rw_sim_buf_free(&data);
    return 200;
}
