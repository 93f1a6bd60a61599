/*
 * sim_graphql: the GraphQL front of the Lagoon simulator. Parses a POST
 * /graphql body ({"query", "variables", "operationName"}), validates the
 * operation against the Lagoon fields rollwave uses
 * (Mutation.bulkDeployEnvironmentLatest, Query.deploymentsByBulkId,
 * Query.projectByName -> environments -> deployments) with
 * graphql-js style error messages, coerces the variables and executes it
 * on the model. Values are read from variables only: a literal argument is
 * refused. It does not do HTTP, authentication or fault injection, and it
 * supports neither fragments nor directives.
 */
#ifndef RW_SIM_GRAPHQL_H
#define RW_SIM_GRAPHQL_H

#include <stddef.h>

#include "sim_buf.h"
#include "sim_model.h"

typedef struct rw_sim_gql rw_sim_gql_t;

/*
 * Installs the jansson allocator that keeps request trees in per-request
 * arenas. Process-wide: call once at start, before any jansson value
 * exists. Without it everything still works, on plain malloc.
 */
void rw_sim_gql_init(void);

/*
 * Parses and validates body (len bytes, need not be NUL-terminated).
 * Problems are kept for the answer, so this fails only when out of memory
 * (NULL).
 */
rw_sim_gql_t *rw_sim_gql_parse(const char *body, size_t len);
void rw_sim_gql_free(rw_sim_gql_t *q);

/* Number of bulkDeployEnvironmentLatest fields the request asks for. */
int rw_sim_gql_deploy_fields(const rw_sim_gql_t *q);

/*
 * Executes a valid request on sim (or only reports its errors) and writes
 * the JSON answer to out. Returns the HTTP status: 200, or 400 when the
 * body was not a GraphQL request at all.
 */
int rw_sim_gql_execute(rw_sim_gql_t *q, rw_sim_t *sim, rw_sim_buf_t *out);

#endif
